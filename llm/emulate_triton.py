"""`linear=emulate:PROFILE` on a GPU: a Triton kernel for numerics.matmul's block-FMA model (issue 17).

``emulate_matmul_triton(x, w, model)`` computes ``x @ w.T`` (x [M, K], w [N, K], both float16 or both
bfloat16 torch tensors) through ``model`` and gives the float32 accumulator, bit for bit
``numerics.matmul_fast.fast_matmul_nt`` (and so ``numerics.matmul.model_matmul``). Per output element
and per block of ``block_size`` products, with integers only:

- each operand is decoded from its bits into an integer significand ``m`` and the exponent of its last
  bit (subnormals included); a product is ``m_a * m_b`` (exact in int64) at ``2^(e_a + e_b)``;
- the block's key ``E`` is the largest of its terms' keys (``align_to="exponent_sum"``: the operands'
  exponents clamped at the format's emin, summed; ``"value"``: the product's own exponent) and the
  accumulator's exponent; the grid is ``2^g``, ``g = E - 23 - extra_bits``;
- every term and the accumulator are shifted onto that grid, cutting the bits below it toward zero
  (shifts of the magnitude, the sign applied after), and summed as int64 (exact: fast_supported's bound
  keeps the sum below 2^53);
- the sum times ``2^g`` (exact in float64) is rounded once to float32: to nearest even (the cast), or
  toward zero (the cast, stepped one float32 toward zero where it went away from zero); the last block of
  a chain uses ``final_rounding``.

Chains restart every ``promote_every`` products (their results added to a float32 register, nearest) and
at every split-K slice (``split_k_slices``; the float32 partials added in slice order on the host).

What the kernel cannot express is an error naming the profile and what is missing (``kernel_support``),
never another computation in its place: operand formats other than float16/bfloat16, fp32 FMA chains
(float32 linears), unnormalised or inexact-product models, ``align_cut="floor"``, ``sum_bits != 24``,
``extra_bits=None`` with blocks, aligned sums wider than 53 bits.

Without a GPU the kernel runs in Triton's interpreter (TRITON_INTERPRET=1, as tests/conftest.py sets):
tests/test_emulate_triton.py checks it there against numerics bit for bit, and on a GPU (`gpu` mark).
"""
from __future__ import annotations

import os
import time

import numpy as np
import torch

from probes.errors import UsageError

__all__ = ["kernel_support", "check_kernel_model", "emulate_matmul_triton", "narrow_terms", "time_emulate_matmul",
           "FORMATS"]

# operand format -> (mantissa bits, exponent bits, bias)
FORMATS = {"float16": (10, 5, 15), "bfloat16": (7, 8, 127)}
_TORCH = {"float16": torch.float16, "bfloat16": torch.bfloat16}
_NOKEY = -16000
_REAL = -10000


def kernel_support(model) -> str | None:
    """None when the Triton kernel evaluates ``model`` exactly, else what it is missing."""
    from numerics.matmul import operand_formats
    from numerics.matmul_fast import fast_supported
    if model.block_size == 1 and model.extra_bits is None:
        return "a chain of fp32 FMAs (block_size=1, extra_bits=None)"
    fa, fb = operand_formats(model.input_format)
    if fa != fb or fa not in FORMATS:
        return f"operand format {model.input_format} (the kernel takes float16 or bfloat16 operands)"
    why = fast_supported(model)
    if why is not None:
        return why
    if model.sum_bits != 24:
        return f"sum_bits={model.sum_bits} (the kernel rounds block sums to float32's 24 bits)"
    if model.block_size > 64:
        return f"block_size={model.block_size} (> 64)"
    return None


def check_kernel_model(model, profile: str = "?") -> None:
    """UsageError naming the profile and what is missing when the kernel cannot express ``model``."""
    why = kernel_support(model)
    if why is not None:
        raise UsageError(f"linear=emulate:{profile}: the Triton emulation kernel cannot express this profile's "
                         f"{model.input_format} model: {why}")


INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
if INTERPRETED:
    import probes.gemm.triton_matmul  # noqa: F401,E402  (its interpreter shim: run-time loop bounds, NumPy >= 2.4)

import triton  # noqa: E402
import triton.language as tl  # noqa: E402


@triton.jit
def _pow2(e):
    """2^e as float64 (e: int64 tensor within float64's normal range)."""
    return ((e + 1023) << 52).to(tl.float64, bitcast=True)


@triton.jit
def _decode(u, MANT: tl.constexpr, EXPB: tl.constexpr, BIAS: tl.constexpr):
    """Bits u (int32 or int64, the format's bits in the low 1 + EXPB + MANT) -> (signed significand m,
    exponent of m's last bit, alignment key: exponent clamped at emin, _NOKEY for zero), in u's integer type."""
    ef = (u >> MANT) & ((1 << EXPB) - 1)
    mf = u & ((1 << MANT) - 1)
    m = tl.where(ef > 0, mf | (1 << MANT), mf)
    e_lsb = tl.where(ef > 0, ef, 1) - BIAS - MANT
    key = tl.where(m != 0, tl.where(ef > 0, ef, 1) - BIAS, -16000)
    neg = ((u >> (MANT + EXPB)) & 1) != 0
    return tl.where(neg, -m, m), e_lsb, key


@triton.jit
def _exp64(x):
    """floor(log2|x|) of a nonzero float64 (normal)."""
    return ((x.to(tl.int64, bitcast=True) >> 52) & 0x7FF) - 1023


@triton.jit
def _exp32(x):
    """floor(log2|x|) of a nonzero float32 (normal)."""
    return ((x.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127


@triton.jit
def _shift(m, sh, LMAX: tl.constexpr = 62, RMAX: tl.constexpr = 63):
    """trunc(|m| * 2^-sh) with m's sign (sh may be negative: a left shift), without undefined shifts (int64:
    LMAX 62, RMAX 63; int32: 30, 31)."""
    a = tl.abs(m)
    r = tl.where(sh < 0, a << tl.minimum(tl.maximum(-sh, 0), LMAX), a >> tl.minimum(tl.maximum(sh, 0), RMAX))
    return tl.where(m < 0, -r, r)


@triton.jit
def _round(S, g, NEAR):
    """S * 2^g (S: int64, |S| < 2^53) rounded to float32, nearest even or toward zero; zero is +0."""
    x = S.to(tl.float64) * _pow2(g.to(tl.int64))
    x32 = x.to(tl.float32)
    away = tl.abs(x32.to(tl.float64)) > tl.abs(x)
    bits = x32.to(tl.int32, bitcast=True)
    tz = tl.where(away, bits - 1, bits).to(tl.float32, bitcast=True)
    r = tl.where(NEAR, x32, tz)
    return tl.where(r == 0, 0.0, r)


@triton.jit
def emulate_kernel(a_ptr, b_ptr, c_ptr, M, N, K, k_lo, k_hi, promote,
                   MANT: tl.constexpr, EXPB: tl.constexpr, BIAS: tl.constexpr,
                   NB: tl.constexpr, NBP: tl.constexpr, P: tl.constexpr,
                   NEAR: tl.constexpr, FIN_NEAR: tl.constexpr, BY_VALUE: tl.constexpr,
                   PROMOTED: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, NARROW: tl.constexpr = False):
    """NARROW (narrow_terms(P)): every product and every term aligned onto the block's grid fits int32, so the
    per-product work ([BM, BN, NB] products, keys, shifts) runs in int32 and only the block sum in int64; the
    same integers as the int64 path (the bound: a term is below 2^(25 + P) <= 2^30)."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = (pid_m * BM + tl.arange(0, BM)).to(tl.int64)
    rn = (pid_n * BN + tl.arange(0, BN)).to(tl.int64)
    rk = tl.arange(0, NBP)
    outer = tl.zeros((BM, BN), dtype=tl.float32)
    for s0 in range(k_lo, k_hi, promote):
        s1 = tl.minimum(s0 + promote, k_hi)
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for b0 in range(s0, s1, NB):
            kk = b0 + rk
            kin = (rk < NB) & (kk < s1)
            ua = tl.load(a_ptr + rm[:, None] * K + kk[None, :], mask=(rm[:, None] < M) & kin[None, :], other=0)
            ub = tl.load(b_ptr + rn[:, None] * K + kk[None, :], mask=(rn[:, None] < N) & kin[None, :], other=0)
            if NARROW:
                ma, ea, ka = _decode(ua.to(tl.int32) & 0xFFFF, MANT, EXPB, BIAS)
                mb, eb, kb = _decode(ub.to(tl.int32) & 0xFFFF, MANT, EXPB, BIAS)
            else:
                ma, ea, ka = _decode(ua.to(tl.int64) & 0xFFFF, MANT, EXPB, BIAS)
                mb, eb, kb = _decode(ub.to(tl.int64) & 0xFFFF, MANT, EXPB, BIAS)
            mp = ma[:, None, :] * mb[None, :, :]                         # [BM, BN, NBP] exact (< 2^22)
            ep = ea[:, None, :] + eb[None, :, :]
            if BY_VALUE:
                if NARROW:      # |mp| < 2^22: exact in float32
                    keys = tl.where(mp != 0, _exp32(tl.abs(mp).to(tl.float32)) + ep, -16000)
                else:
                    keys = tl.where(mp != 0, _exp64(tl.abs(mp).to(tl.float64)) + ep, -16000)
            else:
                keys = ka[:, None, :] + kb[None, :, :]
            acc64 = acc.to(tl.float64)
            u32 = acc.to(tl.int32, bitcast=True).to(tl.int64) & 0xFFFFFFFF
            mc, ec, _kc = _decode(u32, 23, 8, 127)
            kc = tl.where(acc != 0, _exp64(acc64), -16000)
            if NARROW:
                kc = kc.to(tl.int32)
            E = tl.maximum(tl.max(keys, axis=2), kc)
            E = tl.where(E > -10000, E, 0)
            g = E - 23 - P
            if NARROW:
                terms = _shift(mp, g[:, :, None] - ep, 30, 31).to(tl.int64)
            else:
                terms = _shift(mp, g[:, :, None] - ep)
            S = tl.sum(terms, axis=2) + _shift(mc, g.to(tl.int64) - ec)
            last = b0 + NB >= s1
            acc = _round(S, g, tl.where(last, FIN_NEAR, NEAR))
        if PROMOTED:
            outer = outer + acc
        else:
            outer = acc
    tl.store(c_ptr + rm[:, None] * N + rn[None, :], outer, mask=(rm[:, None] < M) & (rn[None, :] < N))


def narrow_terms(extra_bits: int) -> bool:
    """Whether the kernel's per-product integers fit int32 for a model with ``extra_bits`` = P: a product or the
    accumulator, aligned onto a grid 2^g with g = E - 23 - P below the block's key E, is below 2^(E + 2 - g) =
    2^(25 + P) (each operand is below 2^(its key + 1)), so P <= 5 keeps every term below 2^30."""
    return 25 + int(extra_bits) <= 30


def emulate_matmul_triton(x: torch.Tensor, w: torch.Tensor, model, *, profile: str = "?",
                          block_m: int = 16, block_n: int = 16, narrow: bool | None = None) -> torch.Tensor:
    """``x @ w.T`` through ``model`` on x's device (a CUDA GPU, or the CPU in Triton's interpreter):
    float32 [M, N], bit for bit ``fast_matmul_nt``. x [M, K], w [N, K]: the model's operand dtype. ``narrow``:
    the int32 per-product path (default: wherever narrow_terms allows it; False forces the int64 path, for
    comparing the two; True where it does not fit is an error)."""
    from numerics.matmul import split_k_slices
    check_kernel_model(model, profile)
    fmt = model.input_format
    if x.dim() != 2 or w.dim() != 2 or x.shape[1] != w.shape[1]:
        raise UsageError(f"emulate_matmul_triton: need x [M, K] and w [N, K], got {tuple(x.shape)} and "
                         f"{tuple(w.shape)}")
    if x.dtype != _TORCH[fmt] or w.dtype != _TORCH[fmt]:
        raise UsageError(f"linear=emulate:{profile}: the model takes {fmt} operands, got {x.dtype} and {w.dtype}")
    if x.device != w.device:
        raise UsageError(f"emulate_matmul_triton: x on {x.device}, w on {w.device}")
    if not (bool(torch.isfinite(x).all()) and bool(torch.isfinite(w).all())):
        raise UsageError(f"linear=emulate:{profile}: an operand holds inf or NaN (the model is defined on finite "
                         f"values)")
    kern = emulate_kernel
    fits = narrow_terms(model.extra_bits)
    if narrow is None:
        narrow = fits
    elif narrow and not fits:
        raise UsageError(f"emulate_matmul_triton(narrow=True): extra_bits={model.extra_bits} puts aligned terms "
                         "above int32 (narrow needs extra_bits <= 5)")
    M, K = x.shape
    N = w.shape[0]
    a = x.contiguous().view(torch.int16)
    b = w.contiguous().view(torch.int16)
    mant, expb, bias = FORMATS[fmt]
    nb = int(model.block_size)
    nbp = 1 << (nb - 1).bit_length()
    near = model.rounding == "nearest_even"
    fin = (model.final_rounding or model.rounding) == "nearest_even"
    grid = (triton.cdiv(M, block_m), triton.cdiv(N, block_n))
    out = None
    for s0, s1 in split_k_slices(K, model.split_k, model.split_align):
        part = torch.empty((M, N), dtype=torch.float32, device=x.device)
        promote = int(model.promote_every) if model.promote_every is not None else s1 - s0
        kern[grid](a, b, part, M, N, K, s0, s1, promote, MANT=mant, EXPB=expb, BIAS=bias, NB=nb, NBP=nbp,
                   P=int(model.extra_bits), NEAR=near, FIN_NEAR=fin, BY_VALUE=model.align_to == "value",
                   PROMOTED=model.promote_every is not None, BM=block_m, BN=block_n, NARROW=bool(narrow))
        out = part if out is None else out + part           # float32, nearest even: add_fp32 of the partials
    return out


def time_emulate_matmul(M: int, N: int, K: int, model, *, device="cuda", reps: int = 5, seed: int = 0,
                        narrow: bool | None = None) -> dict:
    """Seconds per ``emulate_matmul_triton`` call on random operands (median of ``reps``, after a warm-up; host
    time inside), beside torch's own matmul of the same operands: {"emulate_s", "torch_s", "ratio"}."""
    g = torch.Generator().manual_seed(seed)
    dt = _TORCH[model.input_format]
    x = torch.randn(M, K, generator=g).to(dt).to(device)
    w = (torch.randn(N, K, generator=g) / K ** 0.5).to(dt).to(device)

    def clock(fn):
        fn()
        ts = []
        for _ in range(reps):
            if device != "cpu":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device != "cpu":
                torch.cuda.synchronize()
            ts.append(time.perf_counter() - t0)
        return float(np.median(ts))

    emu = clock(lambda: emulate_matmul_triton(x, w, model, narrow=narrow))
    nat = clock(lambda: x @ w.T)
    return {"M": M, "N": N, "K": K, "emulate_s": emu, "torch_s": nat, "ratio": emu / nat if nat else None}


def main(argv=None):
    """python -m llm.emulate_triton --profile P --dtype D --shapes MxNxK,...: seconds per emulated matmul
    (the Triton kernel) beside torch's own, on a CUDA device."""
    import argparse

    from probes.profile import linear_plan, load_profile
    ap = argparse.ArgumentParser(prog="python -m llm.emulate_triton", description=main.__doc__.split("\n")[0])
    ap.add_argument("--profile", default="h100")
    ap.add_argument("--dtype", default="bfloat16", choices=sorted(FORMATS))
    ap.add_argument("--shapes", default="1x576x576,64x576x576,1388x1536x576,1388x49152x576",
                    help="comma-separated MxNxK (x [M, K], w [N, K])")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--paths", default="auto",
                    help="comma-separated kernel paths to time, in the same run: auto (int32 per-product integers "
                         "where narrow_terms allows, the default), int64 (the int64 path forced)")
    args = ap.parse_args(argv)
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if not paths or any(p not in ("auto", "int64") for p in paths):
        raise UsageError(f"--paths {args.paths!r}: give auto and / or int64")
    prof = load_profile(args.profile)
    if args.dtype not in prof["linear"]:
        raise UsageError(f"--dtype: profile {prof['name']!r} has no {args.dtype} model")
    for s in args.shapes.split(","):
        try:
            M, N, K = (int(v) for v in s.lower().split("x"))
        except ValueError:
            raise UsageError(f"--shapes: {s!r} is not MxNxK") from None
        model = linear_plan(prof, args.dtype, N, K, M).model
        check_kernel_model(model, args.profile)
        for path in paths:
            narrow = None if path == "auto" else False
            used = "int32" if narrow is None and narrow_terms(model.extra_bits) else "int64"
            t = time_emulate_matmul(M, N, K, model, device=args.device, reps=args.reps, narrow=narrow)
            print(f"{args.profile} {args.dtype} M={M} N={N} K={K} [{path}: {used} terms]: emulated "
                  f"{t['emulate_s'] * 1e3:.3f} ms, torch {t['torch_s'] * 1e3:.3f} ms ({t['ratio']:.1f}x) on "
                  f"{args.device}", flush=True)
    return 0


if __name__ == "__main__":
    import sys

    from probes.cli import guarded_main
    sys.exit(guarded_main(main))
