"""NumPy emulation of the reduction orders in ``docs/reduction-orders.md``, bit for bit.

Every addition is one NumPy / ml_dtypes addition in the accumulation dtype ``acc``; the inputs are
converted to ``acc`` first (``formats.cast`` from float64, so that conversion is one correct rounding
too). The work is vectorised across threads: the loops in Python run over the steps a thread takes,
never over elements.

Why the additions are correctly rounded: NumPy adds float16 and ml_dtypes adds bfloat16 by widening
both operands to float32 (exact), adding in float32 (rounding once) and rounding the result to the
narrow format (rounding again). This double rounding is innocuous because float32's precision
``p' = 24`` is at least ``2p + 2`` (float16: p = 11, bfloat16: p = 8), and float32's exponent range and
subnormal quantum (2^-149) cover both formats. Proof: write ``a = A 2^qa``, ``b = B 2^qb`` with integer
significands ``|A|, |B| < 2^p`` and quanta ``qa >= qb`` (quanta of subnormals are ``emin - p + 1``),
``d = qa - qb``. Then ``a + b = (A 2^d + B) 2^qb`` with ``|A 2^d + B| < 2^(p + d + 1)``, so the sum is
exact in float32 - and the two roundings are one - unless ``p + d + 1 > p'``, i.e. ``d >= p' - p >=
p + 2``. In that case ``|b| < 2^(qb + p) <= 2^(qa - 2) = ulp(a) / 4`` (``ulp(a) = 2^qa``), and the
spacing of the narrow format on either side of ``a`` is at least ``ulp(a) / 2``, so the exact sum and
its float32 rounding (which is monotone and cannot cross the float32 numbers ``a +- ulp(a)/4``) both
lie strictly closer to ``a`` than any midpoint, except that the float32 value may equal
``a - ulp(a)/4`` when ``a`` is a power of two, which is the midpoint below ``a`` only if the spacing
there is ``ulp(a)/2`` - and that tie goes to ``a`` (its significand 1.00...0 is even) - so both ways
give ``a``. Overflow is the same rounding with an unbounded exponent, so it agrees as well. The tests
check this against Fraction arithmetic.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

from .formats import cast

__all__ = [
    "halving_tree_reduce", "block_tree_reduce", "block_partials", "two_pass_tree_sum",
    "atomic_tree_sum", "sequential_sum", "pairwise_sum", "split_k_sum", "permuted_sum", "chunk_for",
    "lane_tree_sum", "lane_block", "ACC_DTYPES",
]

#: Accumulation dtypes. float64 is accepted too (for pairwise_sum on float64 arrays, mainly).
ACC_DTYPES = {
    "float32": np.dtype(np.float32), "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16), "float64": np.dtype(np.float64),
}

# Sequential runs are done with np.add.accumulate on blocks of at most this many elements, each
# block starting with the running sums carried from the previous one (bounded memory).
_BLOCK_ELEMS = 1 << 22


def chunk_for(dtype) -> int:
    """The CUDA kernels' vector-load width: ``16 // itemsize`` (4 for fp32, 8 for fp16/bf16)."""
    return 16 // np.dtype(dtype).itemsize


def _acc_dtype(acc) -> np.dtype:
    name = acc if isinstance(acc, str) else getattr(np.dtype(acc), "name", None)
    if name not in ACC_DTYPES:
        raise ValueError(f"unsupported accumulation dtype {acc!r}; valid: {', '.join(ACC_DTYPES)}")
    return ACC_DTYPES[name]


def _prepare(x, acc) -> tuple[np.ndarray, np.dtype]:
    """Validate ``x`` (1-D, non-empty, a supported float dtype) and convert it to ``acc``."""
    dt = _acc_dtype(acc)
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D array, got shape {x.shape}")
    if x.size == 0:
        raise ValueError("empty input: every reduction order needs n >= 1 elements")
    if x.dtype.name not in ACC_DTYPES:
        raise ValueError(f"unsupported input dtype {x.dtype}; valid: {', '.join(ACC_DTYPES)}")
    if x.dtype == dt:
        return x, dt
    if x.dtype == np.float64:
        return cast(x, dt.name), dt          # one correct rounding (ml_dtypes' astype double-rounds)
    return x.astype(dt), dt                  # widening is exact; float32 -> 16-bit rounds once


def _check_warp(warp, block, what="block"):
    if not (isinstance(warp, (int, np.integer)) and warp >= 1 and warp & (warp - 1) == 0):
        raise ValueError(f"warp must be a power of two >= 1, got {warp!r}")
    if block < 1 or block % warp:
        raise ValueError(f"{what} ({block}) must be a positive multiple of warp ({warp})")
    if block // warp > warp:
        raise ValueError(f"{what}/warp = {block // warp} must be <= warp ({warp}): "
                         f"the warp sums are reduced by one more warp")


def _check_positive(**kw):
    for k, v in kw.items():
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{k} must be an integer >= 1, got {v!r}")


def halving_tree_reduce(v) -> np.ndarray:
    """Halving tree along the last axis (length a power of two): while more than one value is left,
    ``v = v[:h] + v[h:]`` with ``h = len/2``. Returns a scalar for 1-D input, else the array of
    per-row results. Additions are in ``v``'s dtype."""
    v = np.asarray(v)
    L = v.shape[-1]
    if L < 1 or L & (L - 1):
        raise ValueError(f"halving tree needs a power-of-two length, got {L}")
    while v.shape[-1] > 1:
        h = v.shape[-1] // 2
        v = v[..., :h] + v[..., h:]
    return v[..., 0]


def block_tree_reduce(v, warp: int = 32) -> np.ndarray:
    """Block tree along the last axis (length ``B``, a multiple of ``warp``, ``B/warp <= warp``):
    each group of ``warp`` consecutive values is reduced by the halving tree, the ``B/warp`` warp
    sums are padded with +0.0 to ``warp`` values and reduced by the halving tree again.

    With ``B == warp`` this equals one halving tree, except that the padding turns an all-(-0)
    input's -0 into +0 (never the case for thread sums, which start at +0)."""
    v = np.asarray(v)
    B = v.shape[-1]
    _check_warp(warp, B, "block")
    warps = halving_tree_reduce(v.reshape(*v.shape[:-1], B // warp, warp))
    pad = np.zeros((*warps.shape[:-1], warp), dtype=v.dtype)
    pad[..., :B // warp] = warps
    return halving_tree_reduce(pad)


#: Lanes of a row reduction: the next power of two >= n, at least 16, at most 1024.
LANE_BLOCK_MIN, LANE_BLOCK_MAX = 16, 1024


def lane_block(n: int) -> int:
    """The lane count of ``lane_tree_sum`` for rows of ``n`` elements: a function of ``n`` only (the
    next power of two >= n, clamped to [16, 1024]), so a row's order never depends on other rows."""
    _check_positive(n=n)
    return min(LANE_BLOCK_MAX, max(LANE_BLOCK_MIN, 1 << (int(n) - 1).bit_length()))


def lane_tree_sum(x, block: int | None = None, acc="float32") -> np.ndarray:
    """Row sums along the last axis of ``x`` (shape ``[..., n]``, ``n >= 1``) in the row-reduction
    order: ``block`` lanes (default ``lane_block(n)``, a power of two); lane ``j`` adds elements
    ``j, j + block, j + 2 block, ...`` in index order to its running sum (from +0, in ``acc``); a lane
    past the end keeps +0; then the ``block`` lane sums are reduced by ``halving_tree_reduce``.
    Returns the ``[...]`` array of row sums (dtype ``acc``). The inputs are converted to ``acc`` first
    (exact for narrower formats). What probes.invariant's row kernels do, one program per row."""
    dt = _acc_dtype(acc)
    x = np.asarray(x)
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"expected rows of n >= 1 elements (shape [..., n]), got shape {x.shape}")
    if x.dtype.name not in ACC_DTYPES:
        raise ValueError(f"unsupported input dtype {x.dtype}; valid: {', '.join(ACC_DTYPES)}")
    n = x.shape[-1]
    block = lane_block(n) if block is None else block
    if not (isinstance(block, (int, np.integer)) and block >= 1 and block & (block - 1) == 0):
        raise ValueError(f"block must be a power of two >= 1, got {block!r}")
    xa = cast(x, dt.name) if x.dtype == np.float64 and dt != x.dtype else x.astype(dt)
    steps = -(-n // block)
    padded = np.zeros((*x.shape[:-1], steps * block), dtype=dt)   # +0 past the end: s + 0 = s (s != -0)
    padded[..., :n] = xa
    lanes = padded.reshape(*x.shape[:-1], steps, block)
    s = np.zeros((*x.shape[:-1], block), dtype=dt)
    for t in range(steps):
        s = s + lanes[..., t, :]
    return halving_tree_reduce(s)


def _accumulate_rows(s: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """``s[t] = (((s[t] + steps[t, 0]) + steps[t, 1]) + ...)`` for every row t, in s's dtype."""
    buf = np.empty((steps.shape[0], steps.shape[1] + 1), dtype=s.dtype)
    buf[:, 0] = s
    buf[:, 1:] = steps
    return np.add.accumulate(buf, axis=1)[:, -1].copy()


def _sequential_1d(x: np.ndarray, dt: np.dtype) -> np.ndarray:
    """``s = +0; for v in x: s = s + v`` in dtype dt (x already in dt); returns a 0-d/scalar."""
    s = np.zeros(1, dtype=dt)
    for i0 in range(0, x.size, _BLOCK_ELEMS):
        s = _accumulate_rows(s, x[None, i0:i0 + _BLOCK_ELEMS])
    return s[0]


def _thread_sums(x: np.ndarray, T: int, chunk: int) -> np.ndarray:
    """Pass-1 running sums of ``T`` threads (see the page): thread t adds chunks t, t+T, ... of
    ``chunk`` consecutive elements in index order, then tail element j goes to thread ``j % T``."""
    n = x.size
    C = n // chunk                           # whole chunks
    R = C // T                               # rounds in which all T threads get a chunk
    s = np.zeros(T, dtype=x.dtype)
    full = x[:R * T * chunk].reshape(R, T, chunk)
    rb = max(1, _BLOCK_ELEMS // (T * chunk))
    for r0 in range(0, R, rb):               # a block of rounds; per thread the steps in order
        blk = full[r0:r0 + rb]
        s = _accumulate_rows(s, blk.transpose(1, 0, 2).reshape(T, -1))
    m = C - R * T                            # last round: threads 0..m-1 get one more chunk
    if m:
        s[:m] = _accumulate_rows(s[:m], x[R * T * chunk:C * chunk].reshape(m, chunk))
    tail = x[C * chunk:]                     # fewer than chunk elements
    for j0 in range(0, tail.size, T):
        t = tail[j0:j0 + T]
        s[:t.size] = s[:t.size] + t
    return s


def block_partials(x, *, acc, grid: int, block: int, chunk: int, warp: int = 32) -> np.ndarray:
    """Pass 1 of the two-pass tree sum: the ``grid`` block partials ``p_b`` (array of acc dtype).

    ``grid`` blocks of ``block`` threads, ``T = grid * block``, thread ``t = b * block + l``; thread
    ``t`` adds the ``chunk``-element chunks ``t, t+T, ...`` (each in index order) to its running sum
    (from +0), then the tail element ``j`` (``n - chunk * (n // chunk)`` of them) if ``j % T == t``;
    block ``b`` reduces its threads' sums with ``block_tree_reduce(., warp)``."""
    _check_positive(grid=grid, block=block, chunk=chunk)
    _check_warp(warp, block)
    xa, _ = _prepare(x, acc)
    s = _thread_sums(xa, grid * block, chunk)
    return block_tree_reduce(s.reshape(grid, block), warp)


def _final_pass(p: np.ndarray, final_block: int, warp: int):
    s = _thread_sums(p, final_block, 1)      # thread i: p_i, p_{i+final_block}, ...
    return block_tree_reduce(s, warp)


def two_pass_tree_sum(x, *, acc, grid: int, block: int, final_block: int, chunk: int,
                      warp: int = 32):
    """Two-pass tree sum: ``block_partials``, then one block of ``final_block`` threads where thread
    ``i`` adds ``p_i, p_{i+final_block}, ...`` in order and the block reduces the thread sums with
    ``block_tree_reduce(., warp)``. Returns a scalar of the acc dtype."""
    _check_positive(final_block=final_block)
    _check_warp(warp, final_block, "final_block")
    p = block_partials(x, acc=acc, grid=grid, block=block, chunk=chunk, warp=warp)
    return _final_pass(p, final_block, warp)


def atomic_tree_sum(x, arrival, *, acc, grid: int, block: int, chunk: int, warp: int = 32):
    """Pass 1, then the block partials added into one +0-initialised cell in ``arrival`` order
    (a permutation of ``range(grid)``): ``s = ((+0 + p_arrival[0]) + p_arrival[1]) + ...``."""
    arrival = np.asarray(arrival)
    if arrival.shape != (grid,) or not np.array_equal(np.sort(arrival), np.arange(grid)):
        raise ValueError(f"arrival must be a permutation of range(grid={grid})")
    p = block_partials(x, acc=acc, grid=grid, block=block, chunk=chunk, warp=warp)
    return _sequential_1d(p[arrival], p.dtype)


def sequential_sum(x, acc):
    """``s = +0; for v in x: s = s + v`` (one thread in index order). Scalar of the acc dtype."""
    xa, dt = _prepare(x, acc)
    return _sequential_1d(xa, dt)


def permuted_sum(x, perm, acc):
    """Sequential sum of ``x[perm]``; ``perm`` must be a permutation of ``range(len(x))``."""
    xa, dt = _prepare(x, acc)
    perm = np.asarray(perm)
    if perm.shape != xa.shape or not np.array_equal(np.sort(perm), np.arange(xa.size)):
        raise ValueError(f"perm must be a permutation of range({xa.size})")
    return _sequential_1d(xa[perm], dt)


def split_k_sum(x, k: int, acc):
    """``k`` contiguous chunks (sizes ``n // k + 1`` for the first ``n % k``, ``n // k`` for the
    rest; empty chunks sum to +0 when k > n), each summed sequentially from +0, then the ``k`` chunk
    sums added sequentially from +0."""
    _check_positive(k=k)
    xa, dt = _prepare(x, acc)
    q, r = divmod(xa.size, k)
    sums = np.zeros(k, dtype=dt)
    for rows, start, width in ((slice(0, r), 0, q + 1), (slice(r, k), r * (q + 1), q)):
        nrow = rows.stop - rows.start
        if nrow == 0 or width == 0:
            continue
        M = xa[start:start + nrow * width].reshape(nrow, width)
        s = np.zeros(nrow, dtype=dt)
        cb = max(1, _BLOCK_ELEMS // nrow)
        for c0 in range(0, width, cb):
            s = _accumulate_rows(s, M[:, c0:c0 + cb])
        sums[rows] = s
    return _sequential_1d(sums, dt)


_PW_BLOCK = 128  # NumPy's PW_BLOCKSIZE


def _pairwise_leaves(n: int) -> list[tuple[int, int]]:
    """The (start, length) of the leaves (length <= 128) of NumPy's recursion, left to right."""
    leaves, stack = [], [(0, n)]
    while stack:
        start, m = stack.pop()
        if m <= _PW_BLOCK:
            leaves.append((start, m))
        else:
            m2 = m // 2
            m2 -= m2 % 8
            stack.append((start + m2, m - m2))  # right pushed first: left is popped first
            stack.append((start, m2))
    return leaves


def _pairwise_leaf_values(x: np.ndarray, leaves) -> list:
    """Leaf sums, vectorised over all leaves of the same length (NumPy's <= 128 element loop)."""
    starts = np.array([s for s, _ in leaves], dtype=np.int64)
    lens = np.array([m for _, m in leaves], dtype=np.int64)
    out = np.empty(len(leaves), dtype=x.dtype)
    for L in np.unique(lens):
        sel = np.flatnonzero(lens == L)
        G = x[starts[sel, None] + np.arange(L)]
        if L < 8:                            # res = -0.0; res += a[i]  (NumPy keeps -0 sums)
            res = np.full(sel.size, -0.0, dtype=x.dtype)
            i = 0
        else:                                # 8 interleaved accumulators, then the rest
            r = G[:, :8].copy()
            for i in range(8, L - L % 8, 8):
                r = r + G[:, i:i + 8]
            res = ((r[:, 0] + r[:, 1]) + (r[:, 2] + r[:, 3])) + \
                  ((r[:, 4] + r[:, 5]) + (r[:, 6] + r[:, 7]))
            i = L - L % 8
        for j in range(i, L):
            res = res + G[:, j]
        out[sel] = res
    return list(out)                         # numpy scalars of x's dtype


def pairwise_sum(x, acc):
    """NumPy's pairwise summation order for a contiguous 1-D array, so ``np.add.reduce`` /
    ``np.sum`` of float32/float64 can be predicted bit for bit:

    ``pw(a, n)``: if ``n < 8``: ``res = -0.0; res += a[i]`` in order; if ``n <= 128``: eight
    accumulators ``r[k] = a[k]``, ``r[k] += a[i + k]`` for each further full group of 8, then
    ``res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))`` and the ``n % 8`` leftover elements
    added in order; else ``n2 = n // 2`` rounded down to a multiple of 8 and
    ``pw(a, n2) + pw(a + n2, n - n2)``. The reduction then adds that to its +0 identity:
    result ``= +0 + pw(x, n)``. NumPy hands a contiguous same-dtype 1-D array to the loop in one
    piece (no 8192-element buffer chunks; checked up to 2^26 elements), so this is the whole order.

    With ``acc`` float16/bfloat16 every addition is in that dtype (what a kernel doing this order
    in fp16 would do); NumPy's own float16 sum instead accumulates in float32 inside the loop.
    """
    xa, dt = _prepare(x, acc)
    leaves = _pairwise_leaves(xa.size)
    vals = iter(_pairwise_leaf_values(xa, leaves))

    def pw(m):
        if m <= _PW_BLOCK:
            return next(vals)
        m2 = m // 2
        m2 -= m2 % 8
        left = pw(m2)
        return left + pw(m - m2)

    return np.zeros((), dtype=dt)[()] + pw(xa.size)
