"""The sums that collectives compute: W ranks each hold an array, and an all-reduce gives every rank the
element-wise sum. What order the W values of one element are added in is the library's choice, and it
changes the bits (docs/collective.md):

* ``rank_order_sum``: the fixed order ``((p[0] + p[1]) + p[2]) + ... + p[W-1]`` for every element (or any
  other fixed permutation of the ranks): what an all-gather followed by a sum in rank order computes, on
  every rank and every run (probes.collective's ``fixed_order``).
* ``ring_sum``: the textbook ring all-reduce (reduce-scatter, then all-gather): the array is cut into W
  contiguous chunks (``numpy.array_split``), and chunk ``c`` is reduced along the ring starting at rank
  ``c + 1``: ``((p[c+1] + p[c+2]) + ...) + p[c]`` (ranks mod W). A model of the order, not of a library's
  exact chunking (NCCL cuts the buffer further into slices and channels); with W = 2 every order gives the
  same bits (one addition, and IEEE addition is commutative).
* ``exact_rank_sum``: the exact element-wise sum, correctly rounded (nearest-even) to the parts' format,
  and its exact value as float64 where that is exact (``exact_values``): the reference that the
  error of every order is measured against (probes.collective's ``*_vs_exact`` metrics).

Every addition is one NumPy / ml_dtypes addition in the parts' dtype: for float16 and bfloat16 that is a
correctly rounded addition (numerics.orders explains why the float32 intermediate is innocuous).
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from .exact import exact_sum, round_fraction
from .formats import cast, ulp_distance
from .orders import ACC_DTYPES

__all__ = ["rank_order_sum", "ring_sum", "ring_chunks", "exact_values", "exact_rank_sum", "sum_errors"]


def _parts(parts) -> np.ndarray:
    """The W ranks' arrays as one [W, n] array of a supported float dtype (ValueError naming what is wrong)."""
    if isinstance(parts, np.ndarray):
        p = parts
    else:
        items = [np.asarray(x) for x in parts]
        if not items:
            raise ValueError("parts: no ranks given (need at least one array)")
        if len({x.shape for x in items}) > 1 or len({x.dtype for x in items}) > 1:
            raise ValueError("parts: every rank's array must have the same shape and dtype, got "
                             + ", ".join(f"{x.shape} {x.dtype}" for x in items))
        p = np.stack(items)
    if p.ndim < 2 or p.shape[0] < 1:
        raise ValueError(f"parts: expected W >= 1 arrays (shape [W, ...]), got shape {p.shape}")
    if p.dtype.name not in ACC_DTYPES:
        raise ValueError(f"parts: unsupported dtype {p.dtype}; valid: {', '.join(ACC_DTYPES)}")
    return p.reshape(p.shape[0], -1)


def rank_order_sum(parts, order=None) -> np.ndarray:
    """``((p[o0] + p[o1]) + p[o2]) + ...`` element-wise, in the parts' dtype; `order` is a permutation of
    ``range(W)`` (default: rank order 0, 1, ..., W-1). Returns the sum with the shape of one part."""
    shape = np.asarray(parts[0]).shape
    p = _parts(parts)
    W = p.shape[0]
    order = list(range(W)) if order is None else [int(r) for r in order]
    if sorted(order) != list(range(W)):
        raise ValueError(f"order must be a permutation of range({W}), got {order}")
    s = p[order[0]].copy()
    for r in order[1:]:
        s = s + p[r]
    return s.reshape(shape)


def ring_chunks(n: int, world: int) -> list[tuple[int, int]]:
    """The (start, stop) of the W chunks of the textbook ring (numpy.array_split's cut: the first n % W
    chunks one element longer)."""
    if world < 1 or n < 0:
        raise ValueError(f"ring_chunks: need world >= 1 and n >= 0, got world={world}, n={n}")
    q, r = divmod(n, world)
    bounds, start = [], 0
    for c in range(world):
        stop = start + q + (c < r)
        bounds.append((start, stop))
        start = stop
    return bounds


def ring_sum(parts) -> np.ndarray:
    """The textbook ring all-reduce's result (module docstring): chunk c summed in the rank order
    c+1, c+2, ..., c (mod W)."""
    shape = np.asarray(parts[0]).shape
    p = _parts(parts)
    W, n = p.shape
    out = np.empty(n, dtype=p.dtype)
    for c, (a, b) in enumerate(ring_chunks(n, W)):
        if a < b:
            out[a:b] = rank_order_sum(p[:, a:b], [(c + 1 + k) % W for k in range(W)])
    return out.reshape(shape)


def _two_sum(a, b):
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def exact_values(parts) -> tuple[np.ndarray, np.ndarray]:
    """(values, exact): the element-wise sums accumulated in float64, and a mask of the elements whose float64
    value IS the exact sum (every TwoSum error zero: always so for float16/bfloat16 parts of a few ranks, and
    for float32 parts whose exponents are within ~29 of each other). The others need `exact_rank_sum`'s
    Fraction path."""
    p = _parts(parts)
    if p.dtype == np.float64:
        q = p
    else:
        q = p.astype(np.float64)              # widening is exact
    s = q[0].copy()
    exact = np.isfinite(s)
    with np.errstate(invalid="ignore", over="ignore"):
        for r in range(1, q.shape[0]):
            s, err = _two_sum(s, q[r])
            exact &= (err == 0) & np.isfinite(s)
    return s, exact


def exact_rank_sum(parts) -> np.ndarray:
    """The exact element-wise sum of the W ranks' arrays, correctly rounded (nearest-even) to their dtype:
    the float64 accumulation where it is exact (`exact_values`), else numerics.exact.exact_sum (Fractions)
    for that element. NaN/Inf inputs raise ValueError."""
    shape = np.asarray(parts[0]).shape
    p = _parts(parts)
    if not np.all(np.isfinite(p.astype(np.float64))):
        raise ValueError("exact_rank_sum: the parts hold NaN or Inf; the exact sum needs finite inputs")
    values, exact = exact_values(p)
    out = cast(values, p.dtype.name) if p.dtype != np.float64 else values.copy()
    for i in np.flatnonzero(~exact):
        out[i] = round_fraction(exact_sum(p[:, i]), p.dtype.name)
    return out.reshape(shape)


def sum_errors(result, parts) -> dict:
    """How far a computed sum `result` (the parts' dtype and one part's shape) is from the exact sum:
    differ_from_exact (fraction of elements whose bits differ from the correctly rounded sum), max_ulp_vs_exact
    (ulps in the dtype from it), max_rel_err_vs_exact (max |result - exact| / |exact| over elements with a
    nonzero exact sum, from the exact value: Fractions where float64 is not exact), ulps_vs_exact (how many
    elements are 0, 1, 2 and 3 or more ulps from it: the max is set by sums that cancel to near zero)."""
    p = _parts(parts)
    r = np.asarray(result).reshape(-1)
    if r.dtype != p.dtype or r.size != p.shape[1]:
        raise ValueError(f"result: expected {p.shape[1]} elements of {p.dtype}, got {r.size} of {r.dtype}")
    rounded = exact_rank_sum(p)
    values, exact = exact_values(p)
    rv = r.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(exact & (values != 0), np.abs(rv - values) / np.abs(np.where(values == 0, 1, values)), 0.0)
    worst = float(rel.max()) if rel.size else 0.0
    for i in np.flatnonzero(~exact):
        ex = exact_sum(p[:, i])
        if ex != 0:
            worst = max(worst, float(abs(Fraction(float(rv[i])) - ex) / abs(ex)))
    d = ulp_distance(r, rounded, p.dtype.name) if r.size else np.zeros(0)
    hist = np.bincount(np.minimum(d, 3).astype(np.int64), minlength=4) if r.size else np.zeros(4, np.int64)
    return {"differ_from_exact": float(np.count_nonzero(d) / max(r.size, 1)),
            "max_ulp_vs_exact": int(d.max()) if r.size else 0,
            "max_rel_err_vs_exact": worst,
            "ulps_vs_exact": {"0": int(hist[0]), "1": int(hist[1]), "2": int(hist[2]), "3+": int(hist[3])}}
