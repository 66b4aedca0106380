"""numerics.matmul: hand cases, exact limits, and refusals."""
from fractions import Fraction

import numpy as np
import pytest

from numerics.exact import fma, round_fraction
from numerics.formats import round_to_format
from numerics.matmul import MatmulModel, model_dot, model_matmul

U = 2.0 ** -23          # fp32 ulp of 1


def dot(terms_a, terms_b, m, c=None):
    return float(model_dot(np.array([terms_a]), np.array([terms_b]), c, m)[0])


def rnd(fmt, n, k, rng, spread=6):
    x = rng.standard_normal((n, k)) * np.exp2(rng.integers(-spread, spread + 1, (n, k)))
    return round_to_format(x, fmt)


def test_half_ulps_sum_in_one_block_and_not_across():
    h = 2.0 ** -12                                      # h*h = 2^-24: half an ulp of 1
    a, b = [1.0, h, h, 0.0], [1.0, h, h, 0.0]
    assert dot(a, b, MatmulModel("float16", 4, 3)) == 1 + U          # one block: exact 1 + u
    assert dot(a, b, MatmulModel("float16", 1, 3)) == 1.0            # sequential: each lost
    assert dot(a, b, MatmulModel("float16", 2, 3)) == 1.0            # block {1, h^2}, then {c, h^2}


def test_extra_bits_decide_a_survivor():
    t = 2.0 ** -14                                      # t*t = 2^-28 = 2^-(24+4)
    a, b = [1.0, t, -1.0], [1.0, t, 1.0]
    assert dot(a, b, MatmulModel("float16", 4, 5)) == 2.0 ** -28      # j=4 < p=5 survives
    assert dot(a, b, MatmulModel("float16", 4, 4)) == 0.0             # p=4: dropped
    assert dot(a, b, MatmulModel("float16", 4, -3)) == 0.0


def test_truncation_and_nearest_differ_above_half():
    h = 2.0 ** -12
    a, b = [1.0, h, 2.0 ** -14], [1.0, h, 2.0 ** -14]  # 1 + 2^-24 + 2^-28
    assert dot(a, b, MatmulModel("float16", 4, 5, "toward_zero")) == 1.0
    assert dot(a, b, MatmulModel("float16", 4, 5, "nearest_even")) == 1 + U
    assert dot([-x for x in a], b, MatmulModel("float16", 4, 5, "toward_zero")) == -1.0
    assert dot([-x for x in a], b, MatmulModel("float16", 4, 5, "nearest_even")) == -(1 + U)
    # exact tie 1 + 3/2 u: nearest-even goes up to 1 + 2u, truncation stays at 1 + u
    a2, b2 = [1.0, 2.0 ** -11, h, h], [1.0, 2.0 ** -12, h, 0.0]
    assert dot(a2, b2, MatmulModel("float16", 4, 3, "nearest_even")) == 1 + 2 * U
    assert dot(a2, b2, MatmulModel("float16", 4, 3, "toward_zero")) == 1 + U


def test_normalisation_between_blocks():
    # block 1: 1 + 1 + u = 2 + u (carry); block 2: + u.  Normalised: 2 (u lost) + u -> 2;
    # unnormalised keeps 2 + u (quantum u), then + u = 2 + 2u.
    a = [1.0, 1.0, 2.0 ** -12, 0.0, 2.0 ** -12]
    b = [1.0, 1.0, 2.0 ** -11, 0.0, 2.0 ** -11]
    assert dot(a, b, MatmulModel("float16", 4, 3, normalize=True)) == 2.0
    assert dot(a, b, MatmulModel("float16", 4, 3, normalize=False)) == 2 + 2 * U


def test_exact_products_versus_rounded_for_float32():
    m = 23
    x = 2 - 2.0 ** -m
    a, b = [-2.0, x], [2 - 2.0 ** (1 - m), x]           # -(4 - 2^-21) + (4 - 2^-21 + 2^-46)
    assert dot(a, b, MatmulModel("float32", 2, None, "nearest_even")) == 2.0 ** -46
    assert dot(a, b, MatmulModel("float32", 2, None, "nearest_even", exact_products=False)) == 0.0


@pytest.mark.parametrize("fmt", ["float16", "bfloat16", "float8_e4m3fn", "float32"])
def test_one_exact_block_is_the_correctly_rounded_sum(fmt):
    rng = np.random.default_rng(1)
    K = 24
    a, b = rnd(fmt, 60, K, rng), rnd(fmt, 60, K, rng)
    a[::3, K // 2:] = -a[::3, :K // 2]                  # cancellations
    got = model_dot(a, b, None, MatmulModel(fmt, K, None, "nearest_even"))
    want = [round_fraction(sum(Fraction(x) * Fraction(y) for x, y in zip(ra, rb)), "float32")
            for ra, rb in zip(a, b)]
    assert np.array_equal(got.astype(np.float32).view(np.uint32),
                          np.array(want, np.float32).view(np.uint32))


def test_block_of_one_is_a_chain_of_fmas():
    rng = np.random.default_rng(2)
    a, b = rnd("float32", 50, 16, rng), rnd("float32", 50, 16, rng)
    got = model_dot(a, b, None, MatmulModel("float32", 1, None, "nearest_even"))
    acc = np.zeros(50, np.float32)
    for k in range(16):
        acc = fma(a[:, k].astype(np.float32), b[:, k].astype(np.float32), acc, "float32")
    assert np.array_equal(got.astype(np.float32).view(np.uint32), acc.view(np.uint32))


def test_int64_and_python_int_paths_agree():
    rng = np.random.default_rng(3)
    a, b = rnd("bfloat16", 40, 32, rng, 20), rnd("bfloat16", 40, 32, rng, 20)
    for p in (0, 3, 25):
        m = MatmulModel("bfloat16", 8, p, "nearest_even")
        fast = model_dot(a, b, None, m)
        import numerics.matmul as nm
        old = nm._INT64_WIDTH
        nm._INT64_WIDTH = 0                              # force the object (Python int) path
        try:
            slow = model_dot(a, b, None, m)
        finally:
            nm._INT64_WIDTH = old
        assert np.array_equal(fast, slow)


def test_matmul_equals_rowwise_dots_and_accumulator_c():
    rng = np.random.default_rng(4)
    A, B = rnd("float16", 7, 40, rng), rnd("float16", 40, 5, rng)
    m = MatmulModel("float16", 8, 3)
    C = model_matmul(A, B, m, chunk=100)
    D = model_dot(np.repeat(A, 5, 0), np.tile(B.T, (7, 1)), None, m).reshape(7, 5)
    assert np.array_equal(C, D)
    c = np.full(2, 1.0)
    assert np.array_equal(model_dot(np.zeros((2, 3)), np.zeros((2, 3)), c, m), c)


@pytest.mark.parametrize("kw, msg", [
    ({"block_size": 0}, "block_size"), ({"extra_bits": -30}, "extra_bits"),
    ({"rounding": "up"}, "rounding"), ({"input_format": "int4"}, "input_format"),
    ({"align_to": "max"}, "align_to"), ({"accumulator": "float16"}, "float32"),
])
def test_bad_parameters(kw, msg):
    with pytest.raises(ValueError, match=msg):
        MatmulModel(**kw)


def test_bad_inputs():
    m = MatmulModel("float16", 4, 3)
    with pytest.raises(ValueError, match="not representable in float16"):
        model_dot(np.array([[1 + 2.0 ** -20]]), np.array([[1.0]]), None, m)
    with pytest.raises(ValueError, match="NaN or inf"):
        model_dot(np.array([[np.nan]]), np.array([[1.0]]), None, m)
    with pytest.raises(ValueError, match="same shape"):
        model_dot(np.zeros((2, 3)), np.zeros((2, 4)), None, m)
    with pytest.raises(ValueError, match="nonempty"):
        model_dot(np.zeros((2, 0)), np.zeros((2, 0)), None, m)
    with pytest.raises(ValueError, match="empty matmul"):
        model_matmul(np.zeros((0, 3)), np.zeros((3, 2)), m)
    with pytest.raises(ValueError, match=r"need A \(M, K\)"):
        model_matmul(np.zeros((2, 3)), np.zeros((4, 2)), m)


def test_promotion_adds_unit_sums_in_fp32_to_nearest():
    # [1, 0, 0, 0, 1.5u]: one truncating unit sum gives 1 + u; with a promotion after 4 products
    # the fp32 add of 1 and 1.5u rounds to nearest: 1 + 2u.
    a = [1.0, 0.0, 0.0, 0.0, 1.5 * 2.0 ** -12]
    b = [1.0, 0.0, 0.0, 0.0, 2.0 ** -11]
    assert dot(a, b, MatmulModel("float16", 8, 3, "toward_zero")) == 1 + U
    assert dot(a, b, MatmulModel("float16", 4, 3, "toward_zero", promote_every=4)) == 1 + 2 * U
    with pytest.raises(ValueError, match="promote_every"):
        MatmulModel("float16", 8, 3, promote_every=12)


def test_floor_cut_differs_from_toward_zero_on_negative_terms():
    # [1, -2^-28]: with p = 3 the grid is 2^-26; toward zero drops -2^-28 (sum 1); floor makes it
    # -2^-26, so the sum 1 - 2^-26 truncates to 1 - 2^-24.
    a, b = [1.0, -(2.0 ** -14)], [1.0, 2.0 ** -14]
    assert dot(a, b, MatmulModel("float16", 4, 3, "toward_zero")) == 1.0
    assert dot(a, b, MatmulModel("float16", 4, 3, "toward_zero", align_cut="floor")) == 1 - 2.0 ** -24
