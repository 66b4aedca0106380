"""numerics.collective: the orders a collective sums ranks in, and the exact element-wise sum."""
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

from numerics import collective as col
from numerics.exact import exact_sum, round_fraction

U = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def bits(x):
    x = np.ascontiguousarray(x)
    return x.view(U[x.dtype.itemsize])


def parts(world, n, dtype, seed=0):
    rng = np.random.default_rng([seed, world, n])
    return np.stack([(rng.standard_normal(n) * 2.0 ** rng.integers(-8, 9, n)).astype(dtype) for _ in range(world)])


def test_rank_order_is_a_left_fold_in_the_dtype():
    p = parts(4, 200, np.float32)
    want = ((p[0] + p[1]) + p[2]) + p[3]
    assert np.array_equal(bits(col.rank_order_sum(p)), bits(want))
    want = ((p[3] + p[1]) + p[0]) + p[2]
    assert np.array_equal(bits(col.rank_order_sum(list(p), order=[3, 1, 0, 2])), bits(want))


def test_order_changes_bits_for_four_ranks_not_for_two():
    p4 = parts(4, 4000, np.float32)
    assert not np.array_equal(bits(col.rank_order_sum(p4)), bits(col.rank_order_sum(p4, [3, 2, 1, 0])))
    p2 = parts(2, 4000, np.float32)     # one addition: commutative, so every order gives the same bits
    assert np.array_equal(bits(col.rank_order_sum(p2)), bits(col.rank_order_sum(p2, [1, 0])))
    assert np.array_equal(bits(col.ring_sum(p2)), bits(col.rank_order_sum(p2)))


def test_ring_sum_chunks_start_after_their_owner():
    p = parts(3, 10, np.float32)
    assert col.ring_chunks(10, 3) == [(0, 4), (4, 7), (7, 10)]
    got = col.ring_sum(p)
    for c, (a, b) in enumerate(col.ring_chunks(10, 3)):
        order = [(c + 1) % 3, (c + 2) % 3, c]
        assert np.array_equal(bits(got[a:b]), bits(col.rank_order_sum(p[:, a:b], order)))


@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16])
def test_exact_rank_sum_is_the_correctly_rounded_exact_sum(dtype):
    p = parts(4, 64, dtype, seed=3)
    got = col.exact_rank_sum(p)
    for i in range(p.shape[1]):
        want = round_fraction(sum(Fraction(float(v)) for v in p[:, i]), np.dtype(dtype).name)
        assert float(got[i]) == want or (want == 0 and float(got[i]) == 0), i


def test_exact_rank_sum_takes_the_fraction_path_where_float64_is_not_exact():
    big, tiny = np.float32(2.0 ** 100), np.float32(2.0 ** -100)
    p = np.array([[big, 1], [tiny, 2], [-big, 3]], dtype=np.float32)
    values, exact = col.exact_values(p)
    assert not exact[0] and exact[1]            # 2^100 + 2^-100 is not a float64
    got = col.exact_rank_sum(p)
    assert got[0] == tiny and got[1] == 6        # exact: tiny survives; any float order loses it
    assert col.rank_order_sum(p)[0] == 0
    e = col.sum_errors(col.rank_order_sum(p), p)
    assert e["differ_from_exact"] == 0.5 and e["max_rel_err_vs_exact"] == 1.0
    assert Fraction(float(got[0])) == exact_sum(p[:, 0])


def test_sum_errors_of_the_exact_sum_are_zero_and_of_an_order_not():
    p = parts(4, 3000, np.float32, seed=1)
    e = col.sum_errors(col.exact_rank_sum(p), p)
    assert e["differ_from_exact"] == 0 and e["max_ulp_vs_exact"] == 0
    assert 0 < e["max_rel_err_vs_exact"] <= 2.0 ** -24       # one rounding: at most half an ulp
    e = col.sum_errors(col.rank_order_sum(p), p)
    assert sum(e["ulps_vs_exact"].values()) == 3000 and e["ulps_vs_exact"]["0"] == round(3000 * (1 - e["differ_from_exact"]))
    assert 0 < e["differ_from_exact"] < 1 and e["max_ulp_vs_exact"] >= 1 and e["max_rel_err_vs_exact"] > 0


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="permutation"):
        col.rank_order_sum(parts(3, 4, np.float32), [0, 0, 1])
    with pytest.raises(ValueError, match="same shape and dtype"):
        col.rank_order_sum([np.zeros(3, np.float32), np.zeros(4, np.float32)])
    with pytest.raises(ValueError, match="unsupported dtype"):
        col.rank_order_sum(np.zeros((2, 3), np.int32))
    with pytest.raises(ValueError, match="NaN or Inf"):
        col.exact_rank_sum(np.array([[np.inf], [1]], np.float32))
