"""Compiled C++ reference (csrc/dequant, CPU path of the CUDA kernels), torch CPU and the Triton
interpreter against numerics.dequant bit for bit; bad input refused with clear errors."""
import numpy as np
import pytest
import torch

from numerics import dequant as dq
from numerics.metrics import bitwise_equal
from probes import ext
from probes.dequant import kernels, torch_dequant
from probes.convert import to_numpy, to_torch
from probes.ext import KernelInputError

needs_ext = pytest.mark.skipif(not ext.available(), reason="probes._C not built")


def int4_case(n=16, k=256, g=64, symmetric=False, float_zeros=False, seed=0):
    rng = np.random.default_rng(seed)
    nib = rng.integers(0, 16, size=(n, k))
    s = (rng.standard_normal((n, k // g)) * 0.02).astype(np.float16)
    s[s == 0] = np.float16(0.01)
    if symmetric:
        z = None
    elif float_zeros:
        z = (rng.random((n, k // g)) * 15).astype(np.float16)
    else:
        z = rng.integers(0, 16, size=(n, k // g)).astype(np.float16)
    return dq.pack_int4(nib), s, z


def t(a):
    return None if a is None else to_torch(a)


@needs_ext
@pytest.mark.parametrize("g", dq.GROUP_SIZES)
@pytest.mark.parametrize("formula", dq.FORMULAS)
@pytest.mark.parametrize("compute", dq.COMPUTE)
@pytest.mark.parametrize("zeros", ["sym", "int", "float"])
def test_cpp_int4_matches_model(g, formula, compute, zeros):
    p, s, z = int4_case(g=g, symmetric=zeros == "sym", float_zeros=zeros == "float", seed=g)
    for out in dq.OUTPUTS:
        want = dq.dequant_int4(p, s, z, group_size=g, formula=formula, compute=compute, out=out)
        got = kernels.dequant_int4(t(p), t(s), t(z), group_size=g, formula=formula, compute=compute, out=out)
        assert bitwise_equal(to_numpy(got), want), out


@pytest.mark.parametrize("formula", ["sub_mul", "mul_sub", "fma"])
@pytest.mark.parametrize("compute", dq.COMPUTE)
def test_torch_int4_matches_model(formula, compute):
    p, s, z = int4_case(g=32, float_zeros=True, seed=5)
    for out in dq.OUTPUTS:
        want = dq.dequant_int4(p, s, z, group_size=32, formula=formula, compute=compute, out=out)
        got = torch_dequant.dequant_int4(t(p), t(s), t(z), group_size=32, formula=formula, compute=compute, out=out)
        assert bitwise_equal(to_numpy(got), want), out


@needs_ext
@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1"])
def test_q4_cpp_and_torch_match_model(qtype):
    from gguf import GGMLQuantizationType, quants

    w = (np.random.default_rng(2).standard_normal((8, 512)) * 0.05).astype(np.float32)
    raw = quants.quantize(w, getattr(GGMLQuantizationType, qtype)).reshape(-1, 18 if qtype == "Q4_0" else 20)
    want = dq.dequant_q4_0(raw) if qtype == "Q4_0" else dq.dequant_q4_1(raw)
    assert bitwise_equal(to_numpy(kernels.dequant_q4(t(raw), qtype)), want)
    assert bitwise_equal(to_numpy(torch_dequant.dequant_q4(t(raw), qtype)), want)


@needs_ext
@pytest.mark.parametrize("fmt", dq.FP8_FORMATS)
@pytest.mark.parametrize("scaling", dq.FP8_SCALINGS)
@pytest.mark.parametrize("via", ["float32", "bfloat16"])
def test_fp8_cpp_and_torch_match_model(fmt, scaling, via):
    w = (np.random.default_rng(3).standard_normal((136, 272)) * 0.1).astype(np.float32)
    q, s = dq.quantize_fp8(w, fmt, scaling)
    want = dq.dequant_fp8(q, s, scaling, via=via)
    assert bitwise_equal(to_numpy(kernels.dequant_fp8(t(q), t(s), scaling, via=via)), want)
    assert bitwise_equal(to_numpy(torch_dequant.dequant_fp8(t(q), t(s), scaling, via=via)), want)


@needs_ext
def test_bad_input_refused():
    p, s, z = int4_case(g=64)
    P, S, Z = t(p), t(s), t(z)
    with pytest.raises(KernelInputError, match="does not divide"):
        kernels.dequant_int4(P, S, Z, group_size=48)
    with pytest.raises(KernelInputError, match="dtype"):
        kernels.dequant_int4(P, S.float(), Z, group_size=64)
    with pytest.raises(KernelInputError, match="not contiguous"):
        kernels.dequant_int4(P.t(), S, Z, group_size=64)
    with pytest.raises(KernelInputError, match="shape"):
        kernels.dequant_int4(P, S[:, :1].contiguous(), Z, group_size=64)
    with pytest.raises(KernelInputError, match="formula"):
        kernels.dequant_int4(P, S, Z, group_size=64, formula="fused")
    for bad in (0.0, float("nan"), float("inf")):
        S2 = S.clone()
        S2[3, 1] = bad
        with pytest.raises(KernelInputError, match="1 of 64 scales are zero, NaN or Inf"):
            kernels.dequant_int4(P, S2, Z, group_size=64)
    Z2 = Z.clone()
    Z2[0, 0] = float("nan")
    with pytest.raises(KernelInputError, match="zero points are NaN"):
        kernels.dequant_int4(P, S, Z2, group_size=64)
    with pytest.raises(KernelInputError, match="empty"):
        kernels.dequant_int4(P[:0], S[:0], Z[:0], group_size=64)
    with pytest.raises(KernelInputError, match="20 bytes"):
        kernels.dequant_q4(torch.zeros((4, 18), dtype=torch.uint8), "Q4_1")
    q, sc = dq.quantize_fp8(np.ones((16, 32), np.float32), scaling="channel")
    sc[2] = 0
    with pytest.raises(KernelInputError, match="scales are zero"):
        kernels.dequant_fp8(t(q), t(sc), "channel")
    with pytest.raises(KernelInputError, match="expected"):
        kernels.dequant_fp8(t(q), t(sc), "block")
    q, sc = dq.quantize_fp8(np.ones((4, 8), np.float32))
    with pytest.raises(KernelInputError, match="multiple of 16"):
        kernels.dequant_fp8(t(q), t(sc), "tensor")


# ---- Triton (its interpreter here; bf16 rounding done on the bits there, see triton_dequant) ---------
@pytest.mark.cpu_modes
@pytest.mark.parametrize("formula", dq.FORMULAS)
@pytest.mark.parametrize("compute", dq.COMPUTE)
@pytest.mark.parametrize("zeros", ["sym", "int"])
def test_triton_int4_matches_model(formula, compute, zeros):
    from probes.dequant import triton_dequant as td

    p, s, z = int4_case(n=8, k=256, g=64, symmetric=zeros == "sym", seed=11)
    for out in dq.OUTPUTS:
        want = dq.dequant_int4(p, s, z, group_size=64, formula=formula, compute=compute, out=out)
        got = td.dequant_int4(t(p), t(s), t(z), group_size=64, formula=formula, compute=compute, out=out)
        assert bitwise_equal(to_numpy(got), want), out


@pytest.mark.cpu_modes
@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1"])
def test_triton_q4_matches_model(qtype):
    from gguf import GGMLQuantizationType, quants

    from probes.dequant import triton_dequant as td

    w = (np.random.default_rng(4).standard_normal((8, 512)) * 0.05).astype(np.float32)
    raw = quants.quantize(w, getattr(GGMLQuantizationType, qtype)).reshape(-1, 18 if qtype == "Q4_0" else 20)
    want = dq.dequant_q4_0(raw) if qtype == "Q4_0" else dq.dequant_q4_1(raw)
    assert bitwise_equal(to_numpy(td.dequant_q4(t(raw), qtype)), want)


@pytest.mark.cpu_modes
@pytest.mark.parametrize("fmt", dq.FP8_FORMATS)
@pytest.mark.parametrize("scaling", dq.FP8_SCALINGS)
def test_triton_fp8_product_matches(fmt, scaling):
    from probes.dequant import triton_dequant as td

    q, s = dq.quantize_fp8((np.random.default_rng(5).standard_normal((136, 272)) * 0.1).astype(np.float32),
                           fmt, scaling)
    want = q.astype(np.float32) * dq._expand_scales(s, q.shape, scaling).astype(np.float32)
    assert bitwise_equal(to_numpy(td.dequant_fp8(t(q), t(s), scaling, out="float32")), want)
    for via in ("float32", "bfloat16"):
        assert bitwise_equal(to_numpy(td.dequant_fp8(t(q), t(s), scaling, via=via)),
                             dq.dequant_fp8(q, s, scaling, via=via)), via


@pytest.mark.cpu_modes
@pytest.mark.parametrize("compute", dq.COMPUTE)
@pytest.mark.parametrize("formula", dq.FORMULAS)
def test_triton_fused_matmul_equals_dequant_then_matmul(compute, formula):
    from numerics.formats import cast

    from probes.dequant.inputs import int4_inputs
    from probes.dequant.triton_fused import fused_int4_matmul, matmul_bf16

    p, s, z = int4_inputs(64, 256, 128, "int", 7)
    x = t(cast(np.random.default_rng(8).standard_normal((4, 256)), "bfloat16"))
    w = dq.dequant_int4(p, s, z, group_size=128, formula=formula, compute=compute, out="bfloat16")
    fused = to_numpy(fused_int4_matmul(x, t(p), t(s), t(z), formula=formula, compute=compute))
    assert bitwise_equal(fused, to_numpy(matmul_bf16(x, t(w))))
    ref = to_numpy(x).astype(np.float64) @ w.astype(np.float64).T
    assert np.max(np.abs(fused - ref)) < 1e-4 * np.max(np.abs(ref))


def test_triton_kernels_compile_to_ptx_for_sm90():
    """The GPU frontend + ptxas accept the kernels (no GPU needed; a subprocess, since the tests here run
    Triton's interpreter); the f32 formula ops are explicit .rn: mul_sub is not contracted into an fma."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-m", "probes.dequant.ptx_check", "--quick"], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    lines = dict(line[5:].split(": ", 1) for line in r.stdout.splitlines() if line.startswith("OK"))
    assert len(lines) == 5
    assert "fma" not in lines["int4 mul_sub f32"] and "sub.rn" in lines["int4 mul_sub f32"]
    assert "fma.rn" in lines["int4 fma f32 -> bf16"]


@pytest.mark.cpu_modes
def test_fused_kernel_tile_equals_model():
    """The fused kernel's dequantised bf16 tile (TILE_OUT) is the model's, bit for bit (interpreter)."""
    from numerics.formats import cast

    from probes.dequant.inputs import int4_inputs
    from probes.dequant.triton_fused import fused_int4_matmul

    p, s, z = int4_inputs(64, 256, 128, "float", 11)
    x = t(cast(np.random.default_rng(12).standard_normal((4, 256)), "bfloat16"))
    for compute in dq.COMPUTE:
        for formula in dq.FORMULAS:
            tile = torch.zeros((64, 256), dtype=torch.bfloat16)
            fused_int4_matmul(x, t(p), t(s), t(z), formula=formula, compute=compute, tile_out=tile)
            want = dq.dequant_int4(p, s, z, group_size=128, formula=formula, compute=compute, out="bfloat16")
            assert bitwise_equal(to_numpy(tile), want), (compute, formula)


def test_mma_v2_k_order():
    """kWidth 8 (the fused kernel's) walks each 64-wide K tile as 4 mma instructions over k = 8t + 2r + e
    and 32 + 8t + 2r + e; kWidth 2 in order; the tensor-core model tells the two orders apart."""
    from numerics.formats import cast

    from probes.dequant.mma_k_order import k_order, tile_order
    from probes.dequant.triton_fused import model_output

    t8 = tile_order(8)
    assert sorted(t8.tolist()) == list(range(64))
    assert t8[:16].tolist() == [0, 1, 8, 9, 16, 17, 24, 25, 32, 33, 40, 41, 48, 49, 56, 57]
    assert t8[16:20].tolist() == [2, 3, 10, 11]
    assert k_order(128, 64, 2).tolist() == list(range(128))
    assert k_order(128, 64, 8)[64:66].tolist() == [64, 65]
    rng = np.random.default_rng(13)
    x = cast(rng.standard_normal((8, 256)), "bfloat16")
    w = cast(rng.standard_normal((16, 256)) * np.exp2(rng.integers(-6, 6, (16, 256))), "bfloat16")
    natural = model_output(x, w, np.arange(256))
    assert bitwise_equal(natural, model_output(x, w, k_order(256, 64, 2)))
    assert not bitwise_equal(natural, model_output(x, w, k_order(256, 64, 8)))


def test_fused_dot_layouts_for_sm90():
    """Compiled for sm_90 (no GPU): BM=16 -> mma v2 with kWidth 8 when W comes from int4 bytes, 2 when
    it is loaded as bf16 (so the K orders differ); BM=64 -> wgmma for both (K in order)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-m", "probes.dequant.ptx_check", "--dots"], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    got = dict(line[4:].split(": ", 1) for line in r.stdout.splitlines() if line.startswith("DOT"))
    assert got == {"fused=True bm=16": "mma_v2 [8, 8]", "fused=False bm=16": "mma_v2 [2, 2]",
                   "fused=True bm=64": "wgmma []", "fused=False bm=64": "wgmma []"}
