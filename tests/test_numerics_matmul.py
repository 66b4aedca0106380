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


def test_sum_bits_truncate_a_block_result_that_grew():
    # 4 products of 1 + 2^-10 (fp16 1 + 2^-10 times 1): the sum 4 + 2^-8 is exact in fp32 (24 bits)
    # (11 significant bits) but with a 10-bit accumulator it truncates to 4 (grid 2^(2-9) = 2^-7).
    x = 1 + 2.0 ** -10
    a, b = [x] * 4, [1.0] * 4
    assert dot(a, b, MatmulModel("float16", 4, 3)) == 4 + 2.0 ** -8
    assert dot(a, b, MatmulModel("float16", 4, 3, sum_bits=10)) == 4.0
    assert dot(a, b, MatmulModel("float16", 4, 3, sum_bits=11)) == 4 + 2.0 ** -8
    # nearest-even at 10 bits: 4 + 2^-8 is exactly half of the 2^-7 grid step -> even (4);
    # 3 products: 3 + 3 * 2^-10 = 3 + 0.75 * 2^-8 on the grid 2^(1-9) = 2^-8: nearest goes up to
    # 3 + 2^-8, truncation down to 3
    assert dot(a, b, MatmulModel("float16", 4, 3, "nearest_even", sum_bits=10)) == 4.0
    assert dot(a[:3], b[:3], MatmulModel("float16", 4, 3, "nearest_even", sum_bits=10)) == 3 + 2.0 ** -8
    assert dot(a[:3], b[:3], MatmulModel("float16", 4, 3, "toward_zero", sum_bits=10)) == 3.0
    with pytest.raises(ValueError, match="sum_bits"):
        MatmulModel("float16", sum_bits=25)


def test_split_k_adds_slice_results_in_fp32_in_slice_order():
    # [1, 2^-24 x 2 | 2^-24 x 2 ...]: in one chain (n_b = 1, RN) every 2^-24 is lost against 1;
    # with split_k = 2 the second slice sums its 2^-24s exactly (2^-23) and the fp32 add keeps it.
    h = 2.0 ** -12
    a = [1.0, h, h, h, h, 0.0]
    b = [1.0, h, h, h, h, 0.0]
    chain = MatmulModel("float32", 1, None, "nearest_even")
    assert dot(a, b, chain) == 1.0
    assert dot(a, b, MatmulModel("float32", 1, None, "nearest_even", split_k=2)) == 1 + U
    # slices of ceil(6/4) = 2: [1, h^2] [h^2, h^2] [h^2, 0]: 1 | 2^-23 | 2^-24 -> 1 + u, then tie
    # 1 + u + u/2 rounds to even 1 + 2u
    assert dot(a, b, MatmulModel("float32", 1, None, "nearest_even", split_k=4)) == 1 + 2 * U
    with pytest.raises(ValueError, match="split_k"):
        MatmulModel("float16", split_k=0)


def test_split_k_equals_its_definition_on_random_rows():
    rng = np.random.default_rng(5)
    A, B = rnd("bfloat16", 9, 50, rng), rnd("bfloat16", 50, 7, rng)
    m = MatmulModel("bfloat16", 8, 2, align_to="exponent_sum")
    got = model_matmul(A, B, MatmulModel(**{**m.as_dict(), "split_k": 3}))
    parts = [model_matmul(A[:, s:s + 17], B[s:s + 17], m) for s in (0, 17, 34)]
    want = fma(np.ones_like(parts[0]), parts[0], parts[1], "float32").astype(np.float64)
    want = fma(np.ones_like(want), want, parts[2], "float32").astype(np.float64)
    assert np.array_equal(got.astype(np.float32).view(np.uint32), want.astype(np.float32).view(np.uint32))


def test_add_fp32_is_correctly_rounded_on_double_rounding_traps():
    from numerics.matmul import add_fp32
    # 1 + 2^-24 + 2^-60: float64 rounds the sum to the fp32 tie 1 + 2^-24, fp32 must round up
    x = np.array([1.0 + 2.0 ** -24, 1.0, -(1.0 + 2.0 ** -24)])
    y = np.array([2.0 ** -60, 2.0 ** -24, -(2.0 ** -60)])
    want = [Fraction(1) + Fraction(2) ** -24 + Fraction(2) ** -60, Fraction(1) + Fraction(2) ** -24,
            -(Fraction(1) + Fraction(2) ** -24 + Fraction(2) ** -60)]
    assert list(add_fp32(x, y)) == [round_fraction(w, "float32") for w in want]


def test_fast_fma_chain_equals_the_block_path():
    rng = np.random.default_rng(6)
    a, b = rnd("float32", 40, 33, rng, 30), rnd("float32", 40, 33, rng, 30)
    a[::4, 16:32] = -a[::4, :16]
    m = MatmulModel("float32", 1, None, "nearest_even")
    fast = model_dot(a, b, None, m)
    import numerics.matmul as nm
    n = a.shape[0]
    slow = nm._chain(a * b, nm._exponent(a * b), np.zeros(n), 1, None, np.ones(n, bool),
                     np.ones(n, bool), np.zeros(n, bool), False)   # normalize=False: no fast path
    slow2 = nm._chain(a * b, nm._exponent(a * b), np.zeros(n), 1, None, np.ones(n, bool),
                      np.ones(n, bool), np.ones(n, bool) & (np.arange(n) >= 0), False, 24)
    assert np.array_equal(fast, slow2)
    # the unnormalised chain differs somewhere (so the comparison above could fail)
    assert not np.array_equal(fast, slow)


def test_mixed_fp8_operands_are_checked_per_operand():
    m = MatmulModel("float8_e4m3fn_x_e5m2", 32, -10)
    a, b = np.array([[1.125, 2.0]]), np.array([[2.0 ** -16, 1.0]])   # 1.125: e4m3 only; 2^-16: e5m2 only
    assert model_dot(a, b, None, m)[0] == 2.0                       # grid 2^(1-13): the tiny one dropped
    exact = MatmulModel("float8_e4m3fn_x_e5m2", 32, None, "nearest_even")
    assert model_dot(a, b, None, exact)[0] == 2.0 + 1.125 * 2.0 ** -16
    with pytest.raises(ValueError, match="not representable in float8_e5m2"):
        model_dot(b * 0 + 1.125, a * 0 + 1.125, None, m)     # 1.125 as B: not e5m2
    with pytest.raises(ValueError, match="not representable in float8_e4m3fn"):
        model_dot(np.array([[2.0 ** -16]]), np.array([[1.0]]), None, m)


def test_split_k_slices_aligned_and_the_model_uses_them():
    from numerics.matmul import split_k_slices
    assert split_k_slices(6, 4) == [(0, 2), (2, 4), (4, 6)]                       # ceil(6/4) = 2: 3 slices
    assert split_k_slices(4096, 3, 256) == [(0, 1536), (1536, 3072), (3072, 4096)]
    assert split_k_slices(600, 3, 256) == [(0, 256), (256, 512), (512, 600)]
    assert split_k_slices(300, 3, 256) == [(0, 256), (256, 300)]                   # fewer than asked
    assert split_k_slices(14336, 3, 256) == [(0, 4864), (4864, 9728), (9728, 14336)]
    with pytest.raises(ValueError):
        split_k_slices(0, 3)
    with pytest.raises(ValueError, match="split_align"):
        MatmulModel("float16", split_align=0)
    rng = np.random.default_rng(6)
    A, B = rnd("float16", 5, 40, rng), rnd("float16", 40, 3, rng)
    m = MatmulModel("float16", 1, None, "nearest_even", promote_every=4)
    got = model_matmul(A, B, MatmulModel(**{**m.as_dict(), "split_k": 3, "split_align": 8}))
    # slices of ceil(40 / 3) = 14 rounded up to 16: [0, 16) [16, 32) [32, 40), added in order
    parts = [model_matmul(A[:, a:b], B[a:b], m) for a, b in ((0, 16), (16, 32), (32, 40))]
    want = fma(np.ones_like(parts[0]), parts[0], parts[1], "float32").astype(np.float64)
    want = fma(np.ones_like(want), want, parts[2], "float32").astype(np.float64)
    assert np.array_equal(got.astype(np.float32).view(np.uint32), want.astype(np.float32).view(np.uint32))
    assert "split_align=8" in MatmulModel(split_k=3, split_align=8).describe()
