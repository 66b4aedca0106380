"""Triton versions of the dequantisers (int4 group-wise, GGUF Q4_0/Q4_1, FP8), bit for bit the formulas
of numerics/dequant.py. On a GPU every float32 op is an explicit round-to-nearest libdevice call
(mul_rn, sub_rn, fma_rn), so the compiler cannot contract q*s - z*s into an FMA. float16 scale
arithmetic is float32 ops each followed by a cast to float16 (exact emulation: fp16 products are exact
in fp32, and one fp32 rounding then one fp16 rounding of a sum equals the fp16 sum); the float16 fma is
q*s - z*s in float64 (exact) cast once to float16.
Triton links libdevice in flush-to-zero mode (the PTX shows mul.rn.ftz.f32): no difference here, since
every product / difference of fp16 scales, zero points and 4-bit integers is 0 or >= 2^-48, far above
float32's subnormals; FP8 scales below ~1e-36 would be flushed (the CUDA kernels do not flush).
Under TRITON_INTERPRET=1 (CPU) libdevice is missing: plain float32 ops are used (NumPy rounds each op),
and the float32 fma is float64 a*b + c cast to float32 - exact only where a*b + c fits in 53 bits (true
for integer zero points); the interpreter also truncates float32 -> bfloat16, so there the rounding is
done on the bits (`round_bf16`)."""
import os

import torch
import triton
import triton.language as tl

try:
    from triton.language.extra import libdevice
except ImportError:  # pragma: no cover
    libdevice = None

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
FORMULA_CODES = {"sub_mul": 0, "mul_sub": 1, "fma": 2}
_OUT = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@triton.jit
def _mul(a, b, INTERP: tl.constexpr):
    if INTERP:
        return a * b
    else:
        return libdevice.mul_rn(a, b)


@triton.jit
def _sub(a, b, INTERP: tl.constexpr):
    if INTERP:
        return a - b
    else:
        return libdevice.sub_rn(a, b)


@triton.jit
def _fma32(a, b, c, INTERP: tl.constexpr):
    if INTERP:
        return (a.to(tl.float64) * b.to(tl.float64) + c.to(tl.float64)).to(tl.float32)
    else:
        return libdevice.fma_rn(a, b, c)


@triton.jit
def round_bf16(x, INTERP: tl.constexpr):
    """float32 -> the nearest-even bfloat16 value. On a GPU the cast rounds; the interpreter's truncates,
    so there it is done on the bits (finite values: add 0x7fff + the lowest kept bit, clear 16 bits)."""
    if INTERP:
        b = x.to(tl.uint32, bitcast=True)
        b = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000
        return b.to(tl.float32, bitcast=True).to(tl.bfloat16)
    else:
        return x.to(tl.bfloat16)


@triton.jit
def dequant_formula(q, s, z, FORMULA: tl.constexpr, COMPUTE16: tl.constexpr, INTERP: tl.constexpr):
    """q, s, z float32 (exact values); returns the result as float32 holding a compute-format value."""
    if COMPUTE16:
        if FORMULA == 0:
            t = _sub(q, z, INTERP).to(tl.float16).to(tl.float32)
            w = _mul(t, s, INTERP).to(tl.float16)
        elif FORMULA == 1:
            a = _mul(q, s, INTERP).to(tl.float16).to(tl.float32)
            b = _mul(z, s, INTERP).to(tl.float16).to(tl.float32)
            w = _sub(a, b, INTERP).to(tl.float16)
        else:
            b = _mul(z, s, INTERP).to(tl.float16).to(tl.float64)
            w = (q.to(tl.float64) * s.to(tl.float64) - b).to(tl.float16)
        return w.to(tl.float32)
    else:
        if FORMULA == 0:
            return _mul(_sub(q, z, INTERP), s, INTERP)
        elif FORMULA == 1:
            return _sub(_mul(q, s, INTERP), _mul(z, s, INTERP), INTERP)
        else:
            return _fma32(q, s, -_mul(z, s, INTERP), INTERP)


@triton.jit(do_not_specialize=["chunks_per_group", "symmetric"])
def dequant_int4_kernel(packed_ptr, scales_ptr, zeros_ptr, out_ptr, n_chunks, chunks_per_group, symmetric,
                        FORMULA: tl.constexpr, COMPUTE16: tl.constexpr, OUT_DTYPE: tl.constexpr,
                        OUT_BF16: tl.constexpr, INTERP: tl.constexpr, CHUNKS: tl.constexpr):
    # A chunk is 16 packed bytes = 32 weights, inside one group (groups are multiples of 32): the program
    # takes CHUNKS chunks as a (CHUNKS, 16) tile, so each thread loads 16 contiguous bytes (one 16-byte
    # load) and stores 32 contiguous outputs (16-byte stores), with one scale (and zero) load and one
    # division per chunk. Group size and symmetry are run-time arguments: one compile per formula x
    # scale math x output dtype.
    pid = tl.program_id(0)
    c = pid * CHUNKS + tl.arange(0, CHUNKS)
    cmask = c < n_chunks
    j = tl.arange(0, 16)
    b = tl.load(packed_ptr + c[:, None] * 16 + j[None, :], mask=cmask[:, None], other=0).to(tl.int32)
    g = c // chunks_per_group
    s = tl.broadcast_to(tl.load(scales_ptr + g, mask=cmask, other=1.0).to(tl.float32)[:, None], (CHUNKS, 16))
    z = tl.load(zeros_ptr + g, mask=cmask & (symmetric == 0), other=0.0).to(tl.float32)  # z = +0 if symmetric
    z = tl.broadcast_to(z[:, None], (CHUNKS, 16))
    lo = b & 0xF
    hi = (b >> 4) & 0xF
    sym = symmetric != 0
    lo = tl.where(sym, (lo ^ 8) - 8, lo)  # two's complement nibbles when symmetric
    hi = tl.where(sym, (hi ^ 8) - 8, hi)
    wl = dequant_formula(lo.to(tl.float32), s, z, FORMULA, COMPUTE16, INTERP)
    wh = dequant_formula(hi.to(tl.float32), s, z, FORMULA, COMPUTE16, INTERP)
    w = tl.reshape(tl.join(wl, wh), [CHUNKS, 32])  # weight 2j from the low nibble, 2j+1 from the high
    o = c[:, None] * 32 + tl.arange(0, 32)[None, :]
    if OUT_BF16:
        tl.store(out_ptr + o, round_bf16(w, INTERP), mask=cmask[:, None])
    else:
        tl.store(out_ptr + o, w.to(OUT_DTYPE), mask=cmask[:, None])


def dequant_int4(packed, scales, zeros, *, group_size, formula="sub_mul", compute="float32", out="bfloat16",
                 chunks=256):
    n, hk = packed.shape
    k = 2 * hk
    if group_size <= 0 or group_size % 32 or k % group_size:
        raise ValueError(f"group_size: {group_size} must be a multiple of 32 dividing the row length {k}")
    res = torch.empty((n, k), dtype=_OUT[out], device=packed.device)
    out_tl = {"bfloat16": tl.bfloat16, "float16": tl.float16, "float32": tl.float32}[out]
    n_chunks = n * hk // 16
    grid = (triton.cdiv(n_chunks, chunks),)
    dequant_int4_kernel[grid](packed, scales, scales if zeros is None else zeros, res, n_chunks, group_size // 32,
                              int(zeros is None), FORMULA=FORMULA_CODES[formula], COMPUTE16=compute == "float16",
                              OUT_DTYPE=out_tl, OUT_BF16=out == "bfloat16", INTERP=INTERPRETED, CHUNKS=chunks)
    return res


@triton.jit
def dequant_q4_kernel(blocks_ptr, out_ptr, n_blocks, Q4_1: tl.constexpr, WIDTH: tl.constexpr, FIRST: tl.constexpr,
                      INTERP: tl.constexpr,
                      BLOCKS: tl.constexpr):
    pid = tl.program_id(0)
    bi = pid * BLOCKS + tl.arange(0, BLOCKS)
    bmask = bi < n_blocks
    base = bi * WIDTH
    d0 = tl.load(blocks_ptr + base, mask=bmask, other=0).to(tl.uint16)
    d1 = tl.load(blocks_ptr + base + 1, mask=bmask, other=0).to(tl.uint16)
    d = (d0 | (d1 << 8)).to(tl.float16, bitcast=True).to(tl.float32)
    c = tl.arange(0, 16)
    m2 = bmask[:, None] & (c[None, :] < 16)
    qs = tl.load(blocks_ptr + base[:, None] + FIRST + c[None, :], mask=m2, other=0).to(tl.int32)
    lo = (qs & 0xF).to(tl.float32)
    hi = (qs >> 4).to(tl.float32)
    if Q4_1:
        m0 = tl.load(blocks_ptr + base + 2, mask=bmask, other=0).to(tl.uint16)
        m1 = tl.load(blocks_ptr + base + 3, mask=bmask, other=0).to(tl.uint16)
        m = (m0 | (m1 << 8)).to(tl.float16, bitcast=True).to(tl.float32)
        wl = _add(_mul(d[:, None], lo, INTERP), m[:, None], INTERP)
        wh = _add(_mul(d[:, None], hi, INTERP), m[:, None], INTERP)
    else:
        wl = _mul(d[:, None], lo - 8.0, INTERP)
        wh = _mul(d[:, None], hi - 8.0, INTERP)
    o = bi[:, None] * 32 + c[None, :]
    tl.store(out_ptr + o, wl, mask=m2)
    tl.store(out_ptr + o + 16, wh, mask=m2)


@triton.jit
def _add(a, b, INTERP: tl.constexpr):
    if INTERP:
        return a + b
    else:
        return libdevice.add_rn(a, b)


def dequant_q4(blocks, qtype, *, blocks_per_program=128):
    n = blocks.shape[0]
    res = torch.empty((n, 32), dtype=torch.float32, device=blocks.device)
    grid = (triton.cdiv(n, blocks_per_program),)
    q41 = qtype == "Q4_1"
    dequant_q4_kernel[grid](blocks, res, n, Q4_1=q41, WIDTH=20 if q41 else 18, FIRST=4 if q41 else 2,
                            INTERP=INTERPRETED, BLOCKS=blocks_per_program)
    return res


@triton.jit(do_not_specialize=["scaling", "via_bf16"])
def dequant_fp8_kernel(q_ptr, scales_ptr, out_ptr, total, k, blocks_per_row, scaling, via_bf16,
                       E5M2: tl.constexpr, OUT_F32: tl.constexpr,
                       INTERP: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    raw = tl.load(q_ptr + offs, mask=mask, other=0)
    if E5M2:
        x = raw.to(tl.float8e5, bitcast=True).to(tl.float32)
    else:
        x = raw.to(tl.float8e4nv, bitcast=True).to(tl.float32)
    row = offs // k
    # scaling (0 tensor, 1 channel, 2 block) and via_bf16 are run-time arguments: one compile per format
    si = tl.where(scaling == 0, 0, tl.where(scaling == 1, row, (row // 128) * blocks_per_row + (offs % k) // 128))
    s = tl.load(scales_ptr + si, mask=mask, other=1.0)
    s = tl.where(via_bf16 != 0, round_bf16(s, INTERP).to(tl.float32), s)
    w = _mul(x, s, INTERP)
    if OUT_F32:
        tl.store(out_ptr + offs, w, mask=mask)
    else:
        tl.store(out_ptr + offs, round_bf16(w, INTERP), mask=mask)


def dequant_fp8(q, scales, scaling, *, via="float32", out="bfloat16", block=2048):
    """q: uint8 bit patterns or a torch float8 tensor (N, K); float32 scales. out='float32' returns the
    float32 product before the bfloat16 cast (for the interpreter, which truncates that cast)."""
    n, k = q.shape
    raw = q.view(torch.uint8) if q.dtype != torch.uint8 else q
    e5m2 = q.dtype == torch.float8_e5m2
    res = torch.empty((n, k), dtype=torch.float32 if out == "float32" else torch.bfloat16, device=q.device)
    grid = (triton.cdiv(n * k, block),)
    dequant_fp8_kernel[grid](raw, scales, res, n * k, k, triton.cdiv(k, 128),
                             {"tensor": 0, "channel": 1, "block": 2}[scaling], int(via == "bfloat16"), E5M2=e5m2,
                             OUT_F32=out == "float32", INTERP=INTERPRETED, BLOCK=block)
    return res
