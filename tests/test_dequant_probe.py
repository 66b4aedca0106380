"""`python -m probes.dequant` on the CPU (C++ reference, Triton interpreter, torch CPU, numerics)."""
import json
import subprocess
import sys

import pytest

from probes.report import load_report


def run(args, tmp_path):
    return subprocess.run([sys.executable, "-m", "probes.dequant", "--device", "cpu", *args],
                          capture_output=True, text=True, timeout=300)


def test_cli_cpu_report_table_plot(tmp_path):
    path = tmp_path / "dq.json"
    r = run(["--json", str(path), "--no-layer"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "sub_mul~mul_sub" in r.stdout and "errors: 0" in r.stdout
    rep = load_report(path)
    assert rep["probe"] == "dequant" and rep["fingerprint"]
    exps = {e["key"]: e for e in rep["experiments"]}
    # The numerics backend IS the model (its outputs are the model's, matches_model is True by
    # construction): only the backends computed otherwise are checked against it.
    for b in ("cuda_ext", "triton", "torch"):
        e = exps[f"int4/int/float16/{b}"]
        assert e["status"] == "ok" and all(e["metrics"][f"matches_model/{f}"] for f in ("sub_mul", "mul_sub", "fma"))
        assert exps[f"q4/Q4_1/random-seed10/{b}"]["metrics"]["matches_model"] is True
        assert exps[f"fp8/float8_e4m3fn/block/{b}"]["metrics"]["matches_model/bfloat16"] is True
    for b in ("numerics", "cuda_ext", "triton", "torch"):
        assert exps[f"int4/int/float16/{b}"]["metrics"]["sub_mul~mul_sub/frac_differing"] > 0  # fp16: formulas differ
        assert exps[f"int4/int/float32/{b}"]["metrics"]["sub_mul~fma/frac_differing"] == 0  # fp32: they agree
    assert exps["int4/sym/float16/numerics"]["inputs"]["seed"] == 0
    if "gguf/smollm2/types" in exps:  # the data package is installed here (not on the GPU machine)
        assert exps["gguf/smollm2/types"]["metrics"]["not_q4"]["Q8_0"] == ["token_embd.weight"]
    assert (tmp_path / "dq.png").stat().st_size > 1000

@pytest.mark.cpu_modes

def test_layer_and_fused_small(tmp_path):
    from probes.dequant.triton_fused import layer_experiments

    got = []
    layer_experiments("cpu", 0, lambda **kw: got.append(kw), lambda line: None, m=2, shapes=[(256, 256)])
    fused = [g for g in got if g["key"].startswith("fused/")]
    assert fused and all(g["metrics"]["fused_equals_unfused"] for g in fused)
    layer = {g["key"]: g["metrics"] for g in got if g["key"].startswith("layer/")}
    m16 = layer["layer/256x256/int/float16"]
    assert m16["sub_mul~mul_sub/frac_differing"] > 0 and m16["sub_mul/rel_error_vs_float64"] < 0.01
    assert "sub_mul~mul_sub/top1_changed" in m16
    assert layer["layer/256x256/int/float32"]["sub_mul~fma/frac_differing"] == 0


def test_cli_bad_backend(tmp_path):
    r = run(["--backends", "cupy"], tmp_path)
    assert r.returncode != 0 and "cupy" in (r.stderr + r.stdout)
