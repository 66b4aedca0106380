"""Comparing results: bit equality, ULP distance, relative error, distinct results.

All comparisons that decide "same or different" use bit patterns (``view`` as unsigned ints), so
``-0.0 != +0.0`` and two NaNs are equal exactly when their bits are.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from .formats import ulp_distance

__all__ = ["bitwise_equal", "max_ulp", "count_differing", "relative_error", "distinct_count",
           "max_relative_difference"]

_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _bits(a) -> np.ndarray:
    a = np.asarray(a)
    return np.ascontiguousarray(a).view(_UINT[a.dtype.itemsize])


def _pair(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.dtype != b.dtype:
        raise ValueError(f"dtypes differ: {a.dtype} vs {b.dtype}")
    return a, b


def bitwise_equal(a, b) -> bool:
    """True when ``a`` and ``b`` (same shape and dtype, else ValueError) have identical bits."""
    a, b = _pair(a, b)
    return bool(np.array_equal(_bits(a), _bits(b)))


def count_differing(a, b) -> int:
    """How many elements differ in their bit patterns."""
    a, b = _pair(a, b)
    return int(np.count_nonzero(_bits(a) != _bits(b)))


def max_ulp(a, b) -> int:
    """Largest ``ulp_distance`` between corresponding elements (format = the common dtype).
    NaN anywhere raises ValueError (see ``formats.ulp_distance``); 0 for empty arrays."""
    a, b = _pair(a, b)
    if a.size == 0:
        return 0
    return int(np.max(ulp_distance(a, b)))


def relative_error(value, exact) -> float:
    """``|value - exact| / |exact|``, computed exactly (Fractions) and rounded to a float.

    ``exact`` is a Fraction or a float. When ``exact == 0`` the relative error is undefined and the
    *absolute* error ``|value|`` is returned instead. A NaN value gives NaN, an infinite one inf."""
    v = float(np.asarray(value).astype(np.float64))
    if np.isnan(v):
        return float("nan")
    if np.isinf(v):
        return float("inf")
    ex = Fraction(exact)
    err = abs(Fraction(v) - ex)
    return float(err if ex == 0 else err / abs(ex))


def distinct_count(values) -> int:
    """Number of distinct bit patterns among ``values`` (so -0/+0 count as two, NaNs by bits)."""
    return int(np.unique(_bits(np.asarray(values).ravel())).size)


def max_relative_difference(a, b) -> float:
    """``max |a - b| / max(|a|, |b|)`` over elements, in float64 (pairs of zeros count 0; a NaN
    element makes the result NaN; inf vs finite gives NaN or inf as float64 does)."""
    a, b = _pair(a, b)
    if a.size == 0:
        return 0.0
    x, y = a.astype(np.float64), b.astype(np.float64)
    den = np.maximum(np.abs(x), np.abs(y))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den == 0, 0.0, np.abs(x - y) / np.where(den == 0, 1.0, den))
    r = np.where(np.isnan(x) | np.isnan(y), np.nan, r)
    return float(np.max(r))
