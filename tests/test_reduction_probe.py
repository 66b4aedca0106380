"""`python -m probes.reduction` end to end in CPU mode (what CI and a laptop run)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import gpu_available
from probes import report as reports


def run_probe(tmp_path, *args):
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "probes.reduction", "--device", "cpu", "--json", str(out), *args],
                          capture_output=True, text=True, timeout=600)
    return proc, out


@pytest.fixture(scope="module")
def cpu_report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("probe")
    proc, out = run_probe(tmp, "--sizes", "1000,4097", "--runs", "20", "--dtypes", "float32,float16")
    assert proc.returncode == 0, proc.stderr
    return proc, reports.load_report(out), out


def test_cpu_run_reports_every_backend(cpu_report):
    proc, rep, out = cpu_report
    keys = {e["key"]: e for e in rep["experiments"]}
    for backend, strategy in [("cuda_ext", "fixed"), ("cuda_ext", "atomic"), ("cuda_ext", "sequential"),
                              ("triton", "fixed"), ("triton", "atomic"), ("numba", "fixed"),
                              ("torch", "sum"), ("torch", "index_add")]:
        e = keys[f"{backend}/{strategy}/float32->float32/n=4097"]
        assert e["status"] == "ok", e
    assert keys["cupy/fixed/float32->float32/n=4097"]["status"] == "skipped"
    assert "backend/strategy" in proc.stdout and "report:" in proc.stdout
    assert out.with_suffix(".png").stat().st_size > 0


def test_fixed_orders_are_deterministic_and_match_the_model(cpu_report):
    _, rep, _ = cpu_report
    fixed = [e for e in rep["experiments"] if e["status"] == "ok" and e["params"]["strategy"] in ("fixed", "sequential")
             and "special" not in e["inputs"]]
    assert len(fixed) >= 12
    for e in fixed:
        assert e["metrics"]["distinct"] == 1, e["key"]
        assert e["metrics"]["matches_model"] is True, e["key"]
        # float32 sums of 4097 normals are good to ~1e-7 relative; float16 running sums much worse
        bound = 1e-5 if e["params"]["accumulate"] == "float32" else 0.1
        assert e["metrics"]["rel_error"] < bound, e["key"]


def test_output_is_the_model_bits(cpu_report):
    _, rep, _ = cpu_report
    e = next(e for e in rep["experiments"] if e["key"] == "cuda_ext/fixed/float16->float16/n=1000")
    out = reports.decode_output(e["output"])
    assert out.view(np.uint16)[0] == e["metrics"]["model_bits"]


def test_specials_are_reported(cpu_report):
    _, rep, _ = cpu_report
    e = next(e for e in rep["experiments"] if e["key"] == "cuda_ext/fixed/float32->float32/special=inf-inf/n=4097")
    assert e["metrics"]["classes"] == ["nan"] and e["metrics"]["as_expected"]


def test_unknown_backend_lists_the_available_ones(tmp_path):
    proc, _ = run_probe(tmp_path, "--backends", "cuda_ext,opencl")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "opencl" in proc.stderr and "triton" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_fp8_dtype_is_refused_clearly(tmp_path):
    proc, _ = run_probe(tmp_path, "--dtypes", "float8_e4m3fn")
    assert proc.returncode == 2 and "float8_e4m3fn" in proc.stderr and "float32" in proc.stderr


def test_size_zero_is_refused(tmp_path):
    proc, _ = run_probe(tmp_path, "--sizes", "0")
    assert proc.returncode == 2 and proc.stderr.startswith("error:")


@pytest.mark.skipif(gpu_available(), reason="checks the no-GPU error (with a GPU the command runs the whole "
                    "probe: over 120 s on an H200)")
def test_no_gpu_is_one_clear_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "probes.reduction", "--device", "cuda"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "GPU" in proc.stderr


def test_report_is_valid_json_with_fingerprint(cpu_report):
    _, rep, out = cpu_report
    raw = json.loads(out.read_text())
    assert raw["schema_version"] == 1 and raw["probe"] == "reduction"
    assert rep["config"]["seed"] == 0 and rep["fingerprint"]


def test_interpreted_runs_cap_is_the_one_help_states(cpu_report, capsys):
    """--help states the cap the code applies to interpreted backends (one constant), and the run obeys it."""
    from probes.reduction.backends import INTERPRETED_RUNS
    from probes.reduction.probe import ReductionProbe
    with pytest.raises(SystemExit):
        ReductionProbe.parser().parse_args(["--help"])
    assert f"interpreted backends are capped at {INTERPRETED_RUNS})" in " ".join(capsys.readouterr().out.split())
    _, rep, _ = cpu_report
    e = next(e for e in rep["experiments"] if e["key"] == "triton/fixed/float32->float32/n=4097")
    assert e["metrics"]["runs"] == INTERPRETED_RUNS < 20
    assert e["message"] == f"runs capped at {INTERPRETED_RUNS} (interpreted)"


def test_experiments_declare_what_compare_compares(cpu_report):
    """Sums compare by their bits; the NaN/Inf experiments by their bits and the classes every run gave."""
    _, rep, _ = cpu_report
    keys = {e["key"]: e for e in rep["experiments"]}
    assert keys["cuda_ext/fixed/float32->float32/n=4097"]["compares"] == {"output": True, "metrics": [],
                                                                           "reason": ""}
    special = keys["cuda_ext/fixed/float32->float32/special=inf-inf/n=4097"]["compares"]
    assert special == {"output": True, "metrics": ["classes"], "reason": ""}
    assert rep["code"]["version"]
