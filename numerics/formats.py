"""Number formats, exact rounding into them, bit views and ULP distances.

A binary floating-point format with ``e`` exponent bits, ``m`` stored mantissa bits and bias ``B``
holds the values ``(-1)^s * 1.f * 2^(E - B)`` for biased exponents ``1 <= E <= 2^e - 2`` (normals) and
``(-1)^s * 0.f * 2^(1 - B)`` for ``E = 0`` (subnormals and signed zeros); the all-ones exponent holds
inf/NaN, except in ``float8_e4m3fn`` (OCP FP8 "fn": finite, no inf) where only ``S.1111.111`` is NaN
and the rest of that exponent holds normals up to 448.

Every value of every format here is exactly representable in float64, so all rounding is done on
float64 values with exact power-of-two scaling: with ``emin = 1 - B`` and the leading-bit exponent
``E(x) = floor(log2|x|)``, the spacing (quantum) of the format near ``x`` is
``2^q, q = max(E(x), emin) - m``. ``x / 2^q`` is exact; rounding it to an integer (``np.rint`` is
round-half-even) and scaling back gives the correctly rounded value with the exponent unbounded
above. IEEE 754 then says: if that value exceeds the largest finite value the result overflows:
``+-inf`` under round-to-nearest, ``+-max_finite`` under round-toward-zero. ``float8_e4m3fn`` has no inf;
following the OCP FP8 spec's non-saturating mode and ml_dtypes, a round-to-nearest overflow (and a
cast of +-inf) gives NaN there.

Rounding is done here rather than with ``astype`` because ml_dtypes converts float64 to
bfloat16/fp8 through float32, which double-rounds: ``1 + 2^-8 + 2^-40`` (just above the midpoint of
1 and the next bfloat16) becomes 1.0 through float32 instead of ``1 + 2^-7``. ``cast`` is exact.

The integer formats ``int4`` (-8..7) and ``uint4`` (0..15) are here too; they round half to even and
refuse out-of-range values (``quantize_int``) instead of clamping.
"""
from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

__all__ = [
    "Format", "FORMATS", "get_format", "round_to_format", "to_bits", "from_bits", "cast",
    "ulp_distance", "quantize_int", "ROUNDING_MODES",
]

#: Rounding modes accepted by ``round_to_format``/``cast``. ``nearest_away`` (ties away from zero)
#: is what NVIDIA's ``cvt.rna.tf32.f32`` does; the other two are the IEEE modes.
ROUNDING_MODES = ("nearest_even", "toward_zero", "nearest_away")


@dataclass(frozen=True)
class Format:
    """One number format. For the integer formats ``exponent_bits == 0``, ``bias == 0`` and the
    "normal/subnormal" fields are 1 (the integer spacing)."""

    name: str
    total_bits: int
    exponent_bits: int
    mantissa_bits: int            # stored fraction bits (precision p = mantissa_bits + 1)
    bias: int
    has_inf: bool
    max_finite: float
    smallest_normal: float
    smallest_subnormal: float
    dtype: np.dtype | None        # NumPy/ml_dtypes dtype holding the values, None for tf32
    bits_dtype: np.dtype          # unsigned dtype of the bit patterns from ``to_bits``
    is_integer: bool = False
    min_finite: float = 0.0       # most negative finite value (set in __post_init__ for floats)

    def __post_init__(self):
        if not self.is_integer:
            object.__setattr__(self, "min_finite", -self.max_finite)

    @property
    def precision(self) -> int:
        """Significand bits including the implicit leading bit."""
        return self.mantissa_bits + 1

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal, ``1 - bias``."""
        return 1 - self.bias


def _float_format(name, e, m, *, has_inf=True, dtype=None, bits_dtype=None, total=None):
    bias = 2 ** (e - 1) - 1
    emax = 2 ** e - 2 - bias if has_inf else 2 ** e - 1 - bias
    # e4m3fn: the top exponent is usable but mantissa 111 there is NaN, so the top value is 1.110b.
    top_frac = 1 - 2.0 ** -m if has_inf else 1 - 2.0 ** -(m - 1)
    return Format(
        name=name, total_bits=total or 1 + e + m, exponent_bits=e, mantissa_bits=m, bias=bias,
        has_inf=has_inf, max_finite=float((1 + top_frac) * 2.0 ** emax),
        smallest_normal=2.0 ** (1 - bias), smallest_subnormal=2.0 ** (1 - bias - m),
        dtype=None if dtype is None else np.dtype(dtype),
        bits_dtype=np.dtype(bits_dtype),
    )


FORMATS: dict[str, Format] = {
    "float64": _float_format("float64", 11, 52, dtype=np.float64, bits_dtype=np.uint64),
    "float32": _float_format("float32", 8, 23, dtype=np.float32, bits_dtype=np.uint32),
    "tf32": _float_format("tf32", 8, 10, dtype=None, bits_dtype=np.uint32),
    "bfloat16": _float_format("bfloat16", 8, 7, dtype=ml_dtypes.bfloat16, bits_dtype=np.uint16),
    "float16": _float_format("float16", 5, 10, dtype=np.float16, bits_dtype=np.uint16),
    "float8_e4m3fn": _float_format("float8_e4m3fn", 4, 3, has_inf=False,
                                   dtype=ml_dtypes.float8_e4m3fn, bits_dtype=np.uint8),
    "float8_e5m2": _float_format("float8_e5m2", 5, 2, dtype=ml_dtypes.float8_e5m2,
                                 bits_dtype=np.uint8),
    "int4": Format("int4", 4, 0, 3, 0, False, 7.0, 1.0, 1.0, np.dtype(ml_dtypes.int4),
                   np.dtype(np.uint8), is_integer=True, min_finite=-8.0),
    "uint4": Format("uint4", 4, 0, 4, 0, False, 15.0, 1.0, 1.0, np.dtype(ml_dtypes.uint4),
                    np.dtype(np.uint8), is_integer=True, min_finite=0.0),
}


def get_format(fmt) -> Format:
    """A ``Format`` from a name (``"bfloat16"``), a ``Format``, or a dtype / scalar type
    (``np.float16``, ``ml_dtypes.bfloat16``). Unknown ones raise ValueError listing the valid names."""
    if isinstance(fmt, Format):
        return fmt
    name = fmt
    if not isinstance(fmt, str):
        try:
            name = np.dtype(fmt).name
        except TypeError:
            name = repr(fmt)
    if name not in FORMATS:
        raise ValueError(f"unknown format {name!r}; valid formats: {', '.join(FORMATS)}")
    return FORMATS[name]


def _check_mode(mode):
    if mode not in ROUNDING_MODES:
        raise ValueError(f"unknown rounding mode {mode!r}; valid modes: {', '.join(ROUNDING_MODES)}")


def _round_int(s, mode):
    """Round float64 array ``s`` to integers (exactly, also for |s| >= 2^52)."""
    if mode == "nearest_even":
        return np.rint(s)
    t = np.trunc(s)
    if mode == "toward_zero":
        return t
    return t + np.where(np.abs(s - t) >= 0.5, np.sign(s), 0.0)  # nearest_away; s - t is exact


def round_to_format(x, fmt, mode: str = "nearest_even") -> np.ndarray:
    """Round float64 values to the nearest (per ``mode``) value of ``fmt``; returns float64.

    The result is exactly representable in ``fmt``; signed zeros and NaN are kept; overflow follows
    IEEE 754 (inf, or max finite under ``toward_zero``), with NaN instead of inf for float8_e4m3fn.
    Integer formats round half to even and raise ValueError on out-of-range values (``quantize_int``).
    """
    fmt = get_format(fmt)
    _check_mode(mode)
    x = np.asarray(x, dtype=np.float64)
    if fmt.is_integer:
        return quantize_int(x, fmt, mode).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        _, e = np.frexp(x)                   # x = f * 2^e, 0.5 <= |f| < 1: leading bit 2^(e-1)
        q = np.maximum(e - 1, fmt.emin) - fmt.mantissa_bits
        r = np.ldexp(_round_int(np.ldexp(x, -q), mode), q)   # both scalings are exact
        over = np.abs(r) > fmt.max_finite                     # inf inputs land here too
    if np.any(over):
        if mode == "toward_zero":
            big = np.where(np.isinf(x), x if fmt.has_inf else np.copysign(np.nan, x),
                           np.copysign(fmt.max_finite, x))
        elif fmt.has_inf:
            big = np.copysign(np.inf, x)
        else:
            big = np.copysign(np.nan, x)         # e4m3fn: NaN carrying x's sign, as ml_dtypes
        r = np.where(over, big, r)
    return r


def quantize_int(x, fmt, mode: str = "nearest_even") -> np.ndarray:
    """Round to the integer format ``fmt`` (``int4``: -8..7, ``uint4``: 0..15).

    Half-way cases go to the even integer (``mode="nearest_even"``, e.g. 2.5 -> 2, -8.5 -> -8), or
    the fraction is dropped (``"toward_zero"``). A value that is NaN/inf or out of range *after*
    rounding raises ValueError naming it; nothing is clamped. Returns int8 (int4) or uint8 (uint4).
    """
    fmt = get_format(fmt)
    if not fmt.is_integer:
        raise ValueError(f"quantize_int needs an integer format (int4, uint4), not {fmt.name!r}")
    _check_mode(mode)
    x = np.asarray(x, dtype=np.float64)
    r = _round_int(x, mode)
    bad = ~((r >= fmt.min_finite) & (r <= fmt.max_finite))  # also catches NaN
    if np.any(bad):
        i = np.flatnonzero(bad)[0]
        raise ValueError(
            f"value {x.ravel()[i]!r} at index {int(i)} is outside {fmt.name}'s range "
            f"[{int(fmt.min_finite)}, {int(fmt.max_finite)}] after rounding; refusing to clamp")
    return r.astype(np.int8 if fmt.min_finite < 0 else np.uint8)


def cast(x, fmt, mode: str = "nearest_even") -> np.ndarray:
    """``x`` rounded into ``fmt``, as an array of ``fmt.dtype`` (float32 holding the values for tf32).

    Goes through ``round_to_format`` on float64, so it is a single correct rounding from any input
    dtype (unlike ml_dtypes' float64 -> bfloat16/fp8 ``astype``)."""
    fmt = get_format(fmt)
    x = np.asarray(x)
    if fmt.dtype is not None and x.dtype == fmt.dtype:
        return x.copy()
    if fmt.is_integer:
        return quantize_int(x, fmt, mode).astype(fmt.dtype)
    r = round_to_format(x, fmt, mode)
    return r.astype(fmt.dtype if fmt.dtype is not None else np.float32)


def to_bits(x, fmt, *, tf32_layout: str = "tf32") -> np.ndarray:
    """Bit patterns of ``x`` in ``fmt`` as ``fmt.bits_dtype`` (values are first ``cast`` into fmt).

    Floats: sign | exponent | mantissa, as stored. tf32: with ``tf32_layout="tf32"`` (default) the
    19-bit pattern ``s eeeeeeee mmmmmmmmmm`` in the low bits of a uint32; with ``"fp32"`` the float32
    bits of the value (the low 13 bits are zero), which is what a tf32 register holds.
    int4/uint4: the 4-bit (two's complement for int4) pattern in the low bits of a uint8.
    """
    fmt = get_format(fmt)
    if fmt.name == "tf32" and tf32_layout not in ("tf32", "fp32"):
        raise ValueError(f"tf32_layout must be 'tf32' or 'fp32', not {tf32_layout!r}")
    x = np.asarray(x)
    if fmt.is_integer:
        return (quantize_int(x, fmt).astype(np.int16) & 0xF).astype(np.uint8)
    v = cast(x, fmt)
    bits = v.view(np.uint32 if fmt.name == "tf32" else fmt.bits_dtype)
    if fmt.name == "tf32" and tf32_layout == "tf32":
        bits = bits >> np.uint32(13)
    return bits.copy()


def from_bits(bits, fmt, *, tf32_layout: str = "tf32") -> np.ndarray:
    """Inverse of ``to_bits``: an array of ``fmt.dtype`` (float32 for tf32, int4/uint4 dtypes for
    the integer formats). Patterns wider than the format raise ValueError."""
    fmt = get_format(fmt)
    b = np.asarray(bits).astype(np.uint64)
    width = 32 if (fmt.name == "tf32" and tf32_layout == "fp32") else fmt.total_bits
    if np.any(b >> np.uint64(width)):
        raise ValueError(f"bit pattern wider than {width} bits for {fmt.name}")
    if fmt.is_integer:
        v = b.astype(np.int16)
        if fmt.min_finite < 0:
            v = np.where(v >= 8, v - 16, v)
        return v.astype(fmt.dtype)
    if fmt.name == "tf32":
        if tf32_layout == "tf32":
            b = b << np.uint64(13)
        elif np.any(b & np.uint64(0x1FFF)):
            raise ValueError("fp32-layout tf32 bits must have their low 13 bits zero")
        return b.astype(np.uint32).view(np.float32)
    return b.astype(fmt.bits_dtype).view(fmt.dtype)


def _ordinal(x, fmt: Format) -> tuple[np.ndarray, np.ndarray]:
    """Position of each value on the ordered line of ``fmt`` as (magnitude, negative): for
    sign-magnitude patterns ``+mag`` for sign 0 and ``-mag`` for sign 1, so +0 and -0 are both 0 and
    neighbours differ by 1. Magnitudes are uint64 so that float64's full range fits."""
    x = np.asarray(x)
    if fmt.is_integer:
        q = quantize_int(x, fmt).astype(np.int64)
        return np.abs(q).astype(np.uint64), q < 0
    xf = np.asarray(x, dtype=np.float64)
    if np.any(np.isnan(xf)):
        raise ValueError("ulp_distance: NaN has no position on the number line")
    if fmt.dtype is None or x.dtype != fmt.dtype:
        if not np.array_equal(round_to_format(xf, fmt), xf):
            raise ValueError(f"ulp_distance: values not exactly representable in {fmt.name}")
    bits = to_bits(x, fmt).astype(np.uint64)
    shift = np.uint64(fmt.total_bits - 1)
    mag = bits & ((np.uint64(1) << shift) - np.uint64(1))
    return mag, (bits >> shift) != 0


def ulp_distance(a, b, fmt_or_dtype=None):
    """``|pos(a) - pos(b)|``: how many representable values of the format lie between a and b,
    counting one end (1.0 vs its successor = 1; -0 vs +0 = 0; the smallest subnormal vs its
    negative = 2; max finite vs inf = 1). Element-wise, uint64 (float64's extremes are 2^64 - 2^53
    apart, more than int64 holds).

    The format defaults to the dtype of ``a`` (``b`` must then have the same dtype). Values must be
    exactly representable in the format; NaN raises ValueError (a NaN has no position).
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if fmt_or_dtype is None:
        if a.dtype != b.dtype:
            raise ValueError(f"ulp_distance: dtypes differ ({a.dtype} vs {b.dtype}); name the format")
        fmt_or_dtype = a.dtype
    fmt = get_format(fmt_or_dtype)
    mag_a, neg_a = _ordinal(a, fmt)
    mag_b, neg_b = _ordinal(b, fmt)
    same_side = np.maximum(mag_a, mag_b) - np.minimum(mag_a, mag_b)
    return np.where(neg_a == neg_b, same_side, mag_a + mag_b)  # each magnitude < 2^63: no overflow
