"""`python -m probes.fma` on the CPU (C++ reference + Triton interpreter + Numba simulator): the report
carries the schema, fingerprint and seeds, every build matches its predicted model bit for bit, and the
fused and unfused builds of one source really differ."""
import json
import os
import subprocess
import sys

import pytest

from probes import cli, ext
from probes import report as reports
from probes.fma import __main__ as fma_main

pytestmark = pytest.mark.skipif(not ext.available(), reason="probes._C is not built")


@pytest.fixture(scope="module")
def cpu_report(tmp_path_factory):
    path = tmp_path_factory.mktemp("fma") / "fma.json"
    assert fma_main.main(["--device", "cpu", "--seed", "3", "--n", "48", "--json", str(path)]) == 0
    return path, reports.load_report(path)


@pytest.mark.cpu_modes          # the in-process CLI runs Triton and Numba on the CPU
def test_report_contents(cpu_report, capsys):
    path, rep = cpu_report
    assert rep["probe"] == "fma" and rep["schema_version"] == reports.SCHEMA_VERSION
    assert rep["fingerprint"] and rep["config"]["device"] == "cpu" and rep["config"]["seed"] == 3
    assert os.path.exists(os.path.splitext(path)[0] + ".png")
    exps = {e["key"]: e for e in rep["experiments"]}
    for e in exps.values():
        assert e["inputs"]["seed"] == 3 and e["inputs"]["n"] == 48
        assert e["status"] in ("ok", "skipped"), (e["key"], e["message"])
        if e["status"] == "ok" and "variant" in e["params"]:
            assert e["metrics"]["model_match"] == 1.0, e["key"]
    # every backend ran float32 dot in every variant
    for key in ("ext/fma", "ext/mul_add", "ext/plain_nocontract", "triton/fma", "triton/plain_contract",
                "triton/plain_nocontract", "numba/fma", "numba/plain_fastmath", "numba/plain_default"):
        assert exps[f"{key}/dot/float32"]["status"] == "ok", key
    # one rounding against two: the exact models and the C++ builds disagree on some outputs
    model = exps["model/fma~mul_add/dot/float32"]["metrics"]
    assert 0 < model["differ_fraction"] < 1 and model["max_ulp"] >= 1
    assert sum(model["ulp_histogram"].values()) == 48
    assert exps["ext/fma~mul_add/dot/float32"]["metrics"] == model
    if rep["config"]["cpu_has_fma"] is True:
        assert exps["ext/plain_contract~plain_nocontract/dot/float32"]["metrics"] == model
    # the interpreters compute unfused whatever the spelling
    assert exps["triton/fma~plain_nocontract/dot/float32"]["metrics"]["differ_fraction"] == 0
    assert exps["numba/fma~plain_default/dot/float16"]["metrics"]["differ_fraction"] == 0
    assert "Numba has no bfloat16" in exps["numba/fma/dot/bfloat16"]["message"]


@pytest.mark.cpu_modes
def test_table_printed(cpu_report):
    from probes.fma import table
    text = table.format_table(cpu_report[1])
    assert "ext/plain_contract" in text and "model/fma~mul_add" in text and " NO" not in text


def test_bad_arguments(capsys):
    assert cli.guarded_main(fma_main.main, ["--device", "cpu", "--n", "0", "--no-plot"]) == 2
    assert "--n" in capsys.readouterr().err
    assert cli.guarded_main(fma_main.main, ["--device", "cpu", "--backends", "cublas", "--no-plot"]) == 2
    assert "cublas" in capsys.readouterr().err


def test_cli_subprocess_ext_only(tmp_path):
    path = tmp_path / "r.json"
    r = subprocess.run([sys.executable, "-m", "probes.fma", "--device", "cpu", "--backends", "ext", "--formats",
                        "float32", "--n", "16", "--json", str(path), "--no-plot"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "model_match" in r.stdout
    assert json.loads(path.read_text())["config"]["backends"] == ["ext"]
