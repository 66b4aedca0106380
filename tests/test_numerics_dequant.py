"""numerics.dequant against independent float arithmetic (NumPy float16/float32 ops are correctly
rounded; exact Fractions for the fused multiply-add) and against the gguf package's own decoder."""
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

from numerics import dequant as dq
from numerics.metrics import bitwise_equal, count_differing

RNG = np.random.default_rng(6)


def int4_case(n=8, k=256, g=64, symmetric=False, seed=0):
    rng = np.random.default_rng(seed)
    nib = rng.integers(0, 16, size=(n, k))
    s = (rng.standard_normal((n, k // g)) * 0.02).astype(np.float16)
    s[s == 0] = np.float16(0.01)
    z = None if symmetric else rng.integers(0, 16, size=(n, k // g)).astype(np.float16)
    return dq.pack_int4(nib), s, z


def numpy_formula(packed, s, z, g, formula, dt):
    q = dq.unpack_int4(packed, z is None).astype(dt)
    S = np.repeat(s, g, axis=1).astype(dt)
    Z = np.zeros_like(S) if z is None else np.repeat(z, g, axis=1).astype(dt)
    if formula == "sub_mul":
        return (q - Z) * S
    return q * S - Z * S


def test_pack_roundtrip():
    nib = RNG.integers(0, 16, size=(3, 10))
    p = dq.pack_int4(nib)
    assert p.shape == (3, 5) and p[0, 0] == (nib[0, 0] | (nib[0, 1] << 4))
    assert np.array_equal(dq.unpack_int4(p, False), nib)
    signed = dq.unpack_int4(p, True)
    assert signed.min() >= -8 and signed.max() <= 7 and np.array_equal(signed & 0xF, nib)


@pytest.mark.parametrize("compute,dt", [("float32", np.float32), ("float16", np.float16)])
@pytest.mark.parametrize("formula", ["sub_mul", "mul_sub"])
@pytest.mark.parametrize("g", dq.GROUP_SIZES)
@pytest.mark.parametrize("symmetric", [False, True])
def test_int4_unfused_formulas_match_numpy(compute, dt, formula, g, symmetric):
    packed, s, z = int4_case(g=g, symmetric=symmetric, seed=g)
    got = dq.dequant_int4(packed, s, z, group_size=g, formula=formula, compute=compute, out=compute)
    want = numpy_formula(packed, s, z, g, formula, dt)
    assert got.dtype == dt and bitwise_equal(got, want)


@pytest.mark.parametrize("compute", dq.COMPUTE)
def test_int4_fma_matches_exact_rounding(compute):
    packed, s, z = int4_case(n=2, k=64, g=32)
    got = dq.dequant_int4(packed, s, z, group_size=32, formula="fma", compute=compute, out=compute)
    q = dq.unpack_int4(packed, False)
    S = np.repeat(s, 32, axis=1)
    Z = np.repeat(z, 32, axis=1)
    dt = np.dtype(compute)
    for idx in np.ndindex(q.shape):
        zs = (Z[idx].astype(dt) * S[idx].astype(dt)).astype(dt)
        exact = Fraction(int(q[idx])) * Fraction(float(S[idx])) - Fraction(float(zs))
        assert got[idx] == np.array(float(exact)).astype(dt) or abs(
            Fraction(float(got[idx])) - exact) <= abs(Fraction(float(np.array(float(exact)).astype(dt))) - exact)


def test_formulas_differ_somewhere_and_output_cast():
    packed, s, z = int4_case(n=64, k=512, g=128, seed=3)
    outs = {f: dq.dequant_int4(packed, s, z, group_size=128, formula=f, compute="float16", out="float16")
            for f in dq.FORMULAS}
    assert count_differing(outs["sub_mul"], outs["mul_sub"]) > 0
    bf = dq.dequant_int4(packed, s, z, group_size=128, formula="sub_mul", compute="float32", out="bfloat16")
    f32 = dq.dequant_int4(packed, s, z, group_size=128, formula="sub_mul", compute="float32", out="float32")
    assert bf.dtype == ml_dtypes.bfloat16 and bitwise_equal(bf, f32.astype(ml_dtypes.bfloat16))


def test_int4_bad_input():
    packed, s, z = int4_case(g=64)
    with pytest.raises(ValueError, match="does not divide"):
        dq.dequant_int4(packed, s, z, group_size=48)
    bad = s.copy()
    bad[0, 0] = 0
    with pytest.raises(ValueError, match="zero, NaN or Inf"):
        dq.dequant_int4(packed, bad, z, group_size=64)
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="zero, NaN or Inf"):
        dq.dequant_int4(packed, bad, z, group_size=64)
    with pytest.raises(ValueError, match="formula"):
        dq.dequant_int4(packed, s, z, group_size=64, formula="fused")
    with pytest.raises(ValueError, match="scales: shape"):
        dq.dequant_int4(packed, s[:, :1], z, group_size=64)


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1"])
def test_q4_blocks_match_gguf(qtype):
    from gguf import GGMLQuantizationType, quants

    w = (RNG.standard_normal((16, 256)) * 0.05).astype(np.float32)
    t = getattr(GGMLQuantizationType, qtype)
    raw = quants.quantize(w, t)
    want = quants.dequantize(raw, t).reshape(-1, 32)
    got = dq.dequant_q4_0(raw.reshape(-1)) if qtype == "Q4_0" else dq.dequant_q4_1(raw.reshape(-1))
    assert got.dtype == np.float32 and bitwise_equal(got, want)


def test_q4_bad_block_bytes():
    with pytest.raises(ValueError, match="18-byte blocks"):
        dq.dequant_q4_0(np.zeros(19, np.uint8))


@pytest.mark.parametrize("fmt", dq.FP8_FORMATS)
@pytest.mark.parametrize("scaling", dq.FP8_SCALINGS)
def test_fp8_roundtrip_and_paths(fmt, scaling):
    w = (RNG.standard_normal((200, 300)) * 0.1).astype(np.float32)
    q, s = dq.quantize_fp8(w, fmt, scaling)
    assert q.dtype == np.dtype(getattr(ml_dtypes, fmt)) and s.shape == dq.fp8_scale_shape(w.shape, scaling)
    f32 = dq.dequant_fp8(q, s, scaling, via="float32")
    # independent: float32 product (correctly rounded by NumPy), then float32 -> bf16 (one rounding)
    S = dq._expand_scales(s, w.shape, scaling).astype(np.float32)
    want = (q.astype(np.float32) * S).astype(ml_dtypes.bfloat16)
    assert bitwise_equal(f32, want)
    bf = dq.dequant_fp8(q, s, scaling, via="bfloat16")
    want_bf = (q.astype(np.float32) * S.astype(ml_dtypes.bfloat16).astype(np.float32)).astype(ml_dtypes.bfloat16)
    assert bitwise_equal(bf, want_bf)
    assert np.max(np.abs(f32.astype(np.float32) - w)) < 0.1 * np.abs(w).max()


def test_fp8_bad_scales():
    q, s = dq.quantize_fp8(np.ones((4, 4), np.float32), scaling="channel")
    s[1] = np.nan
    with pytest.raises(ValueError, match="zero, NaN or Inf"):
        dq.dequant_fp8(q, s, "channel")
    with pytest.raises(ValueError, match="expected"):
        dq.dequant_fp8(q, s[:2], "channel")
