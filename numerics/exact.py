"""Exact arithmetic: exact values and sums as Fractions, correct rounding, and a correctly rounded FMA.

* ``exact_value`` / ``round_fraction``: every finite binary float is a dyadic rational, so
  ``Fraction(float(x))`` is exact; ``round_fraction`` rounds a rational into a format with integer
  arithmetic only.
* ``exact_sum``: write every element as ``sig * 2^(e - P)`` with an integer significand
  ``|sig| < 2^P`` (``np.frexp``); add the significands per exponent with ``np.bincount`` (float64
  weights: every partial sum is an integer below ``chunk * 2^P <= 2^53``, so float64 adds them
  exactly), then combine the few hundred per-exponent integers with Python ints. float64 inputs are
  split into two 27-bit halves first so that the same bound holds.
* ``fma``: for float32/float16/bfloat16 (and the fp8 formats) ``a*b`` is exact in float64
  (``2p <= 48 <= 53`` bits, exponents far inside float64's range). ``s = fl64(a*b + c)`` plus
  TwoSum's exact error ``err`` give the exact value ``s + err``. Round it *to odd* in float64 (if
  ``err != 0`` and ``s`` has an even last bit, step ``s`` one ulp towards ``err``; the rounded
  value then records "inexact" in its last bit), then round to the target with nearest-even:
  rounding to odd with at least ``p + 2`` bits followed by rounding to nearest in ``p`` bits equals
  rounding to nearest directly (Boldo & Melquiond 2008). The exact sum is a multiple of ``2^-298``
  so it is never subnormal in float64 and the float64 step really has 53 bits.

  The naive ``round(fl64(a*b + c))`` is wrong whenever the exact value is within half a float64
  ulp of a target midpoint without being on it, e.g. ``a*b`` exactly a midpoint and ``|c|`` below
  ``2^-54 |a*b|``. float32 and bfloat16 (wide exponent range) have such cases; float16 has none
  (``|c| >= 2^-24`` while midpoints of ``a*b`` lie below ``2^16``, and a product's 22 bits cannot
  hold a midpoint bit and a bit 53 places lower). The tests construct the cases and check both.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from .formats import Format, cast, get_format, ROUNDING_MODES

__all__ = ["exact_value", "round_fraction", "exact_sum", "exact_sum_float64", "fma", "mul_add"]

_CHUNK = 1 << 22  # elements per bincount pass: bounds memory; the exactness bound is below


def exact_value(x) -> Fraction:
    """The exact rational value of a finite float (any NumPy/ml_dtypes float scalar or 0-d array)."""
    v = float(np.asarray(x).astype(np.float64))  # every format here widens to float64 exactly
    if not math.isfinite(v):
        raise ValueError(f"exact_value: {v!r} is not a finite number")
    return Fraction(v)


def round_fraction(q, fmt, mode: str = "nearest_even") -> float:
    """Round a rational ``q`` into ``fmt``; returns the value as a Python float.

    Exact integer arithmetic: with ``E = floor(log2|q|)`` and quantum ``2^k``,
    ``k = max(E, emin) - mantissa_bits``, split ``|q| / 2^k`` into integer part and remainder and
    round (half to even / toward zero / half away). Overflow as in ``round_to_format``: inf (NaN for
    float8_e4m3fn) under the nearest modes, max finite under ``toward_zero``. An exact zero gives
    +0.0 (a Fraction carries no sign of zero).
    """
    fmt = get_format(fmt)
    if mode not in ROUNDING_MODES:
        raise ValueError(f"unknown rounding mode {mode!r}; valid modes: {', '.join(ROUNDING_MODES)}")
    q = Fraction(q)
    if q == 0:
        return 0.0
    neg = q < 0
    a = -q if neg else q
    num, den = a.numerator, a.denominator
    if fmt.is_integer:
        k = 0
    else:
        e = num.bit_length() - den.bit_length()       # floor(log2 a) is e or e - 1
        if (num << max(-e, 0)) < (den << max(e, 0)):
            e -= 1
        k = max(e, fmt.emin) - fmt.mantissa_bits
    if k < 0:
        num <<= -k
    else:
        den <<= k
    ip, rem = divmod(num, den)
    if mode == "nearest_even":
        ip += (2 * rem > den) or (2 * rem == den and ip & 1)
    elif mode == "nearest_away":
        ip += 2 * rem >= den
    if fmt.is_integer:
        val = -ip if neg else ip
        if not fmt.min_finite <= val <= fmt.max_finite:
            raise ValueError(f"value {float(q)!r} is outside {fmt.name}'s range after rounding")
        return float(val)
    if ip.bit_length() + k > 1024 or math.ldexp(ip, k) > fmt.max_finite:
        if mode == "toward_zero":
            big = fmt.max_finite
        else:
            big = math.inf if fmt.has_inf else math.nan
        return -big if neg else big
    v = math.ldexp(ip, k)
    return -v if neg else v


def _check_finite(c: np.ndarray, offset: int):
    if not np.all(np.isfinite(c)):
        i = int(np.flatnonzero(~np.isfinite(c))[0])
        raise ValueError(f"exact_sum: element {offset + i} is {c[i]!r}; the exact sum needs finite "
                         f"inputs (check for NaN/Inf first)")


def exact_sum(x) -> Fraction:
    """The exact sum of a float array as a Fraction (NaN/Inf raise ValueError naming them).

    Memory is bounded (``2^22`` elements at a time); 2^26 float32 take about a second.
    """
    x = np.asarray(x)
    if x.dtype.kind != "f" and not str(x.dtype).startswith(("bfloat16", "float8")):
        x = x.astype(np.float64)
    x = x.ravel()
    wide = x.dtype == np.float64
    # Bucket i holds exponent e = i - off; element = sig * 2^(e - P), |sig| < 2^P (P = 24 or 53).
    P, off, piece_bits = (53, 1074, 27) if wide else (24, 149, 24)
    assert _CHUNK * 2 ** piece_bits <= 2 ** 53  # partial bucket sums stay exact integers
    nb = off + 1025
    total = 0  # sum of bucket_i * 2^i, i.e. the exact sum times 2^(off + P)
    for i0 in range(0, x.size, _CHUNK):
        c = x[i0:i0 + _CHUNK]
        c = c.astype(np.float64 if wide else np.float32)  # narrow floats widen exactly
        _check_finite(c, i0)
        m, e = np.frexp(c)
        idx = (e.astype(np.int64) + off)
        sig = np.ldexp(m, P).astype(np.float64)       # exact integers
        if wide:
            hi = np.trunc(sig / 2.0 ** 27)                # exact: power-of-two scaling
            lo = sig - hi * 2.0 ** 27                     # exact, |lo| < 2^27, |hi| < 2^26
            parts = ((np.bincount(idx, weights=hi, minlength=nb), 27),
                     (np.bincount(idx, weights=lo, minlength=nb), 0))
        else:
            parts = ((np.bincount(idx, weights=sig, minlength=nb), 0),)
        for b, shift in parts:
            for i in np.flatnonzero(b):
                total += int(b[i]) << (int(i) + shift)
    return Fraction(total, 1 << (off + P))


def exact_sum_float64(x) -> float:
    """The exact sum of ``x`` correctly rounded (nearest-even) to float64."""
    return round_fraction(exact_sum(x), "float64")


def _fma_format(fmt) -> Format:
    fmt = get_format(fmt)
    if fmt.is_integer or 2 * fmt.precision > 53 or fmt.dtype is None:
        raise ValueError(f"fma/mul_add support formats whose products are exact in float64 "
                         f"(float32, float16, bfloat16, fp8), not {fmt.name!r}")
    return fmt


def fma(a, b, c, fmt) -> np.ndarray:
    """Correctly rounded ``a*b + c`` (one rounding, nearest-even) in ``fmt``, element-wise.

    Inputs are first ``cast`` into ``fmt`` (a no-op for arrays of that dtype). Special values follow
    IEEE 754 fusedMultiplyAdd: ``inf*0`` and ``inf - inf`` give NaN, overflow gives inf (NaN for
    e4m3fn), and an exact zero result is +0 unless ``a*b`` and ``c`` are both zeros of negative sign
    (then -0) - exactly what float64's own ``a*b + c`` does, since ``a*b`` is exact in float64.
    """
    fmt = _fma_format(fmt)
    A, B, C = np.broadcast_arrays(*(cast(v, fmt).astype(np.float64) for v in (a, b, c)))
    with np.errstate(invalid="ignore", over="ignore"):
        p = A * B                            # exact
        s = p + C
        bb = s - p                           # TwoSum (Knuth): s + err == p + C exactly
        err = (p - (s - bb)) + (C - bb)
        err = np.where(np.isfinite(s), err, 0.0)
    odd_step = (err != 0) & ((s.view(np.int64) & 1) == 0)
    if np.any(odd_step):
        s = np.where(odd_step, np.nextafter(s, np.copysign(np.inf, err)), s)
    return cast(s, fmt)


def mul_add(a, b, c, fmt) -> np.ndarray:
    """Unfused ``round(round(a*b) + c)``: the product and the sum each rounded (nearest-even) to
    ``fmt``. The sum is done as ``fma(round(a*b), 1, c)``, i.e. one correctly rounded addition."""
    fmt = _fma_format(fmt)
    A, B = (cast(v, fmt).astype(np.float64) for v in (a, b))
    with np.errstate(invalid="ignore", over="ignore"):
        prod = cast(A * B, fmt)
    return fma(prod, np.ones((), fmt.dtype), c, fmt)
