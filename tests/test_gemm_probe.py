"""The GEMM probe's command line and its cuBLASLt plan's argument checks, on the CPU."""
import json

import pytest
import torch

from probes import ext
from probes.errors import NoGPUError
from probes.gemm.__main__ import main
from probes.gemm.sweep import cpu_ms, gpu_ms, row0_sweep

needs_ext = pytest.mark.skipif(not ext.available(), reason="probes._C is not built")


def test_cli_cpu_sweep_writes_report(tmp_path, capsys):
    path = tmp_path / "gemm.json"
    assert main(["--device", "cpu", "--json", str(path), "--parts", "sweep,algos", "--sweep-modes",
                 "torch:float32,triton:float16", "--sweep-max-m", "20", "--no-others", "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "batch invariance of row 0" in out and "skipped algos" in out
    report = json.loads(path.read_text())
    assert report["probe"] == "gemm" and report["schema_version"] >= 1
    assert report["fingerprint"]["device"] == "cpu"
    keys = {e["key"]: e for e in report["experiments"]}
    torch_cpu = keys["sweep/linear/torch/float32/small"]
    assert torch_cpu["status"] == "ok" and torch_cpu["inputs"]["seed"] == 0
    assert torch_cpu["params"]["ms"] == cpu_ms(20)
    tri = keys["sweep/linear/triton/float16/tiny"]
    assert tri["metrics"]["distinct"] == 1 and tri["metrics"]["first_change_m"] is None
    assert keys["algos/skipped"]["status"] == "skipped"


def test_cli_plot(tmp_path):
    path = tmp_path / "g.json"
    assert main(["--device", "cpu", "--json", str(path), "--parts", "sweep", "--sweep-modes", "torch:bfloat16",
                 "--sweep-max-m", "4", "--no-others"]) == 0
    assert (tmp_path / "g.png").stat().st_size > 1000


@pytest.mark.parametrize("args,msg", [(["--parts", "nope"], "unknown part"),
                                      (["--shapes", "x"], "unknown shape"),
                                      (["--runs", "0"], "--runs"),
                                      (["--sweep-modes", "torch:int8"], "unknown sweep mode")])
def test_cli_bad_arguments(args, msg, capsys):
    from probes.cli import guarded_main
    assert guarded_main(main, ["--device", "cpu", "--no-plot", *args]) == 2
    assert msg in capsys.readouterr().err


def test_row0_sweep_finds_the_change():
    base = torch.arange(6, dtype=torch.float32).reshape(2, 3)

    def fn(m):  # row 0 changes by one ulp from M = 4 on
        out = base.clone()
        if m >= 4:
            out[0, 1] = torch.nextafter(out[0, 1], torch.tensor(9.0))
        return out
    r = row0_sweep(fn, [1, 2, 4, 8])
    assert r["first_change_m"] == 4 and r["distinct"] == 2 and r["max_ulp_vs_first"] == 1
    assert r["groups"] == [0, 0, 1, 1] and r["change_points"] == [(1, 0), (4, 1)]
    assert not r["invariant"]


def test_gpu_ms_rule():
    ms = gpu_ms()
    assert ms[:64] == list(range(1, 65)) and ms[-1] == 4096
    assert {127, 128, 129, 255, 256, 257, 2047, 2048, 2049, 4095, 1400} <= set(ms)
    assert len(ms) < 150


@needs_ext
def test_gemm_plan_argument_checks():
    C = ext.load()
    info = C.gemm_build_info()
    if not info["available"]:
        pytest.skip(f"GEMM module not built: {info['reason']}")
    with pytest.raises(ValueError, match="dtype"):
        C.GemmPlan(4, 4, 4, "int8")
    with pytest.raises(ValueError, match="layout"):
        C.GemmPlan(4, 4, 4, "bfloat16", "32f", "xx")
    with pytest.raises(ValueError, match="positive"):
        C.GemmPlan(0, 4, 4, "bfloat16")
    with pytest.raises(ValueError, match="compute"):
        C.GemmPlan(4, 4, 4, "bfloat16", "32f_fast_tf32")


@needs_ext
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_gemm_plan_without_gpu():
    from probes.gemm.cublaslt import plan_for
    with pytest.raises(NoGPUError, match="GPU"):
        plan_for(8, 8, 8, "bfloat16", "32f", 0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cli_cuda_without_gpu(capsys):
    from probes.cli import guarded_main
    assert guarded_main(main, ["--device", "cuda", "--no-plot"]) == 2
    assert "GPU" in capsys.readouterr().err
