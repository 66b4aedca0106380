"""FMA probe on a GPU: every build against the exact model it is predicted to equal, bit for bit.

* extension: fma (__fmaf_rn/__hfma) and mul_add (__fmul_rn+__fadd_rn / __hmul_rn+__hadd_rn) must equal
  their models; the plain `a * b + c` compiled with --fmad=true must equal fma, the same text compiled
  with --fmad=false must equal mul_add.
* Triton: tl.fma and a*b+c with enable_fp_fusion=True -> fma; enable_fp_fusion=False -> mul_add.
* Numba: cuda.fma -> fma; a*b+c with fastmath=True -> fma, and with fastmath=False also fma (NVVM's
  default -fma=1; numba-cuda#118).
A failure says which model the build followed instead (fraction of outputs equal to each).
"""
import numpy as np
import pytest

from numerics import fma_programs as fp
from probes.fma.backends import BACKENDS
from probes.probe import Case

pytestmark = pytest.mark.gpu

N = 4096


def _bits(x):
    x = np.ascontiguousarray(x)
    return x.view({2: np.uint16, 4: np.uint32}[x.dtype.itemsize])


def check_build(backend_name, variant, program, fmt):
    from probes.fma import probe
    backend = BACKENDS[backend_name]
    why = backend.unavailable(Case("cuda:0", backend=backend_name, variant=variant, program=program, format=fmt))
    if why:
        pytest.skip(why)
    ins = probe.make_inputs(program, fmt, N, seed=11)
    out = backend.run(program, ins, variant, "cuda:0")
    predicted = backend.predicted(variant, "cuda:0")
    models = {m: fp.program(program, ins, fmt, m) for m in fp.VARIANTS}
    match = {m: float(np.mean(_bits(out) == _bits(models[m]))) for m in models}
    assert out.dtype == models[predicted].dtype
    assert match[predicted] == 1.0, (
        f"{backend_name}/{variant} {program} {fmt}: predicted {predicted}, but only {match[predicted]:.4f} of the "
        f"outputs have its bits (fma model: {match['fma']:.4f}, mul_add model: {match['mul_add']:.4f})")
    # and the two models really differ on these inputs, so the match says something
    assert match["fma"] < 1.0 or match["mul_add"] < 1.0


@pytest.mark.parametrize("program", fp.PROGRAMS)
@pytest.mark.parametrize("fmt", fp.FORMATS)
@pytest.mark.parametrize("variant", BACKENDS["ext"].variants)
def test_cuda_kernels(variant, fmt, program):
    check_build("ext", variant, program, fmt)


@pytest.mark.parametrize("program", fp.PROGRAMS)
@pytest.mark.parametrize("fmt", fp.FORMATS)
@pytest.mark.parametrize("variant", BACKENDS["triton"].variants)
def test_triton(variant, fmt, program):
    check_build("triton", variant, program, fmt)


@pytest.mark.parametrize("program", fp.PROGRAMS)
@pytest.mark.parametrize("fmt", ("float32", "float16"))
@pytest.mark.parametrize("variant", BACKENDS["numba"].variants)
def test_numba(variant, fmt, program):
    check_build("numba", variant, program, fmt)


def test_cuda_errors():
    import torch
    from probes import ext
    C = ext.load()
    a = torch.ones(8, device="cuda")
    with pytest.raises(ValueError, match="same device"):
        C.fma_dot(a, torch.ones(8), torch.empty(2, device="cuda"), "fma")
    with pytest.raises(TypeError, match="dtype"):
        C.fma_dot(a, a.half(), torch.empty(2, device="cuda"), "fma")


def test_probe_default_gpu_run(tmp_path):
    from probes import report as reports
    from probes.fma import __main__ as fma_main
    path = tmp_path / "fma.json"
    assert fma_main.main(["--json", str(path), "--n", "2048", "--no-plot"]) == 0
    rep = reports.load_report(path)
    assert rep["fingerprint"]["gpu"]
    bad = [(e["key"], e["status"], e["message"], (e["metrics"] or {}).get("model_match"))
           for e in rep["experiments"] if "variant" in e["params"] and e["status"] != "skipped"
           and (e["status"] != "ok" or e["metrics"]["model_match"] != 1.0)]
    assert not bad, bad
    exps = {e["key"]: e for e in rep["experiments"]}
    assert exps["ext/plain_contract~plain_nocontract/dot/float32"]["metrics"]["differ_fraction"] > 0
