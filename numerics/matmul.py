"""An exact, parameterised model of a matrix unit's (tensor core's) dot product.

Fasi, Higham, Mikaitis and Pranesh ("Numerical behavior of NVIDIA tensor cores", PeerJ CS 2021)
describe a tensor core's ``d = c + sum_k a_k * b_k`` as a chain of *block FMAs*: each step takes
the running accumulator ``c`` together with ``n_b`` products and

1. forms the products (exactly, or rounded to the accumulator format),
2. finds the largest exponent ``E`` among the block's nonzero terms (the products and ``c``),
3. aligns every term's significand to ``E``, keeping only the bits of weight ``>= 2^(E - 23 - p)``
   (fp32's 24 bits plus ``p`` extra bits; the rest are dropped: truncation toward zero of each
   aligned term, as the hardware shifts them out),
4. adds the aligned integers exactly, and
5. rounds the sum into the accumulator (toward zero or to nearest-even); with ``normalize=False``
   the intermediate keeps the block's alignment (quantum ``2^(E-23)``, carries kept, leading zeros
   after cancellation not recovered) and only the final step rounds into fp32.

``MatmulModel`` holds these parameters; ``model_dot`` / ``model_matmul`` evaluate the model
exactly with integer arithmetic on the aligned significands (int64 where the widths fit, Python
ints in object arrays where they do not, e.g. ``extra_bits=None`` = infinitely many extra bits).
With ``exact_products=True``, ``extra_bits=None`` and ``rounding="nearest_even"`` a single block
gives the correctly rounded sum; ``block_size=1`` with those gives a chain of correctly rounded
fused multiply-adds (what an fp32 SGEMM on CUDA cores does per thread).

``promote_every = P`` models a two-level GEMM: the unit's chain restarts from 0 every P products
and each partial result is added into an fp32 register with a correctly rounded (nearest-even)
fp32 add, as DeepSeek-V3's FP8 kernels do by hand (and cuBLAS's fp8 GEMMs may do internally).

``sum_bits = s`` (default 24): the block's normalised result keeps only ``s`` significant bits
(rounded by ``rounding``) before it becomes the accumulator: an accumulator narrower than fp32,
as the fp8 tensor-core path is (about 13-14 bits, DeepSeek-V3 report section 3.3.2).

``split_k = S`` (default 1) models a split-K GEMM: K is cut into contiguous slices of
``ceil(K / S)`` products (rounded up to a multiple of ``split_align``, default 1; see
``split_k_slices``), each slice runs the whole chain (with ``promote_every``) from 0, and a
reduction adds the slices' fp32 results in slice order with correctly rounded (nearest-even) fp32
adds (``part_0 + part_1``, then ``+ part_2`` ...; ``c`` is added to ``part_0``'s chain as usual).
cuBLAS's ``splitKreduce_kernel`` after a sliced GEMM does this, and so does the batch-invariant
Triton matmul's split-K (probes.gemm.triton_splitk, ``split_align`` 256: every slice a whole number
of k-tiles whatever the tile config).

``align_to`` says which exponent a product has for step 2: ``"value"`` = ``floor(log2|a*b|)``;
``"exponent_sum"`` = ``e_a + e_b`` (the hardware adds exponents; the significand product lies in
[1, 4), so one more bit survives when the largest term's significand product is >= 2). Inputs in
the subnormal range count with the format's minimum exponent there.

Nothing here is a measured result: the parameters of a given GPU are found by
``probes.accumulator`` and tested bit for bit against this model.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from numerics.formats import get_format, round_to_format

__all__ = ["MatmulModel", "model_dot", "model_matmul", "dot_rows_params", "INPUT_FORMATS",
           "MIXED_FORMATS", "operand_formats",
           "check_representable", "add_fp32", "split_k_slices"]

#: Mixed-operand formats: name -> (A's format, B's format), e.g. an fp8 GEMM of e4m3 x e5m2.
MIXED_FORMATS = {"float8_e4m3fn_x_e5m2": ("float8_e4m3fn", "float8_e5m2")}
INPUT_FORMATS = ("float16", "bfloat16", "tf32", "float8_e4m3fn", "float8_e5m2", "float32",
                 *MIXED_FORMATS)


def operand_formats(name: str) -> tuple[str, str]:
    """(A's format, B's format) of an input format name (the same twice unless mixed)."""
    return MIXED_FORMATS.get(name, (name, name))


_ROUNDINGS = ("toward_zero", "nearest_even")
_ACC = get_format("float32")
_INT64_WIDTH = 60          # aligned sums up to 2^60 stay in int64; wider goes to Python ints


@dataclass(frozen=True)
class MatmulModel:
    """Parameters of one block-FMA dot product (see the module docstring)."""

    input_format: str = "float16"
    block_size: int = 16               # n_b: products per step, added together with c
    extra_bits: int | None = 3         # p: bits kept below fp32's 24 (may be negative); None = all
    rounding: str = "toward_zero"      # rounding of each block's aligned sum into the accumulator
    final_rounding: str | None = None  # rounding of the last step (None: same as ``rounding``)
    exact_products: bool = True        # False: each product rounded to fp32 (nearest-even) first
    normalize: bool = True             # False: intermediates keep the block's alignment
    align_to: str = "value"            # "value" or "exponent_sum" (see module docstring)
    align_cut: str = "toward_zero"     # bits shifted out of an aligned term: "toward_zero" (sign-
                                       # magnitude) or "floor" (two's-complement arithmetic shift)
    accumulator: str = "float32"
    promote_every: int | None = None   # every P products the unit's sum (started from 0) is added
                                       # to an fp32 register, rounded to nearest (two-level GEMM)
    sum_bits: int = 24                 # significant bits a block's result keeps (fp32: 24)
    split_k: int = 1                   # K in S contiguous slices, fp32 partials added in order
    split_align: int = 1               # slice length rounded up to a multiple of this (split_k_slices)

    def __post_init__(self):
        if self.input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format must be one of {INPUT_FORMATS}, not {self.input_format!r}")
        if not isinstance(self.block_size, (int, np.integer)) or self.block_size < 1:
            raise ValueError(f"block_size must be a positive integer, not {self.block_size!r}")
        if self.extra_bits is not None and not (-23 <= int(self.extra_bits) <= 200):
            raise ValueError(f"extra_bits must be None or in [-23, 200], not {self.extra_bits!r}")
        for name in ("rounding", "final_rounding"):
            v = getattr(self, name)
            if not (v in _ROUNDINGS or (name == "final_rounding" and v is None)):
                raise ValueError(f"{name} must be one of {_ROUNDINGS}, not {v!r}")
        if self.align_cut not in ("toward_zero", "floor"):
            raise ValueError(f"align_cut must be 'toward_zero' or 'floor', not {self.align_cut!r}")
        if self.align_to not in ("value", "exponent_sum"):
            raise ValueError(f"align_to must be 'value' or 'exponent_sum', not {self.align_to!r}")
        if self.accumulator != "float32":
            raise ValueError("only a float32 accumulator is modelled")
        if self.promote_every is not None and (int(self.promote_every) < 1
                                               or int(self.promote_every) % self.block_size):
            raise ValueError(f"promote_every must be a positive multiple of block_size, "
                             f"not {self.promote_every!r}")
        if not isinstance(self.sum_bits, (int, np.integer)) or not 2 <= self.sum_bits <= 24:
            raise ValueError(f"sum_bits must be an integer in [2, 24], not {self.sum_bits!r}")
        if not isinstance(self.split_k, (int, np.integer)) or self.split_k < 1:
            raise ValueError(f"split_k must be a positive integer, not {self.split_k!r}")
        if not isinstance(self.split_align, (int, np.integer)) or self.split_align < 1:
            raise ValueError(f"split_align must be a positive integer, not {self.split_align!r}")

    def describe(self) -> str:
        p = "inf" if self.extra_bits is None else str(self.extra_bits)
        fin = "" if self.final_rounding in (None, self.rounding) else f", final {self.final_rounding}"
        promo = "" if self.promote_every is None else f" promote/{self.promote_every}"
        promo += "" if self.align_cut == "toward_zero" else " cut=floor"
        promo += "" if self.sum_bits == 24 else f" sum_bits={self.sum_bits}"
        promo += "" if self.split_k == 1 else f" split_k={self.split_k}"
        promo += "" if self.split_align == 1 else f" split_align={self.split_align}"
        return (f"n_b={self.block_size} p={p} {self.rounding}{fin} "
                f"products={'exact' if self.exact_products else 'rounded'} "
                f"{'normalised' if self.normalize else 'unnormalised'} align={self.align_to}{promo}")

    def as_dict(self) -> dict:
        return asdict(self)


def check_representable(x, fmt_name: str, what: str) -> np.ndarray:
    """``x`` as float64, refusing NaN/inf and values that are not exactly in ``fmt_name``."""
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what} holds NaN or inf; the matmul model takes finite inputs only")
    r = round_to_format(x, get_format(fmt_name))
    bad = r != x
    if np.any(bad):
        i = np.flatnonzero(bad.ravel())[0]
        raise ValueError(f"{what} value {x.ravel()[i]!r} (index {int(i)}) is not representable in "
                         f"{fmt_name}; round it first (numerics.formats.cast)")
    return x


def _exponent(x: np.ndarray) -> np.ndarray:
    """floor(log2|x|) for nonzero x (int64); 0 for zeros."""
    return (np.frexp(x)[1] - 1).astype(np.int64)


def _bit_length(a: np.ndarray) -> np.ndarray:
    """Bit length of nonnegative integers (int64 or object arrays), exactly."""
    if a.dtype == object:
        return np.array([int(v).bit_length() for v in a.ravel()], dtype=np.int64).reshape(a.shape)
    e = np.frexp(a.astype(np.float64))[1].astype(np.int64)  # may be one too big near 2^k
    too_big = (e > 0) & ((a >> np.maximum(e - 1, 0)) == 0)
    return e - too_big


def _round_shift(A, r, nearest):
    """Nonnegative integers ``A`` divided by ``2^r`` (r >= 0) and rounded: to nearest-even where
    ``nearest`` (bool per row) is True, else toward zero."""
    if A.dtype == object:
        rr = r.astype(object)
        Q = A >> rr
        rem = A - (Q << rr)
        half = np.where(r > 0, np.left_shift(np.ones_like(A), np.maximum(r - 1, 0).astype(object)), 0)
        up = (rem > half) | ((rem == half) & (r > 0) & ((Q & 1) == 1))
        return Q + (up & nearest).astype(np.int64)
    big = r >= 62
    rc = np.minimum(r, 61)
    Q = A >> rc
    rem = A - (Q << rc)
    half = np.where(rc > 0, np.left_shift(np.int64(1), np.maximum(rc - 1, 0)), 0)
    up = (rem > half) | ((rem == half) & (rc > 0) & ((Q & 1) == 1))
    return np.where(big, 0, Q + (up & nearest))


def _block(terms, keys, p, nearest, normalize, floor_cut=False, sum_bits=24) -> np.ndarray:
    """One block FMA over rows: ``terms`` (n, m) float64 (exact), ``keys`` (n, m) alignment
    exponents; per row: ``p`` extra bits (int64 array, or None = all bits), ``nearest`` (bool:
    nearest-even, else toward zero), ``normalize`` (bool); ``sum_bits``: significant bits kept
    when normalising. Returns the new accumulators' values."""
    nz = terms != 0
    any_nz = nz.any(axis=1)
    E = np.where(nz, keys, np.iinfo(np.int64).min).max(axis=1)
    E = np.where(any_nz, E, 0)
    frac, e = np.frexp(terms)
    sig = np.ldexp(frac, 53).astype(np.int64)           # exact: |sig| < 2^53
    lsb = e.astype(np.int64) - 53
    if p is None:                                         # keep every bit: grid at the smallest lsb
        g = np.where(nz, lsb, np.iinfo(np.int64).max).min(axis=1)
        g = np.where(any_nz, g, 0)
        width = int((E - g).max(initial=0)) + 3 + terms.shape[1].bit_length()
    else:
        g = E - 23 - p
        width = 26 + int(np.max(p)) + terms.shape[1].bit_length()
    d = lsb - g[:, None]
    if width <= _INT64_WIDTH:
        dl = np.clip(d, 0, 62)
        dr = np.clip(-d, 0, 62)
        mag = np.abs(sig)
        if floor_cut:                                     # arithmetic shift of the signed value
            aligned = np.where(d >= 0, sig << dl, sig >> dr)
            aligned = np.where(nz, aligned, 0)
        else:
            aligned = np.where(d >= 0, mag << dl, mag >> dr)
            aligned = np.where(nz, aligned, 0) * np.sign(sig)
        S = aligned.sum(axis=1)
    else:
        mag = np.abs(sig).astype(object)
        dd = d.astype(object)
        if floor_cut:
            so = sig.astype(object)
            aligned = np.where(d >= 0, so << np.where(d >= 0, dd, 0), so >> np.where(d < 0, -dd, 0))
            aligned = np.where(nz, aligned, 0)
        else:
            aligned = np.where(d >= 0, mag << np.where(d >= 0, dd, 0), mag >> np.where(d < 0, -dd, 0))
            aligned = np.where(nz, aligned, 0) * np.sign(sig).astype(object)
        S = aligned.sum(axis=1)
    neg = S < 0
    A = np.where(neg, -S, S)
    L = g + _bit_length(A) - 1
    q_norm = np.maximum(L, _ACC.emin) - (int(sum_bits) - 1)
    q_keep = np.maximum(E - _ACC.mantissa_bits, _ACC.emin - _ACC.mantissa_bits)
    q = np.where(normalize, q_norm, q_keep)
    r = q - g
    Q = _round_shift(A, np.maximum(r, 0), nearest)
    if A.dtype == object:
        Qf = np.array([float(v) for v in Q], dtype=np.float64)     # < 2^26 after rounding
        Af = np.array([float(v) for v in A], dtype=np.float64) if np.any(r < 0) else None
    else:
        Qf = Q.astype(np.float64)
        Af = A.astype(np.float64) if np.any(r < 0) else None
    val = np.where(r >= 0, np.ldexp(Qf, q.astype(np.int64)),
                   np.ldexp(Af, g) if Af is not None else 0.0)
    val = np.where(neg, -val, val)
    over = np.abs(val) > _ACC.max_finite
    if np.any(over):
        val = np.where(over, np.copysign(np.where(nearest, np.inf, _ACC.max_finite), val), val)
    return val + 0.0                                     # -0 -> +0


def _dot_rows(a, b, c, model: MatmulModel) -> np.ndarray:
    n = a.shape[0]
    fin = model.final_rounding or model.rounding
    return dot_rows_params(
        a, b, c, input_format=model.input_format, block_size=model.block_size,
        extra_bits=None if model.extra_bits is None else np.full(n, int(model.extra_bits)),
        nearest=np.full(n, model.rounding == "nearest_even"),
        final_nearest=np.full(n, fin == "nearest_even"), normalize=np.full(n, model.normalize),
        exact_products=model.exact_products, align_to=model.align_to, align_cut=model.align_cut,
        promote_every=model.promote_every, sum_bits=model.sum_bits, split_k=model.split_k,
        split_align=model.split_align)


def add_fp32(x, y) -> np.ndarray:
    """Correctly rounded (nearest-even) float32 sum of float64 arrays ``x + y`` (any float64
    values, e.g. exact products): TwoSum, then round-to-odd to float64, then one rounding."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    s = x + y
    bb = s - x
    err = (x - (s - bb)) + (y - bb)
    odd_step = (err != 0) & ((s.view(np.int64) & 1) == 0)
    s = np.where(odd_step, np.nextafter(s, np.copysign(np.inf, err)), s)
    return round_to_format(s, _ACC, "nearest_even") + 0.0


def split_k_slices(K: int, split_k: int, align: int = 1) -> list[tuple[int, int]]:
    """The contiguous K slices ``[(start, stop), ...]`` of a split-K sum: each ``L`` products long,
    ``L = ceil(K / split_k)`` rounded up to a multiple of ``align``, the last one shorter (there are
    ``ceil(K / L)`` of them: fewer than ``split_k`` when rounding up leaves nothing for the last)."""
    K, split_k, align = int(K), int(split_k), int(align)
    if K < 1 or split_k < 1 or align < 1:
        raise ValueError(f"split_k_slices needs K, split_k, align >= 1, got {K}, {split_k}, {align}")
    L = -(-(-(-K // split_k)) // align) * align
    return [(s0, min(s0 + L, K)) for s0 in range(0, K, L)]


def dot_rows_params(a, b, c, *, input_format, block_size, extra_bits, nearest, final_nearest,
                    normalize, exact_products=True, align_to="value", promote_every=None,
                    align_cut="toward_zero", sum_bits=24, split_k=1, split_align=1) -> np.ndarray:
    """The model on rows ``a, b`` (n, K) with *per-row* parameters (arrays of length n): extra
    bits (int64, or None = infinite for all rows), nearest (bool), final_nearest (bool), normalize
    (bool). Lets a search evaluate many candidate models in one vectorised pass. No input checks."""
    prods = a * b                                        # exact in float64 for every input format
    if not exact_products:
        prods = round_to_format(prods, _ACC, "nearest_even")
    if align_to == "value":
        pkeys = _exponent(prods)
    else:
        fa, fb = (get_format(f) for f in operand_formats(input_format))
        pkeys = np.maximum(_exponent(a), fa.emin) + np.maximum(_exponent(b), fb.emin)
    n, K = prods.shape
    p = None if extra_bits is None else np.asarray(extra_bits, dtype=np.int64)
    c = np.asarray(c, dtype=np.float64)
    nearest, final_nearest, normalize = (np.broadcast_to(np.asarray(v, dtype=bool), (n,))
                                         for v in (nearest, final_nearest, normalize))
    args = (int(block_size), p, nearest, final_nearest, normalize, align_cut == "floor",
            int(sum_bits))
    out = None
    for s0, s1 in split_k_slices(K, split_k, split_align):
        part = _promoted(prods[:, s0:s1], pkeys[:, s0:s1], c if s0 == 0 else np.zeros(n),
                         promote_every, args)
        out = part if out is None else add_fp32(out, part)
    return out


def _promoted(prods, pkeys, c, promote_every, args):
    if promote_every is None:
        return _chain(prods, pkeys, c, *args)
    n, K = prods.shape
    acc = c.copy()
    P = int(promote_every)
    for s0 in range(0, K, P):
        part = _chain(prods[:, s0:s0 + P], pkeys[:, s0:s0 + P], np.zeros(n), *args)
        acc = add_fp32(part, acc)                        # fp32 add, nearest-even
    return acc


def _chain(prods, pkeys, c, nb, p, nearest, final_nearest, normalize, floor_cut, sum_bits=24):
    """The block-FMA chain over all K of ``prods`` starting from accumulators ``c``."""
    K = prods.shape[1]
    acc = c.copy()
    if nb == 1 and p is None and sum_bits == 24 and nearest.all() and final_nearest.all() \
            and normalize.all():                         # a chain of correctly rounded FMAs
        for k in range(K):
            acc = add_fp32(prods[:, k], acc)
        return acc
    for k0 in range(0, max(K, 1), nb):
        k1 = min(k0 + nb, K)
        last = k1 >= K
        terms = np.concatenate([acc[:, None], prods[:, k0:k1]], axis=1)
        keys = np.concatenate([_exponent(acc)[:, None], pkeys[:, k0:k1]], axis=1)
        acc = _block(terms, keys, p, final_nearest if last else nearest,
                     True if last else normalize, floor_cut, sum_bits)
    return acc


def model_dot(a, b, c=None, model: MatmulModel = MatmulModel()) -> np.ndarray:
    """``c + sum_k a[..., k] * b[..., k]`` through ``model``; a, b: (..., K) arrays of values of
    ``model.input_format`` (any float dtype holding them exactly), c: (...) float32 values or None.
    Returns float64 arrays holding float32 values, shape (...)."""
    fa, fb = operand_formats(model.input_format)
    a = check_representable(a, fa, "a")
    b = check_representable(b, fb, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    if a.ndim < 1 or a.shape[-1] == 0:
        raise ValueError(f"a and b need a nonempty last (K) axis, got shape {a.shape}")
    lead = a.shape[:-1]
    if c is None:
        c = np.zeros(lead)
    c = np.broadcast_to(check_representable(c, "float32", "c"), lead)
    out = _dot_rows(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]), c.reshape(-1), model)
    return out.reshape(lead)


def matmul_shape(A, B, *, b_transposed: bool = False) -> tuple[int, int, int]:
    """(M, K, N) of ``A @ B`` (A: (M, K); B: (K, N), or (N, K) when ``b_transposed``); a ValueError for
    operands that are not 2-D, do not agree in K, or are empty."""
    bk, bn = (1, 0) if b_transposed else (0, 1)
    bname = "Bt (N, K)" if b_transposed else "B (K, N)"
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[bk]:
        raise ValueError(f"need A (M, K) and {bname}, got {A.shape} and {B.shape}")
    M, K = A.shape
    N = B.shape[bn]
    if M == 0 or N == 0 or K == 0:
        raise ValueError(f"empty matmul {A.shape} @ {B.shape}{'^T' if b_transposed else ''}")
    return M, K, N


def model_matmul(A, B, model: MatmulModel = MatmulModel(), C=None, *, chunk: int = 1 << 21) -> np.ndarray:
    """``C + A @ B`` (A: (M, K), B: (K, N)) with every dot product through ``model``, each summed
    over k = 0..K-1 in order; float64 (M, N) holding float32 values. ``chunk``: elements (dot
    products x K) evaluated at once."""
    fa, fb = operand_formats(model.input_format)
    A = check_representable(A, fa, "A")
    B = check_representable(B, fb, "B")
    M, K, N = matmul_shape(A, B)
    Cm = np.zeros((M, N)) if C is None else np.broadcast_to(check_representable(C, "float32", "C"), (M, N))
    Bt = np.ascontiguousarray(B.T)
    out = np.empty((M, N))
    rows = max(1, chunk // max(1, N * K))
    for i in range(0, M, rows):
        a = np.broadcast_to(A[i:i + rows, None, :], (min(rows, M - i), N, K)).reshape(-1, K)
        b = np.broadcast_to(Bt[None], (min(rows, M - i), N, K)).reshape(-1, K)
        out[i:i + rows] = _dot_rows(a, b, Cm[i:i + rows].reshape(-1), model).reshape(-1, N)
    return out
