"""Designed test vectors, in the spirit of Fasi et al. (2021), one family per property.

Every design is a dot product of length ``K_DESIGN`` written as a list of *products* ``t_k = a_k b_k``
relative to a reference ``1 = 2^s`` (s picked per format so that every term is a product of two
values of the input format); unused positions are 0. Families (``u = 2^-23``, fp32's ulp of 1):

- ``extra_bits/j``:  ``[1, 2^-(24+j), -1]``: the small term survives the alignment iff ``j < p``
  (when all three share a block).  ``extra_bits_rev/j``: ``[2^-(24+j), 1, -1]`` (order).
- ``extra_bits_end/j``: the same at the last three positions (the last block is always
  normalised, so an unnormalised accumulator cannot hide the survivor).
- ``rounding_rev/j``: ``[2^-(24+j), 2^-24, 1]``: a sequential (n_b = 1) chain keeps the sticky
  term only if it survives the alignment against 1.
- ``rounding/j`` and ``rounding_neg/j``: ``+-[1, 2^-24, 2^-(24+j)]``: above the half-way point
  when the last term survives: nearest rounds away from 1, truncation does not.
- ``tie/j``: ``[1, 2^-23, 2^-24 at position j]``: an exact tie (1 + 3/2 u) -> even vs truncation.
- ``block/j``: ``[1, 2^-24, 0, ..., 2^-24 at position j]``: two half-ulps add to one ulp only if
  they meet 1 in one block: the first j where the result drops to 1 is the block size n_b.
- ``halves/m``: ``[1, 2^-24 x m]``: m half-ulps added (with 1) per block; its staircase in m
  shows n_b and the rounding.
- ``cancel_block/j``: ``[1, 2^-26, 0, ..., -1 at position j]``: 2^-26 survives only if 1 and -1 are
  in one block (and p >= 3).
- ``normalise/j``: ``[1, 1, 2^-23, 0.., 2^-23 at j]`` carries (sum 2 + u): an unnormalised
  accumulator keeps the u; and ``[1, -(1 - 2^-11), 2^-30 ..]`` cancellation.
- ``products/j``: ``[-(4 - 2^(2-m)), (2 - 2^-m)^2]`` (m = mantissa bits) at positions 0/j: the exact
  product leaves ``2^-2m``; a product rounded to fp32 (for fp32 inputs) leaves 0.
- ``align/j``: ``[2.25, 2^-(23+j), -2.25]`` with ``2.25 = 1.5 x 1.5``: the exponent used to align
  (value 1 vs exponent sum 0) shifts the surviving bits by one.
- ``random/i``: fixed-seed vectors with mixed exponents and cancellation (all properties at once).

``design_set(fmt)`` returns the families as arrays ``a, b`` (T, K) of exactly representable
values plus names; terms that the format cannot reach are left out and named in ``skipped``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from numerics.formats import get_format, round_to_format

K_DESIGN = 64
# Stage-1 families only use powers of two (insensitive to product exactness and alignment key).
CORE = ("extra_bits", "extra_bits_rev", "extra_bits_end", "rounding_rev", "rounding", "rounding_neg", "tie", "block", "halves",
        "cancel_block", "normalise")


@dataclass
class DesignSet:
    fmt: str
    scale_exp: int                 # s: the reference "1" is 2^s
    names: list = field(default_factory=list)
    a: np.ndarray = None           # (T, K) float64 values of fmt
    b: np.ndarray = None
    skipped: list = field(default_factory=list)

    def family_mask(self, families) -> np.ndarray:
        return np.array([n.split("/")[0] in families for n in self.names])


@functools.lru_cache(maxsize=None)
def _fits_cached(x: float, name: str) -> bool:
    fmt = get_format(name)
    return bool(x == 0 or (abs(x) <= fmt.max_finite and abs(x) >= fmt.smallest_subnormal
                           and round_to_format(np.array([x]), fmt)[0] == x))


def _fits(x: float, fmt) -> bool:
    return _fits_cached(float(x), fmt.name)


def factor(t: float, fmt) -> tuple[float, float] | None:
    """(a, b) in ``fmt`` with a * b == t exactly, or None. Tries b = 2^y, y near half of t's
    exponent first."""
    return _factor(float(t), get_format(fmt).name)


@functools.lru_cache(maxsize=None)
def _factor(t: float, name: str):
    fmt = get_format(name)
    if t == 0:
        return 0.0, 0.0
    lo = int(np.floor(np.log2(fmt.smallest_subnormal)))
    hi = int(np.floor(np.log2(fmt.max_finite)))
    for y in sorted(range(lo, hi + 1), key=lambda y: abs(y - (np.frexp(t)[1] - 1) / 2)):
        b = float(2.0 ** y)
        a = t / b
        if _fits(a, fmt) and _fits(b, fmt) and a * b == t:
            return a, b
    return None


def _scale_exp(fmt) -> int:
    """s for the reference 1 = 2^s: the largest products need room up to 2^(s+3); the tiny ones
    reach 2^(s-56). Centre the span in the format's product range."""
    lo = 2 * int(np.floor(np.log2(fmt.smallest_subnormal)))
    hi = 2 * int(np.floor(np.log2(fmt.max_finite)))
    return int(min(hi - 4, max(lo + 56, (lo + hi) // 2)))


def _families(fmt):
    m = fmt.mantissa_bits
    K = K_DESIGN
    out = []
    for j in range(-14, 34):
        out.append((f"extra_bits/{j}", {0: 1.0, 1: 2.0 ** -(24 + j), 2: -1.0}))
        out.append((f"extra_bits_rev/{j}", {0: 2.0 ** -(24 + j), 1: 1.0, 2: -1.0}))
    for j in range(-14, 34):
        out.append((f"extra_bits_end/{j}", {K - 3: 1.0, K - 2: 2.0 ** -(24 + j), K - 1: -1.0}))
    for j in range(1, 42):
        out.append((f"rounding_rev/{j}", {0: 2.0 ** -(24 + j), 1: 2.0 ** -24, 2: 1.0}))
    for j in range(1, 34):
        out.append((f"rounding/{j}", {0: 1.0, 1: 2.0 ** -24, 2: 2.0 ** -(24 + j)}))
        out.append((f"rounding_neg/{j}", {0: -1.0, 1: -(2.0 ** -24), 2: -(2.0 ** -(24 + j))}))
    for j in range(2, K):
        out.append((f"tie/{j}", {0: 1.0, 1: 2.0 ** -23, j: 2.0 ** -24}))
        out.append((f"block/{j}", {0: 1.0, 1: 2.0 ** -24, j: 2.0 ** -24}))
        out.append((f"cancel_block/{j}", {0: 1.0, 1: 2.0 ** -26, j: -1.0}))
        out.append((f"normalise/{j}", {0: 1.0, 1: 1.0, 2: 2.0 ** -23, j: 2.0 ** -23}))
    for mm in range(1, K):
        out.append((f"halves/{mm}", {0: 1.0, **{k: 2.0 ** -24 for k in range(1, mm + 1)}}))
    for j in range(1, K, 3):
        out.append((f"normalise_cancel/{j}", {0: 1.0, 1: -(1 - 2.0 ** -11), j: 2.0 ** -30,
                                               min(j + 1, K - 1): 2.0 ** -31}))
        out.append((f"products/{j}", {0: (-2.0, 2 - 2.0 ** (1 - m)), j: (2 - 2.0 ** -m, 2 - 2.0 ** -m)}))
    for j in range(-2, 30):
        out.append((f"align/{j}", {0: (1.5, 1.5), 1: 2.0 ** -(23 + j), 2: (-1.5, 1.5)}))
        out.append((f"align_carry/{j}", {0: (1.5, 1.5), 1: (1.5, 1.5), 2: 2.0 ** -(22 + j)}))
    return out


def _random_rows(fmt, rng, count, K):
    """Mixed exponents (+-8 binades around 1) and cancellation: random products paired with
    their near-negatives."""
    spread = 8 if fmt.exponent_bits >= 5 else 2
    a = rng.standard_normal((count, K)) * np.exp2(rng.integers(-spread, spread + 1, (count, K)))
    b = rng.standard_normal((count, K))
    half = K // 2
    a[:, half:] = -a[:, :half] * (1 + rng.integers(-3, 4, (count, half)) * 2.0 ** -(fmt.mantissa_bits))
    b[:, half:] = b[:, :half]
    return a, b


def _design_row(terms, K: int, s: int, fmt):
    """Operands (a, b) of length K whose products are terms[k] * 2^s at position k (0 elsewhere), or
    None when the format cannot hold them. A term is a product value (factored by `factor`) or an explicit
    pair (x, y): a = x 2^(s//2), b = y 2^(s - s//2)."""
    ra, rb = np.zeros(K), np.zeros(K)
    for k, t in terms.items():
        if isinstance(t, tuple):
            x, y = t[0] * 2.0 ** (s // 2), t[1] * 2.0 ** (s - s // 2)
            ab = (x, y) if _fits(x, fmt) and _fits(y, fmt) else None
        else:
            ab = factor(t * 2.0 ** s, fmt)
        if ab is None:
            return None
        ra[k], rb[k] = ab
    return ra, rb


def _add_design(ds, rows_a, rows_b, name, row) -> None:
    """Append a design row under `name`, or list the name as skipped when the format cannot hold it."""
    if row is None:
        ds.skipped.append(name)
        return
    ds.names.append(name)
    rows_a.append(row[0])
    rows_b.append(row[1])


K_PROMOTE = 512


def promotion_set(fmt_name: str) -> DesignSet:
    """Length-512 designs for a two-level accumulation (the unit's sum added into an fp32 register
    every P products): ``promote/j`` = ``[1, 0.., 1.5u at j]`` (inside one unit sum a truncating
    unit gives 1 + u, across a promotion the fp32 add gives 1 + 2u) and ``promote_tiny/j`` =
    ``[1, 0.., 2^-20 at j]`` (a unit keeping few bits drops it; a promotion keeps it)."""
    fmt = get_format(fmt_name)
    s = _scale_exp(fmt)
    ds = DesignSet(fmt=fmt_name, scale_exp=s)
    rows_a, rows_b = [], []
    for j in range(8, K_PROMOTE, 8):
        for name, terms in ((f"promote/{j}", {0: 1.0, j: (1.5, 2.0 ** -23)}),
                            (f"promote_tiny/{j}", {0: 1.0, j: 2.0 ** -20})):
            _add_design(ds, rows_a, rows_b, name, _design_row(terms, K_PROMOTE, s, fmt))
    ds.a = np.vstack(rows_a) if rows_a else np.zeros((0, K_PROMOTE))
    ds.b = np.vstack(rows_b) if rows_b else np.zeros((0, K_PROMOTE))
    return ds


def design_set(fmt_name: str, *, seed: int = 0, random_rows: int = 64) -> DesignSet:
    fmt = get_format(fmt_name)
    s = _scale_exp(fmt)
    ds = DesignSet(fmt=fmt_name, scale_exp=s)
    rows_a, rows_b = [], []
    for name, terms in _families(fmt):
        _add_design(ds, rows_a, rows_b, name, _design_row(terms, K_DESIGN, s, fmt))
    rng = np.random.default_rng(seed)
    ra, rb = _random_rows(fmt, rng, random_rows, K_DESIGN)
    ra = round_to_format(ra, fmt)
    rb = round_to_format(rb, fmt)
    ra = np.where(np.isfinite(ra) & np.isfinite(rb), ra, 0.0)
    rb = np.where(np.isfinite(rb), rb, 0.0)
    ds.names += [f"random/{i}" for i in range(random_rows)]
    ds.a = np.vstack(rows_a + [ra])
    ds.b = np.vstack(rows_b + [rb])
    return ds
