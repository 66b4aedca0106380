"""Dequantisation formulas, modelled bit for bit (the one source of truth the kernels are tested against).

Formulas that are equal on paper differ in floating point:

* int4 group-wise (groups of ``g`` weights along a row share a scale ``s`` and a zero point ``z``,
  both stored as float16): ``sub_mul`` = ``(q - z) * s``, ``mul_sub`` = ``q*s - z*s`` (three roundings),
  ``fma`` = ``fma(q, s, -(z*s))`` (two roundings), each with the scale arithmetic done in float16 or in
  float32 (``compute``), the result then cast once to the output format.
  Packing: two nibbles per byte, weight ``2j`` in the low nibble, ``2j+1`` in the high nibble.
  Symmetric: the nibble is a two's complement int4 (-8..7) and z = 0; asymmetric: unsigned 0..15.
* GGUF Q4_0 / Q4_1 blocks, as ggml/gguf decode them (float32 arithmetic).
* FP8 (e4m3fn, e5m2) with per-tensor, per-channel (per row) or 128x128 block float32 scales,
  dequantised in float32 then cast to bfloat16, or in bfloat16 (scale rounded to bfloat16 first).

Every rounding is explicit: values are carried in float64 and rounded with ``formats.cast`` (one
correct rounding); a single +,-,* of two p-bit values done in float64 and rounded once is the correctly
rounded p-bit result (53 >= 2p + 2), and fused multiply-adds use ``exact.fma``.
"""
import numpy as np

from .exact import fma as _fma
from .formats import cast, quantize_int

FORMULAS = ("sub_mul", "mul_sub", "fma")
COMPUTE = ("float16", "float32")
OUTPUTS = ("bfloat16", "float16", "float32")
GROUP_SIZES = (32, 64, 128)
FP8_FORMATS = ("float8_e4m3fn", "float8_e5m2")
FP8_SCALINGS = ("tensor", "channel", "block")
FP8_BLOCK = 128
FP8_MAX = {"float8_e4m3fn": 448.0, "float8_e5m2": 57344.0}
QK = 32  # weights per GGUF Q4_0 / Q4_1 block
Q4_0_BLOCK_BYTES = 18
Q4_1_BLOCK_BYTES = 20


def _r(x, fmt):
    """Round float64 values into fmt, returned as float64 again."""
    return cast(np.asarray(x, np.float64), fmt).astype(np.float64)


def _choice(value, allowed, what):
    if value not in allowed:
        raise ValueError(f"{what}: must be one of {', '.join(allowed)}, got {value!r}")


# ---- int4 packing ---------------------------------------------------------------------------------
def pack_int4(nibbles):
    """(N, K) array of 4-bit patterns (0..15) -> (N, K/2) uint8, element 2j in the low nibble."""
    q = np.asarray(nibbles)
    if q.ndim != 2 or q.shape[1] % 2:
        raise ValueError(f"nibbles: need a 2-D array with an even number of columns, got shape {q.shape}")
    if q.size and (q.min() < 0 or q.max() > 15):
        raise ValueError("nibbles: values must be 4-bit patterns in 0..15")
    q = q.astype(np.uint8)
    return (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8)


def int4_scales(lo, hi):
    """A group's range [lo, hi] (float64; lo <= 0 <= hi: the range holds 0) -> (scale, zero point), float16 arrays:
    s = (hi - lo) / 15 rounded once to float16 (1.0 for an all-zero group, where any scale gives q = z = 0),
    z = round(-lo / s) (half to even) clipped to 0..15, stored as float16. The asymmetric int4 quantiser's
    rule; quantize_int4 applies it, llm.kernels' GPU quantiser calls it for the (small) per-group arrays."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    if np.any(lo > 0) or np.any(hi < 0):
        raise ValueError("lo, hi: the group range must hold 0 (lo <= 0 <= hi)")
    s = _r((hi - lo) / 15.0, "float16")
    s = np.where(s > 0, s, 1.0)
    z = np.clip(np.round(-lo / s), 0, 15)
    return cast(s, "float16"), cast(z, "float16")


def quantize_int4(w, group_size):
    """float (N, K) -> (packed (N, K/2) uint8, scales (N, K/g) float16, zeros (N, K/g) float16): asymmetric
    group-wise int4 in the layout dequant_int4 reads (zeros given = unsigned nibbles). Each group of
    ``group_size`` weights along a row: [lo, hi] = [min(min, 0), max(max, 0)], (s, z) = int4_scales(lo, hi),
    q = round(w / s + z) (float64 division and addition, each rounded once; clipped to 0..15; half to even)."""
    w = np.asarray(w, np.float64)
    if w.ndim != 2:
        raise ValueError(f"w: need a 2-D (N, K) array, got shape {w.shape}")
    n, k = w.shape
    if group_size <= 0 or k % group_size:
        raise ValueError(f"group_size: {group_size} does not divide the row length {k}")
    g = w.reshape(n, k // group_size, group_size)
    s16, z16 = int4_scales(np.minimum(g.min(axis=2), 0.0), np.maximum(g.max(axis=2), 0.0))
    s, z = s16.astype(np.float64), z16.astype(np.float64)
    q = quantize_int(np.clip(g / s[..., None] + z[..., None], 0, 15), "uint4")
    return pack_int4(q.reshape(n, k)), s16, z16


def unpack_int4(packed, symmetric):
    """(N, K/2) uint8 -> (N, K) int values: two's complement -8..7 if symmetric, else 0..15."""
    p = np.asarray(packed, dtype=np.uint8)
    q = np.empty((p.shape[0], p.shape[1] * 2), np.int16)
    q[:, 0::2] = p & 0xF
    q[:, 1::2] = p >> 4
    if symmetric:
        q = np.where(q >= 8, q - 16, q)
    return q


def _check_groups(n, k, group_size, scales, zeros):
    if group_size <= 0 or k % group_size:
        raise ValueError(f"group_size: {group_size} does not divide the row length {k}")
    want = (n, k // group_size)
    if np.shape(scales) != want:
        raise ValueError(f"scales: shape {np.shape(scales)}, expected {want} (rows, K / group_size)")
    if zeros is not None and np.shape(zeros) != want:
        raise ValueError(f"zeros: shape {np.shape(zeros)}, expected {want}")
    s = np.asarray(scales, np.float64)
    if not np.all(np.isfinite(s)) or np.any(s == 0):
        raise ValueError("scales: zero, NaN or Inf scale")
    if zeros is not None and not np.all(np.isfinite(np.asarray(zeros, np.float64))):
        raise ValueError("zeros: NaN or Inf zero point")


def dequant_int4(packed, scales, zeros, *, group_size, formula="sub_mul", compute="float32",
                 out="bfloat16"):
    """Group-wise int4 dequantisation. ``packed`` (N, K/2) uint8; ``scales`` (N, K/g) float16;
    ``zeros`` (N, K/g) float16 for asymmetric weights, or None for symmetric (z = 0, signed nibbles).
    Returns an (N, K) array of the ``out`` dtype."""
    _choice(formula, FORMULAS, "formula")
    _choice(compute, COMPUTE, "compute")
    _choice(out, OUTPUTS, "out")
    symmetric = zeros is None
    q = unpack_int4(packed, symmetric).astype(np.float64)
    n, k = q.shape
    _check_groups(n, k, group_size, scales, zeros)
    rep = lambda a: np.repeat(_r(np.asarray(a, np.float64), "float16"), group_size, axis=1)
    s = rep(scales)
    z = rep(zeros) if zeros is not None else np.zeros_like(s)
    c = compute
    with np.errstate(over="ignore", invalid="ignore"):
        if formula == "sub_mul":
            w = _r(_r(q - z, c) * s, c)
        elif formula == "mul_sub":
            w = _r(_r(q * s, c) - _r(z * s, c), c)
        else:
            w = _fma(_r(q, c), s, -_r(z * s, c), c).astype(np.float64)
    return cast(w, out)


# ---- GGUF Q4_0 / Q4_1 ----------------------------------------------------------------------------
def _blocks(raw, size, name):
    b = np.asarray(raw, dtype=np.uint8)
    if b.ndim == 1:
        if b.size % size:
            raise ValueError(f"{name}: {b.size} bytes is not a whole number of {size}-byte blocks")
        b = b.reshape(-1, size)
    if b.ndim != 2 or b.shape[1] != size:
        raise ValueError(f"{name}: blocks must be (n, {size}) uint8, got shape {b.shape}")
    return b


def _ggml_nibbles(qs):
    """16 bytes per block -> 32 values: bytes' low nibbles are weights 0..15, high nibbles 16..31."""
    return np.concatenate([qs & 0xF, qs >> 4], axis=1).astype(np.float64)


def dequant_q4_0(raw):
    """GGUF Q4_0 blocks (n, 18) uint8 -> (n, 32) float32: w = float32(d) * float32(q - 8)."""
    b = _blocks(raw, Q4_0_BLOCK_BYTES, "Q4_0")
    d = b[:, :2].copy().view(np.float16).astype(np.float64)
    q = _ggml_nibbles(b[:, 2:]) - 8
    with np.errstate(over="ignore", invalid="ignore"):
        return cast(d * q, "float32")


def dequant_q4_1(raw):
    """GGUF Q4_1 blocks (n, 20) uint8 -> (n, 32) float32: w = float32(float32(d * q) + m)."""
    b = _blocks(raw, Q4_1_BLOCK_BYTES, "Q4_1")
    d = b[:, :2].copy().view(np.float16).astype(np.float64)
    m = b[:, 2:4].copy().view(np.float16).astype(np.float64)
    q = _ggml_nibbles(b[:, 4:])
    with np.errstate(over="ignore", invalid="ignore"):
        return cast(_r(d * q, "float32") + m, "float32")


# ---- FP8 ------------------------------------------------------------------------------------------
def fp8_scale_shape(shape, scaling):
    n, k = shape
    _choice(scaling, FP8_SCALINGS, "scaling")
    if scaling == "tensor":
        return (1, 1)
    if scaling == "channel":
        return (n, 1)
    return (-(-n // FP8_BLOCK), -(-k // FP8_BLOCK))


def _expand_scales(scales, shape, scaling):
    n, k = shape
    s = np.asarray(scales, np.float64)
    want = fp8_scale_shape(shape, scaling)
    if s.shape != want:
        raise ValueError(f"scales: shape {s.shape}, expected {want} for {scaling} scaling of {shape}")
    if not np.all(np.isfinite(s)) or np.any(s == 0):
        raise ValueError("scales: zero, NaN or Inf scale")
    if scaling == "block":
        s = np.repeat(np.repeat(s, FP8_BLOCK, axis=0), FP8_BLOCK, axis=1)[:n, :k]
    return np.broadcast_to(s, shape)


def quantize_fp8(w, fmt="float8_e4m3fn", scaling="tensor"):
    """float32 (N, K) -> (fp8 values, float32 scales): s = float32(amax / fp8_max) per tensor / row /
    128x128 block (1 where the amax is 0), q = fp8(float32(w / s)). Raises if anything would clamp."""
    _choice(fmt, FP8_FORMATS, "fmt")
    w = np.asarray(w, np.float32)
    if w.ndim != 2:
        raise ValueError(f"w: need a 2-D array, got shape {w.shape}")
    n, k = w.shape
    a = np.abs(w.astype(np.float64))
    if scaling == "tensor":
        amax = a.max(keepdims=True)
    elif scaling == "channel":
        amax = a.max(axis=1, keepdims=True)
    else:
        bn, bk = fp8_scale_shape(w.shape, "block")
        pad = np.zeros((bn * FP8_BLOCK, bk * FP8_BLOCK))
        pad[:n, :k] = a
        amax = pad.reshape(bn, FP8_BLOCK, bk, FP8_BLOCK).max(axis=(1, 3))
    s = _r(amax / FP8_MAX[fmt], "float32")
    s = np.where(s == 0, 1.0, s).astype(np.float32)
    x = _r(w.astype(np.float64) / _expand_scales(s, w.shape, scaling), "float32")
    q = cast(x, fmt)
    if not np.all(np.isfinite(q.astype(np.float64))):
        raise ValueError("quantize_fp8: a value overflows the fp8 range after scaling (refusing to clamp)")
    return q, s


def dequant_fp8(q, scales, scaling="tensor", *, via="float32"):
    """fp8 (N, K) x float32 scales -> bfloat16. via='float32': bf16(float32(q * s)); via='bfloat16':
    bf16(q * bf16(s)) (q is exact in bfloat16)."""
    _choice(via, ("float32", "bfloat16"), "via")
    q = np.asarray(q)
    if q.ndim != 2:
        raise ValueError(f"q: need a 2-D array, got shape {q.shape}")
    s = _expand_scales(scales, q.shape, scaling)
    qv = q.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        if via == "float32":
            return cast(_r(qv * s, "float32"), "bfloat16")
        return cast(qv * _r(s, "bfloat16"), "bfloat16")


# ---- GGUF Q4_0 / Q4_1 quantisers (ggml's reference quantize_row_q4_0_ref / q4_1_ref) ---------------
def _q4_rows(x, name):
    x = np.asarray(x, np.float32)
    if x.size % QK:
        raise ValueError(f"{name}: {x.size} values is not a whole number of {QK}-value blocks")
    return x.reshape(-1, QK)


def quantize_q4_0(x):
    """float32 values (a multiple of 32, row-major) -> GGUF Q4_0 blocks (n, 18) uint8, as ggml's
    quantize_row_q4_0_ref: max = the value of largest magnitude (the first one), d = max / -8,
    id = 1/d (0 if d = 0), q = min(15, trunc(x*id + 8.5)) in float32, d stored as float16."""
    x = _q4_rows(x, "Q4_0")
    first = np.argmax(np.abs(x), axis=1)
    mx = x[np.arange(x.shape[0]), first]
    with np.errstate(divide="ignore", invalid="ignore"):
        d = (mx / np.float32(-8)).astype(np.float32)
        inv = np.where(d != 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
        v = (x * inv[:, None]).astype(np.float32) + np.float32(8.5)
    q = np.minimum(15, np.trunc(v.astype(np.float32))).astype(np.int64).astype(np.uint8)
    out = np.empty((x.shape[0], Q4_0_BLOCK_BYTES), np.uint8)
    out[:, :2] = d.astype(np.float16).reshape(-1, 1).view(np.uint8)
    out[:, 2:] = q[:, :QK // 2] | (q[:, QK // 2:] << 4)
    return out


def quantize_q4_1(x):
    """float32 values (a multiple of 32, row-major) -> GGUF Q4_1 blocks (n, 20) uint8, as ggml's
    quantize_row_q4_1_ref: d = (max - min)/15, id = 1/d (0 if d = 0), q = min(15, trunc((x - min)*id + 0.5))
    in float32, d and min stored as float16."""
    x = _q4_rows(x, "Q4_1")
    lo, hi = x.min(axis=1), x.max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = ((hi - lo) / np.float32(15)).astype(np.float32)
        inv = np.where(d != 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
        v = ((x - lo[:, None]).astype(np.float32) * inv[:, None]).astype(np.float32) + np.float32(0.5)
    q = np.minimum(15, np.trunc(v.astype(np.float32))).astype(np.int64).astype(np.uint8)
    out = np.empty((x.shape[0], Q4_1_BLOCK_BYTES), np.uint8)
    out[:, :2] = d.astype(np.float16).reshape(-1, 1).view(np.uint8)
    out[:, 2:4] = lo.astype(np.float16).reshape(-1, 1).view(np.uint8)
    out[:, 4:] = q[:, :QK // 2] | (q[:, QK // 2:] << 4)
    return out
