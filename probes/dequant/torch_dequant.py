"""The dequantisation formulas written with plain torch ops (one kernel per op, so each op rounds once):
the reference any PyTorch user would write, on CPU or GPU. `fma` is done in float64 with a TwoSum
round-to-odd fix, then one rounding to the compute dtype (torch has no fused multiply-add op whose
fusion is guaranteed); `addcmul` is torch.addcmul(-(z*s), q, s), whose fusion is up to the backend -
the probe reports which formula it matches."""
import torch

from .kernels import OUT_DTYPES

TORCH_FORMULAS = ("sub_mul", "mul_sub", "fma", "addcmul")


def unpack_int4(packed, symmetric):
    lo = (packed & 0xF).to(torch.int16)
    hi = (packed >> 4).to(torch.int16)
    q = torch.stack([lo, hi], dim=-1).reshape(packed.shape[0], -1)
    return torch.where(q >= 8, q - 16, q) if symmetric else q


def _fma_f64(a, b, c, dtype):
    """Correctly rounded a*b + c in `dtype` for a, b, c of a format whose products are exact in float64."""
    a, b, c = (v.to(torch.float64) for v in (a, b, c))
    p = a * b
    s = p + c
    bb = s - p
    err = (p - (s - bb)) + (c - bb)
    odd = (err != 0) & ((s.view(torch.int64) & 1) == 0)
    s = torch.where(odd, torch.nextafter(s, torch.where(err > 0, float("inf"), float("-inf")).to(s)), s)
    return s.to(dtype)  # round-to-odd at 53 bits, then one rounding: correct for <= 24-bit formats


def dequant_int4(packed, scales, zeros, *, group_size, formula="sub_mul", compute="float32", out="bfloat16"):
    ct = {"float16": torch.float16, "float32": torch.float32}[compute]
    q = unpack_int4(packed, zeros is None).to(ct)
    s = scales.repeat_interleave(group_size, dim=1).to(ct)
    z = torch.zeros_like(s) if zeros is None else zeros.repeat_interleave(group_size, dim=1).to(ct)
    if formula == "sub_mul":
        w = (q - z) * s
    elif formula == "mul_sub":
        w = q * s - z * s
    elif formula == "fma":
        w = _fma_f64(q, s, -(z * s), ct)
    elif formula == "addcmul":
        w = torch.addcmul(-(z * s), q, s)
    else:
        raise ValueError(f"formula: must be one of {', '.join(TORCH_FORMULAS)}, got {formula!r}")
    return w.to(OUT_DTYPES[out])


def dequant_q4(blocks, qtype):
    off = 2 if qtype == "Q4_0" else 4
    d = blocks[:, :2].contiguous().view(torch.float16).to(torch.float32)
    qs = blocks[:, off:]
    q = torch.cat([qs & 0xF, qs >> 4], dim=1).to(torch.float32)
    if qtype == "Q4_0":
        return d * (q - 8)
    m = blocks[:, 2:4].contiguous().view(torch.float16).to(torch.float32)
    return d * q + m


def expand_fp8_scales(scales, shape, scaling):
    n, k = shape
    if scaling == "block":
        return scales.repeat_interleave(128, 0).repeat_interleave(128, 1)[:n, :k]
    return scales.expand(n, k)


def dequant_fp8(q, scales, scaling, *, via="float32"):
    s = expand_fp8_scales(scales, q.shape, scaling)
    if via == "bfloat16":
        return q.to(torch.bfloat16) * s.to(torch.bfloat16)
    return (q.to(torch.float32) * s).to(torch.bfloat16)
