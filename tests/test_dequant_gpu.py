"""On the GPU: every CUDA (csrc/dequant) and Triton dequantiser, the torch reference and the fused
dequant-in-matmul kernel against numerics.dequant bit for bit (bf16 outputs included), and bad scales
refused on the device. Speed is asserted in the probe run (scripts/gpu/dequant.sh), not here."""
import numpy as np
import pytest
import torch

from numerics import dequant as dq
from numerics.formats import cast
from numerics.metrics import bitwise_equal, count_differing
from probes.dequant import kernels, torch_dequant
from probes.convert import to_numpy, to_torch
from probes.dequant.inputs import int4_inputs
from probes.ext import KernelInputError

pytestmark = pytest.mark.gpu
DEV = "cuda"


def g(a):
    return None if a is None else to_torch(a, DEV)


def _report(name, got, want):
    """Assert bit equality; on failure say how many differ and show the first few (for the log)."""
    n = count_differing(got, want)
    if n:
        idx = np.flatnonzero(got.reshape(-1).view(np.uint8 if got.itemsize == 1 else
                                                  {2: np.uint16, 4: np.uint32}[got.itemsize]) !=
                             want.reshape(-1).view({1: np.uint8, 2: np.uint16, 4: np.uint32}[want.itemsize]))[:5]
        pytest.fail(f"{name}: {n} of {got.size} differ; first at {idx.tolist()}: got "
                    f"{got.reshape(-1)[idx].astype(np.float64).tolist()} want {want.reshape(-1)[idx].astype(np.float64).tolist()}")


@pytest.mark.parametrize("zeros", ["sym", "int", "float"])
@pytest.mark.parametrize("g_size", dq.GROUP_SIZES)
def test_int4_cuda_triton_torch_match_model(zeros, g_size):
    from probes.dequant import triton_dequant as td

    p, s, z = int4_inputs(64, 1024, g_size, zeros, 3)
    for compute in dq.COMPUTE:
        for formula in dq.FORMULAS:
            for out in dq.OUTPUTS:
                want = dq.dequant_int4(p, s, z, group_size=g_size, formula=formula, compute=compute, out=out)
                kw = dict(group_size=g_size, formula=formula, compute=compute, out=out)
                tag = f"{zeros}/g{g_size}/{compute}/{formula}/{out}"
                _report("cuda " + tag, to_numpy(kernels.dequant_int4(g(p), g(s), g(z), **kw)), want)
                _report("triton " + tag, to_numpy(td.dequant_int4(g(p), g(s), g(z), **kw)), want)
                _report("torch " + tag, to_numpy(torch_dequant.dequant_int4(g(p), g(s), g(z), **kw)), want)


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1"])
def test_q4_cuda_triton_torch_match_model(qtype):
    from probes.dequant import triton_dequant as td

    rng = np.random.default_rng(4)
    width, off = (18, 2) if qtype == "Q4_0" else (20, 4)
    blocks = rng.integers(0, 256, size=(10007, width), dtype=np.uint8)
    d = (rng.standard_normal((10007, off // 2)) * 0.02).astype(np.float16)
    blocks[:, :off] = d.view(np.uint8).reshape(10007, off)
    want = dq.dequant_q4_0(blocks) if qtype == "Q4_0" else dq.dequant_q4_1(blocks)
    _report("cuda", to_numpy(kernels.dequant_q4(g(blocks), qtype)), want)
    _report("triton", to_numpy(td.dequant_q4(g(blocks), qtype)), want)
    _report("torch", to_numpy(torch_dequant.dequant_q4(g(blocks), qtype)), want)


@pytest.mark.parametrize("fmt", dq.FP8_FORMATS)
@pytest.mark.parametrize("scaling", dq.FP8_SCALINGS)
def test_fp8_cuda_triton_torch_match_model(fmt, scaling):
    from probes.dequant import triton_dequant as td

    w = (np.random.default_rng(5).standard_normal((300, 528)) * 0.1).astype(np.float32)
    q, s = dq.quantize_fp8(w, fmt, scaling)
    for via in ("float32", "bfloat16"):
        want = dq.dequant_fp8(q, s, scaling, via=via)
        _report(f"cuda {via}", to_numpy(kernels.dequant_fp8(g(q), g(s), scaling, via=via)), want)
        _report(f"triton {via}", to_numpy(td.dequant_fp8(g(q), g(s), scaling, via=via)), want)
        _report(f"torch {via}", to_numpy(torch_dequant.dequant_fp8(g(q), g(s), scaling, via=via)), want)


FUSED_CASES = [(f, c, 16) for c in dq.COMPUTE for f in dq.FORMULAS] + [("sub_mul", "float32", 64), ("fma", "float16", 64)]


@pytest.mark.parametrize("formula,compute,bm", FUSED_CASES)
def test_fused_matmul_tile_and_k_order(formula, compute, bm):
    """The fused kernel's dequantised tile is the model's bit for bit; each path (fused, dequant then the
    same matmul) equals the tensor-core model (TC_MODEL) in the K order its compiled dot uses: BM=16 is
    mma v2 with kWidth 8 (fused) vs 2 (unfused) - different orders, so they may differ; BM=64 is wgmma
    for both (K in order), so they must be equal."""
    from probes.dequant.triton_fused import fused_int4_matmul, matmul_bf16, model_output

    p, s, z = int4_inputs(512, 1024, 128, "float", 9)
    xn = cast(np.random.default_rng(10).standard_normal((16, 1024)), "bfloat16")
    x = g(xn)
    w = dq.dequant_int4(p, s, z, group_size=128, formula=formula, compute=compute, out="bfloat16")
    kw = dict(formula=formula, compute=compute, bm=bm)
    tile = torch.zeros((512, 1024), dtype=torch.bfloat16, device=DEV)
    fused_t = to_numpy(fused_int4_matmul(x, g(p), g(s), g(z), tile_out=tile, **kw))
    fi, ui = {}, {}
    fused = to_numpy(fused_int4_matmul(x, g(p), g(s), g(z), info=fi, **kw))
    unfused = to_numpy(matmul_bf16(x, g(w), bm=bm, info=ui))
    _report("fused kernel's dequantised tile vs model", to_numpy(tile), w)
    _report("fused with the tile store vs without", fused_t, fused)
    if bm == 16:
        assert (fi["mma"], fi["k_widths"], ui["mma"], ui["k_widths"]) == ("mma_v2", [8, 8], "mma_v2", [2, 2])
    else:
        assert fi["mma"] == ui["mma"] == "wgmma"
        _report("fused vs unfused (same K order)", fused, unfused)
    cols = 64
    _report("fused vs model in its K order", fused[:, :cols], model_output(xn, w[:cols], fi["k_order"]))
    _report("unfused vs model in its K order", unfused[:, :cols], model_output(xn, w[:cols], ui["k_order"]))


def test_bad_scales_refused_on_device():
    p, s, z = int4_inputs(64, 256, 64, "int", 1)
    for bad in (0.0, float("nan"), float("inf")):
        S = g(s)
        S[5, 2] = bad
        with pytest.raises(KernelInputError, match="1 of 256 scales are zero, NaN or Inf"):
            kernels.dequant_int4(g(p), S, g(z), group_size=64)
    q, sc = dq.quantize_fp8(np.ones((128, 128), np.float32), scaling="block")
    sc[0, 0] = np.nan
    with pytest.raises(KernelInputError, match="scales are zero"):
        kernels.dequant_fp8(g(q), g(sc), "block")
    with pytest.raises(KernelInputError, match="is on"):
        kernels.dequant_int4(g(p), to_torch(s), g(z), group_size=64)
    assert bitwise_equal(to_numpy(kernels.dequant_int4(g(p), g(s), g(z), group_size=64)),
                         dq.dequant_int4(p, s, z, group_size=64))
