"""numerics.orders: hand-worked orders, a slow reference written from docs/reduction-orders.md,
NumPy's pairwise sum, and correctly rounded narrow additions."""
import time
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import numerics.orders as orders_mod
from numerics.exact import fma, round_fraction
from numerics.formats import cast
from numerics.orders import (atomic_tree_sum, block_partials, block_tree_reduce, chunk_for,
                             halving_tree_reduce, lane_block, lane_tree_sum, pairwise_sum, permuted_sum,
                             sequential_sum, split_k_sum, two_pass_tree_sum)

HYP = settings(derandomize=True, database=None, deadline=None, max_examples=200)
BF16 = np.dtype(ml_dtypes.bfloat16)
ACCS = [np.dtype(np.float32), np.dtype(np.float16), BF16]


def _b(x):
    x = np.asarray(x)
    return x.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[x.dtype.itemsize]).tolist()


def _same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and _b(a) == _b(b)


# ------------------------------------------------------------ slow reference, from the spec page


def ref_halving(v):
    v = list(v)
    while len(v) > 1:
        h = len(v) // 2
        v = [v[i] + v[i + h] for i in range(h)]
    return v[0]


def ref_block_tree(v, warp, dt):
    sums = [ref_halving(v[w:w + warp]) for w in range(0, len(v), warp)]
    return ref_halving(sums + [dt.type(0)] * (warp - len(sums)))


def ref_partials(x, dt, grid, block, chunk, warp):
    xs = [dt.type(v) for v in np.asarray(x).astype(dt)]    # one scalar per element
    n, T = len(xs), grid * block
    C = n // chunk
    s = [dt.type(0)] * T
    for t in range(T):
        for c in range(t, C, T):
            for i in range(c * chunk, c * chunk + chunk):
                s[t] = s[t] + xs[i]
    for j in range(n - C * chunk):
        s[j % T] = s[j % T] + xs[C * chunk + j]
    return [ref_block_tree(s[b * block:(b + 1) * block], warp, dt) for b in range(grid)]


def ref_two_pass(x, dt, grid, block, final_block, chunk, warp):
    p = ref_partials(x, dt, grid, block, chunk, warp)
    s = [dt.type(0)] * final_block
    for i in range(final_block):
        for k in range(i, grid, final_block):
            s[i] = s[i] + p[k]
    return ref_block_tree(s, warp, dt)


def ref_sequential(x, dt):
    s = dt.type(0)
    for v in np.asarray(x).astype(dt):
        s = s + v
    return s


def ref_lane_tree(x, block):
    """Row reductions, from the page: lane j adds x[j], x[j + block], ... in float32 from +0, then the
    halving tree over the block lanes."""
    xs = [np.float32(v) for v in np.asarray(x).astype(np.float32)]
    s = [np.float32(0)] * block
    for j in range(block):
        for i in range(j, len(xs), block):
            s[j] = s[j] + xs[i]
    return ref_halving(s)


# ------------------------------------------------------------ hand-worked examples (float16)


def test_hand_worked_float16_orders():
    # float16 spacing at 2048 is 2, so 2048 + 1 is a tie and goes to the even 2048.
    x = np.array([2048, 1, 0, 0, 0, 1, 0, 0], np.float16)        # exact sum 2050
    # halving: [2048+0, 1+1, 0+0, 0+0] -> [2048+0, 2+0] -> 2048+2 = 2050
    assert halving_tree_reduce(x) == 2050
    # warp 4: warp 0 [2048,1,0,0] -> [2048,1] -> 2048+1 = 2048; warp 1 [0,1,0,0] -> 1;
    # [2048, 1, 0, 0] -> [2048, 1] -> 2048
    assert block_tree_reduce(x, warp=4) == 2048
    assert block_tree_reduce(x, warp=8) == 2050                   # one warp: the halving tree
    assert sequential_sum(x, "float16") == 2048                   # 2048+1 -> 2048, +1 -> 2048
    # NumPy pairwise, n = 8: ((2048+1) + (0+0)) + ((0+1) + (0+0)) = 2048 + 1 = 2048
    assert pairwise_sum(x, "float16") == 2048
    assert sequential_sum(x, "float32") == 2050
    assert permuted_sum(x, [1, 5, 0, 2, 3, 4, 6, 7], "float16") == 2050   # 1+1 first
    # split_k k=3: chunks [2048,1,0] [0,0,1] [0,0] -> 2048, 1, 0 -> 2048
    assert split_k_sum(x, 3, "float16") == 2048
    assert split_k_sum(x, 2, "float16") == 2048                   # [2048,1,0,0]=2048, [0,1,0,0]=1


def test_hand_worked_two_pass_with_tail_on_fewer_threads_than_chunk():
    # n=7, chunk=4, grid=1, block=2, warp=2 -> T=2, C=1: thread 0 takes x0..x3; the tail x4, x5,
    # x6 goes to threads 0, 1, 0 (j mod T). s0 = 2048+0+0+0 +1 (->2048) +1 (->2048) = 2048,
    # s1 = 2; block tree: 2048 + 2 = 2050; pass 2 (final_block 2): p0 + 0 = 2050.
    x = np.array([2048, 0, 0, 0, 1, 2, 1], np.float16)
    kw = dict(acc="float16", grid=1, block=2, chunk=4, warp=2)
    assert block_partials(x, **kw).tolist() == [2050]
    assert two_pass_tree_sum(x, final_block=2, **kw) == 2050
    assert sequential_sum(x, "float16") == 2052                  # 2048,2048,2050,2051->2052


def test_hand_worked_two_pass_and_atomic_orders():
    # n=10, grid=2, block=4, warp=4, chunk=2 -> T=8, C=5: thread t<5 sums x[2t], x[2t+1].
    x = np.array([2048, 1, 1, 0, 0, 0, 1, 0, 3, 0], np.float16)
    # s = [2048, 1, 0, 1, 3, 0, 0, 0]; p0 = (2048+0) + (1+1) = 2050, p1 = (3+0)+(0+0) = 3
    kw = dict(acc="float16", grid=2, block=4, chunk=2, warp=4)
    assert block_partials(x, **kw).tolist() == [2050, 3]
    # pass 2, final_block 4: [2050, 3, 0, 0] -> [2050, 3] -> 2053 -> tie -> 2052
    assert two_pass_tree_sum(x, final_block=4, **kw) == 2052
    assert atomic_tree_sum(x, [0, 1], **kw) == 2052              # 0 + 2050 + 3
    assert atomic_tree_sum(x, [1, 0], **kw) == 2052              # 3 + 2050 = 2053 -> 2052
    # grid=3, 24 elements: block b sums elements 8b..8b+7, so p = [1, 2048, 1]
    y = np.zeros(24, np.float16)
    y[[0, 8, 16]] = [1, 2048, 1]
    kw3 = {**kw, "grid": 3}
    assert block_partials(y, **kw3).tolist() == [1, 2048, 1]
    assert atomic_tree_sum(y, [0, 1, 2], **kw3) == 2048          # (1 + 2048 -> 2048) + 1 -> 2048
    assert atomic_tree_sum(y, [0, 2, 1], **kw3) == 2050          # (1 + 1) + 2048 = 2050


def test_block_partials_and_two_pass_equal_slow_reference():
    rng = np.random.default_rng(0)
    configs = [  # grid, block, warp, chunk, final_block
        (1, 32, 32, 1, 32), (3, 64, 32, 4, 32), (5, 8, 4, 8, 16), (2, 4, 2, 3, 4), (4, 16, 4, 1, 8),
        (7, 4, 4, 2, 4), (1, 1, 1, 5, 1), (2, 16, 16, 8, 16),
    ]
    for grid, block, warp, chunk, fb in configs:
        T = grid * block
        for n in sorted({1, 2, chunk - 1 or 1, chunk, T - 1 or 1, T * chunk + 3, 3 * T * chunk + 5,
                         int(rng.integers(1, 700))}):
            for dt in ACCS:
                src = [np.float32, np.float16, BF16][int(rng.integers(0, 3))]
                x = (rng.standard_normal(n) * 2.0 ** rng.integers(-6, 10, n)).astype(src)
                kw = dict(acc=dt, grid=grid, block=block, chunk=chunk, warp=warp)
                p = block_partials(x, **kw)
                assert _same(p, np.array(ref_partials(x, dt, grid, block, chunk, warp), dt))
                got = two_pass_tree_sum(x, final_block=fb, **kw)
                assert _same(got, ref_two_pass(x, dt, grid, block, fb, chunk, warp)), (n, dt)
                assert _same(atomic_tree_sum(x, np.arange(grid), **kw), ref_sequential(p, dt))


def test_blocked_accumulation_paths(monkeypatch):
    """The same results when the accumulate blocks are tiny (several blocks of rounds/columns)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(3001).astype(np.float32)
    want = [two_pass_tree_sum(x, acc=a, grid=3, block=8, final_block=4, chunk=4, warp=4)
            for a in ACCS] + [sequential_sum(x, "float16"), split_k_sum(x, 5, "bfloat16")]
    monkeypatch.setattr(orders_mod, "_BLOCK_ELEMS", 7)
    got = [two_pass_tree_sum(x, acc=a, grid=3, block=8, final_block=4, chunk=4, warp=4)
           for a in ACCS] + [sequential_sum(x, "float16"), split_k_sum(x, 5, "bfloat16")]
    assert all(_same(g, w) for g, w in zip(got, want))
    assert _same(want[0], ref_two_pass(x, np.dtype(np.float32), 3, 8, 4, 4, 4))


@pytest.mark.parametrize("dt", ACCS)
def test_sequential_split_k_permuted_equal_loops(dt):
    rng = np.random.default_rng(2)
    for n in (1, 2, 7, 100, 1001):
        x = (rng.standard_normal(n) * 2.0 ** rng.integers(-5, 12, n)).astype(dt)
        assert _same(sequential_sum(x, dt), ref_sequential(x, dt))
        perm = rng.permutation(n)
        assert _same(permuted_sum(x, perm, dt), ref_sequential(x[perm], dt))
        for k in (1, 2, 3, 7, n + 2):
            q, r = divmod(n, k)
            sizes = [q + 1] * r + [q] * (k - r)
            bounds = np.cumsum([0] + sizes)
            parts = [ref_sequential(x[bounds[i]:bounds[i + 1]], dt) for i in range(k)]
            assert _same(split_k_sum(x, k, dt), ref_sequential(np.array(parts, dt), dt))
    assert np.signbit(sequential_sum(np.array([-0.0, -0.0], dt), dt)) == False  # noqa: E712


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_pairwise_equals_numpy_add_reduce(dt):
    rng = np.random.default_rng(3)
    sizes = list(range(1, 300)) + [383, 1000, 1023, 1024, 1025, 4097, 8191, 8192, 8193, 8200,
                                   12345, 16384, 16385, 65537, 100003, (1 << 20) + 7]
    for n in sizes:
        x = (rng.standard_normal(n) * 10.0 ** rng.integers(-4, 5, n)).astype(dt)
        got = pairwise_sum(x, dt)
        assert _same(got, np.add.reduce(x)) and type(got) is type(np.add.reduce(x)), n
    assert _same(pairwise_sum(np.array([-0.0], dt), dt), np.add.reduce(np.array([-0.0], dt)))


def test_pairwise_float16_acc_by_hand():
    x = np.array([2048] + [1] * 8, np.float16)                    # n=9: 8 accumulators + tail
    # r_k = x[k] for k < 8 (no further full group of 8);
    # ((2048+1 -> 2048) + (1+1)) + ((1+1) + (1+1)) = 2050 + 4 = 2054; tail: +1 -> 2055 -> tie -> 2056
    assert pairwise_sum(x, "float16") == 2056


# ------------------------------------------------------------ narrow additions are correct


@pytest.mark.parametrize("dt", [np.dtype(np.float16), BF16])
def test_narrow_addition_is_correctly_rounded_vectorised(dt):
    rng = np.random.default_rng(4)
    bits = rng.integers(0, 2 ** 16, size=(2, 200_000), dtype=np.uint32).astype(np.uint16)
    a, b = bits[0].view(dt), bits[1].view(dt)
    with np.errstate(all="ignore"):
        ok = np.isfinite(a.astype(np.float32)) & np.isfinite(b.astype(np.float32))
        a, b = a[ok], b[ok]
        got = a + b
    # fma(a, 1, b) is the correctly rounded sum (checked against Fractions in the exact tests)
    want = fma(a, np.ones((), dt), b, dt.name)
    assert _b(got) == _b(want)


@HYP
@given(st.integers(0, 2 ** 16 - 1), st.integers(0, 2 ** 16 - 1), st.sampled_from(["float16",
                                                                                  "bfloat16"]))
def test_narrow_addition_matches_fractions(ia, ib, name):
    dt = np.dtype(np.float16) if name == "float16" else BF16
    a, b = (np.array([i], np.uint16).view(dt)[0] for i in (ia, ib))
    fa, fb = float(a), float(b)
    if not (np.isfinite(fa) and np.isfinite(fb)):
        return
    q = Fraction(fa) + Fraction(fb)
    s = a + b
    if q == 0:
        assert float(s) == 0
    else:
        assert _b(np.array([s], dt)) == _b(cast(np.array([round_fraction(q, name)]), name))


@HYP
@given(st.lists(st.floats(-1e4, 1e4, allow_nan=False, width=16), min_size=1, max_size=30))
def test_sequential_float16_matches_fraction_loop(xs):
    x = np.array(xs, np.float16)
    s = 0.0
    for v in x.tolist():
        s = round_fraction(Fraction(s) + Fraction(v), "float16")
    assert float(sequential_sum(x, "float16")) == s


# ------------------------------------------------------------ validation, types, speed


def test_validation_errors():
    x = np.ones(10, np.float32)
    kw = dict(acc="float32", grid=2, block=64, chunk=4, final_block=32)
    with pytest.raises(ValueError, match="empty input"):
        two_pass_tree_sum(np.array([], np.float32), **kw)
    for bad in (dict(block=48), dict(block=64, warp=4), dict(warp=24), dict(grid=0),
                dict(final_block=16), dict(final_block=0), dict(chunk=0), dict(acc="int8")):
        with pytest.raises(ValueError):
            two_pass_tree_sum(x, **{**kw, **bad})
    with pytest.raises(ValueError, match="permutation"):
        atomic_tree_sum(x, [0, 0], acc="float32", grid=2, block=32, chunk=4)
    with pytest.raises(ValueError, match="permutation"):
        permuted_sum(x, np.arange(9), "float32")
    with pytest.raises(ValueError, match="empty input"):
        sequential_sum([], "float32")
    with pytest.raises(ValueError):
        split_k_sum(x, 0, "float32")
    with pytest.raises(ValueError):
        halving_tree_reduce(np.ones(6, np.float32))
    with pytest.raises(ValueError):
        sequential_sum(np.ones((2, 2), np.float32), "float32")


def test_result_types_and_chunk_for():
    assert (chunk_for(np.float32), chunk_for(np.float16), chunk_for(BF16)) == (4, 8, 8)
    x = np.arange(100, dtype=np.float32)
    for dt in ACCS:
        for r in (sequential_sum(x, dt), pairwise_sum(x, dt), split_k_sum(x, 3, dt),
                  two_pass_tree_sum(x, acc=dt, grid=2, block=32, final_block=32, chunk=4)):
            assert np.asarray(r).dtype == dt and np.ndim(r) == 0
    # float64 inputs are rounded once into bfloat16 (not through float32)
    y = np.array([1 + 2.0 ** -8 + 2.0 ** -40])
    assert sequential_sum(y, "bfloat16") == ml_dtypes.bfloat16(1 + 2 ** -7)


def test_two_pass_is_vectorised():
    x = np.random.default_rng(5).standard_normal(1 << 24).astype(np.float32)
    t = time.perf_counter()
    r = two_pass_tree_sum(x, acc="float32", grid=1024, block=256, final_block=256, chunk=4)
    assert time.perf_counter() - t < 5.0            # ~0.2 s here; generous for shared CI
    assert abs(float(r) - float(np.sum(x, dtype=np.float64))) < 1.0


@pytest.mark.parametrize("dtype", [np.float32, np.float16, BF16])
@pytest.mark.parametrize("n", [1, 5, 16, 17, 1000, 1024, 3000])
def test_lane_tree_sum_matches_the_page(dtype, n):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * rng.choice([1e-3, 1.0, 1e4], n)).astype(dtype)
    block = lane_block(n)
    assert block == min(1024, max(16, 1 << (n - 1).bit_length()))
    assert _same(lane_tree_sum(x), ref_lane_tree(x, block))
    rows = np.stack([x, x[::-1]])                         # row-wise, each row on its own
    got = lane_tree_sum(rows)
    assert _same(got[0], ref_lane_tree(x, block)) and _same(got[1], ref_lane_tree(x[::-1], block))
    assert _same(lane_tree_sum(x, 16), ref_lane_tree(x, 16))


def test_lane_tree_sum_rejects_bad_input():
    with pytest.raises(ValueError, match="n >= 1"):
        lane_tree_sum(np.zeros((3, 0), np.float32))
    with pytest.raises(ValueError, match="power of two"):
        lane_tree_sum(np.ones(8, np.float32), 12)
    with pytest.raises(ValueError, match="dtype"):
        lane_tree_sum(np.ones(8, np.int32))
