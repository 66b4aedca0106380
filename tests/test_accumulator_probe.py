"""`python -m probes.accumulator` on the CPU: simulated device recovered, Triton interpreter runs,
bad arguments give one clear line."""
import json
import subprocess
import sys

import pytest

from probes.accumulator import __main__ as cli_main
from probes.report import load_report


def test_cli_on_cpu_recovers_the_simulated_model_and_runs_triton(tmp_path, capsys):
    out = tmp_path / "acc.json"
    rc = cli_main.main(["--device", "cpu", "--formats", "float16,float8_e5m2", "--backends",
                        "simulated,triton", "--samples", "3000", "--json", str(out),
                        "--fit-evals", "30"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "simulated" in text and "triton" in text
    rep = load_report(out)
    assert rep["fingerprint"] and rep["schema_version"] >= 1
    exps = {e["key"]: e for e in rep["experiments"]}
    sim = exps["accumulator/simulated/float16"]["metrics"]
    assert sim["recovered_true_model"] is True and sim["match_rate"] == 1.0
    assert exps["accumulator/simulated/float8_e5m2"]["metrics"]["recovered_true_model"] is True
    # Triton's interpreter: tl.dot is a NumPy float32 matmul per 32-wide K tile; it runs, the
    # designs are recorded, and whatever it matches is measured (not asserted to be a tensor core).
    tri = exps["accumulator/triton/float16"]
    assert tri["status"] == "ok" and tri["metrics"]["evidence"]["outputs_hex"]
    assert 0.0 <= tri["metrics"]["match_rate"] <= 1.0
    assert exps["accumulator/triton/float8_e5m2"]["status"] == "skipped"
    assert "fp8" in exps["accumulator/triton/float8_e5m2"]["message"]
    assert (tmp_path / "acc.png").exists()


@pytest.mark.parametrize("args, msg", [
    (["--samples", "0"], "--samples"),
    (["--fit-evals", "0"], "--fit-evals"),
    (["--formats", "float7"], "float7"),
    (["--backends", "nope"], "nope"),
    (["--device", "cuda:9"], ""),
])
def test_bad_arguments_give_one_line(args, msg):
    r = subprocess.run([sys.executable, "-m", "probes.accumulator", "--device", "cpu", "--no-plot",
                        "--json", "/dev/null", *args] if args[0] != "--device" else
                       [sys.executable, "-m", "probes.accumulator", "--no-plot", *args],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert msg in r.stderr
    assert "Traceback" not in r.stderr


def test_cublas_on_cpu_is_skipped_with_a_reason():
    from probes.accumulator.backends import Cublas
    assert "GPU" in Cublas("cpu").unavailable("cpu", "float16")
