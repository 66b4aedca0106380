"""numerics.exact: exact sums, rational rounding, and the correctly rounded FMA vs Fractions."""
import math
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import numerics.exact as exact_mod
from numerics.exact import (exact_sum, exact_sum_float64, exact_value, fma, mul_add,
                            round_fraction)
from numerics.formats import cast, get_format, round_to_format

HYP = settings(derandomize=True, database=None, deadline=None, max_examples=300)
FMA_FORMATS = ["float32", "float16", "bfloat16"]


def _bits(a):
    a = np.asarray(a)
    return a.view({1: np.uint8, 2: np.uint16, 4: np.uint32}[a.dtype.itemsize])


# ---------------------------------------------------------------- exact values and rounding


def test_exact_value():
    assert exact_value(0.1) == Fraction(3602879701896397, 2 ** 55)
    assert exact_value(np.float32(0.1)) == Fraction(13421773, 2 ** 27)
    assert exact_value(ml_dtypes.bfloat16(1.5)) == Fraction(3, 2)
    for bad in (math.inf, -math.inf, math.nan):
        with pytest.raises(ValueError):
            exact_value(bad)


@pytest.mark.parametrize("name", ["float32", "bfloat16", "float16", "float8_e4m3fn",
                                  "float8_e5m2", "tf32"])
def test_round_fraction_matches_round_to_format(name):
    rng = np.random.default_rng(1)
    fmt = get_format(name)
    x = rng.standard_normal(3000) * 2.0 ** rng.integers(-160, 130, 3000)
    for mode in ("nearest_even", "toward_zero", "nearest_away"):
        ref = round_to_format(x, fmt, mode)
        got = np.array([round_fraction(Fraction(v), fmt, mode) for v in x])
        assert np.array_equal(got, ref, equal_nan=True)


def test_round_fraction_hand_worked():
    assert round_fraction(Fraction(1) + Fraction(1, 2 ** 8) + Fraction(1, 2 ** 60), "bfloat16") == \
        1 + 2 ** -7
    assert round_fraction(Fraction(1, 3), "float32") == float(np.float32(1 / 3))
    assert round_fraction(Fraction(-5, 2), "int4") == -2.0
    assert round_fraction(Fraction(10 ** 400), "float64") == math.inf
    assert round_fraction(Fraction(10 ** 400), "float64", "toward_zero") == 1.7976931348623157e308
    assert math.isnan(round_fraction(Fraction(500), "float8_e4m3fn"))
    assert round_fraction(Fraction(1, 2 ** 150), "float32") == 0.0      # tie with 0 -> even
    assert round_fraction(Fraction(3, 2 ** 151), "float32") == 2.0 ** -149


# ---------------------------------------------------------------- exact sums


def test_exact_sum_cancellation_and_fsum():
    assert exact_sum([1e30, 1.0, -1e30]) == 1
    assert exact_sum_float64([1e30, 1.0, -1e30]) == 1.0
    assert exact_sum([1e308, 1e308, -1e308]) == Fraction(1e308)
    assert exact_sum(np.array([2.0 ** -1074, 2.0 ** 1023])) == Fraction(2) ** 1023 + \
        Fraction(1, 2 ** 1074)
    rng = np.random.default_rng(2)
    for dt in (np.float64, np.float32, np.float16, ml_dtypes.bfloat16):
        k = 3 if dt == np.float16 else 8
        x = (rng.standard_normal(20000) * 10.0 ** rng.integers(-k, k, 20000)).astype(dt)
        x = np.concatenate([x, -x[:5000]])                                   # heavy cancellation
        ref = sum(map(Fraction, x.astype(np.float64).tolist()))
        assert exact_sum(x) == ref
        assert exact_sum_float64(x) == math.fsum(x.astype(np.float64).tolist())


def test_exact_sum_chunks_combine(monkeypatch):
    monkeypatch.setattr(exact_mod, "_CHUNK", 1000)
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(10_500) * 2.0 ** rng.integers(-140, 120, 10_500)).astype(np.float32)
    assert exact_sum(x) == sum(map(Fraction, x.tolist()))
    y = rng.standard_normal(5_300) * 2.0 ** rng.integers(-1070, 1000, 5_300)
    assert exact_sum(y) == sum(map(Fraction, y.tolist()))


def test_exact_sum_large_float32_is_fast():
    x = np.full(1 << 24, np.float32(1 - 2 ** -24))          # largest significand, many times
    assert exact_sum(x) == (1 << 24) * Fraction(np.float32(1 - 2 ** -24).item())


def test_exact_sum_rejects_nan_inf():
    with pytest.raises(ValueError, match="element 2 is .*nan"):
        exact_sum([1.0, 2.0, math.nan])
    with pytest.raises(ValueError, match="inf"):
        exact_sum(np.array([np.inf], np.float32))


@HYP
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=40))
def test_exact_sum_hypothesis(xs):
    assert exact_sum(np.array(xs, dtype=np.float64)) == sum(map(Fraction, xs), Fraction(0))


# ---------------------------------------------------------------- FMA


def _fma_reference(a, b, c, fmt):
    """fma by Fraction arithmetic and round_fraction, with IEEE's sign of an exact zero."""
    out = []
    for x, y, z in zip(a.astype(np.float64).tolist(), b.astype(np.float64).tolist(),
                       c.astype(np.float64).tolist()):
        q = Fraction(x) * Fraction(y) + Fraction(z)
        if q == 0:
            prod_neg = math.copysign(1, x) * math.copysign(1, y) < 0
            neg = (x * y == 0 and z == 0 and prod_neg and math.copysign(1, z) < 0)
            out.append(-0.0 if neg else 0.0)
        else:
            out.append(round_fraction(q, fmt))
    return cast(np.array(out), fmt)


@np.errstate(all="ignore")
def _random_operands(fmt, n, rng):
    """A mix: random bit patterns, values of nearby magnitude, and c close to -a*b (cancellation)."""
    f = get_format(fmt)
    nbits = f.total_bits
    raw = rng.integers(0, 2 ** nbits, size=(3, n), dtype=np.uint64).astype(f.bits_dtype).view(f.dtype)
    scale = rng.integers(-8, 8, size=(3, n)).astype(np.float64)
    near = cast(rng.standard_normal((3, n)) * 2.0 ** scale, fmt)
    a, b, c = (np.where(rng.random(n) < 0.3, raw[i], near[i]) for i in range(3))
    cancel = rng.random(n) < 0.3
    c = np.where(cancel, cast(-(a.astype(np.float64) * b.astype(np.float64)) *
                              (1 + rng.standard_normal(n) * 2.0 ** -10), fmt), c)
    finite = np.isfinite(a.astype(np.float64) * b.astype(np.float64) + c.astype(np.float64))
    finite &= np.isfinite(a.astype(np.float64)) & np.isfinite(b.astype(np.float64))
    return a[finite], b[finite], c[finite]


@pytest.mark.parametrize("fmt", FMA_FORMATS)
def test_fma_correctly_rounded_random(fmt):
    rng = np.random.default_rng(4)
    a, b, c = _random_operands(fmt, 12_000, rng)
    assert a.size >= 10_000
    got = fma(a, b, c, fmt)
    assert got.dtype == get_format(fmt).dtype
    ref = _fma_reference(a, b, c, fmt)
    assert np.array_equal(_bits(got), _bits(ref))


def _float32_double_rounding_cases(rng, n):
    """a*b + c = y + h - h 2^-2j with y an odd-significand float32, h = ulp(y)/2, 15 <= j <= 23.

    The exact value is just below the midpoint y + h, so the correct float32 is y; but it lies
    within half a float64 ulp of the midpoint, so float64 rounds to the midpoint itself, which then
    ties to the even neighbour y + 2h. Signs and operand order are varied."""
    sig = (rng.integers(2 ** 22, 2 ** 23, n) * 2 + 1).astype(np.float64)     # odd, 24 bits
    e = rng.integers(-90, 90, n)
    y = np.ldexp(sig, e - 23)                                                 # ulp(y) = 2^(e-23)
    h = np.ldexp(np.ones(n), e - 24)
    j = rng.integers(15, 24, n)
    a = 1 + np.ldexp(np.ones(n), -j)
    b = h * (1 - np.ldexp(np.ones(n), -j))
    s = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    swap = rng.random(n) < 0.5
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    a, c = s * a, s * y
    out = [v.astype(np.float32) for v in (a, b, c)]
    assert all(np.array_equal(o.astype(np.float64), v) for o, v in zip(out, (a, b, c)))
    return out


def test_fma_float32_adversarial_double_rounding():
    rng = np.random.default_rng(5)
    a, b, c = _float32_double_rounding_cases(rng, 2000)
    naive = cast(a.astype(np.float64) * b + c, "float32")      # round to float64, then float32
    ref = _fma_reference(a, b, c, "float32")
    assert np.all(_bits(naive) != _bits(ref))                  # the generator really is adversarial
    assert np.array_equal(_bits(fma(a, b, c, "float32")), _bits(ref))
    assert np.array_equal(ref, c)                              # the right answer is y itself


def _midpoint_product_cases(fmt, rng, n):
    """a*b exactly a midpoint of ``fmt`` and |c| = 2^-60 |a*b|, c's sign pointing at the odd
    neighbour: the exact value rounds to the odd neighbour, but float64 drops c and the midpoint
    ties to the even one. Needs c far below a*b, which float32's and bfloat16's exponent range
    allows (float16's does not: see test_fma_naive_float64_is_right_for_float16)."""
    p = get_format(fmt).precision
    out = []
    while len(out) < n:
        ku = int(rng.integers(2, p))
        u = int(rng.integers(2 ** (ku - 1), 2 ** ku)) | 1
        v = int(rng.integers(2 ** (p - ku), 2 ** (p - ku + 1))) | 1
        if (u * v).bit_length() != p + 1:
            continue                                         # u*v must be a (p+1)-bit odd number
        ea, eb = (int(e) for e in rng.integers(-40, 20, 2))
        a, b = math.ldexp(u, ea), math.ldexp(v, eb)
        M = (u * v) >> 1                                     # a*b between M and M+1 quanta
        same = M % 2 == 0                                    # even M: the odd one is M + 1
        sa, sb = (1 if r < 0.5 else -1 for r in rng.random(2))
        prod = sa * sb * a * b
        c = math.copysign(math.ldexp(1.0, ea + eb + p - 60), prod if same else -prod)
        out.append((sa * a, sb * b, c))
    return [cast(np.array(col), fmt) for col in zip(*out)]


@pytest.mark.parametrize("fmt", ["float32", "bfloat16"])
def test_fma_adversarial_midpoint_products(fmt):
    rng = np.random.default_rng(8)
    a, b, c = _midpoint_product_cases(fmt, rng, 2000)
    naive = cast(a.astype(np.float64) * b.astype(np.float64) + c.astype(np.float64), fmt)
    ref = _fma_reference(a, b, c, fmt)
    assert np.all(_bits(naive) != _bits(ref))
    assert np.array_equal(_bits(fma(a, b, c, fmt)), _bits(ref))


def test_fma_naive_float64_is_right_for_float16():
    """float16 has no double-rounding cases: |c| >= 2^-24 and |a*b| < 2^16 keep the far bit within
    53 bits of a midpoint bit of a*b, and a*b's 22 bits cannot hold both. Random check."""
    rng = np.random.default_rng(6)
    a, b, c = _random_operands("float16", 20_000, rng)
    naive = cast(a.astype(np.float64) * b.astype(np.float64) + c.astype(np.float64), "float16")
    assert np.array_equal(_bits(naive), _bits(fma(a, b, c, "float16")))


@pytest.mark.parametrize("fmt", FMA_FORMATS)
def test_fma_special_values(fmt):
    f = get_format(fmt)
    big, tiny = f.max_finite, f.smallest_subnormal
    cases = [  # a, b, c, expected (float64; NaN compared with isnan; zero signs checked)
        (np.inf, 0.0, 1.0, np.nan), (np.inf, 1.0, -np.inf, np.nan), (np.nan, 1.0, 1.0, np.nan),
        (np.inf, 2.0, 1.0, np.inf), (-np.inf, 2.0, np.inf, np.nan), (1.0, 1.0, np.inf, np.inf),
        (big, 2.0, 0.0, np.inf), (big, -2.0, 0.0, -np.inf), (big, 2.0, -big, big),
        (big, big, -np.inf, -np.inf),
        (1.0, 1.0, -1.0, 0.0), (-1.0, 1.0, 1.0, 0.0), (-0.0, 1.0, -0.0, -0.0),
        (0.0, -1.0, 0.0, 0.0), (0.0, -1.0, -0.0, -0.0), (-0.0, -0.0, -0.0, 0.0),
        (tiny, 0.5, 0.0, 0.0), (tiny, 0.75, 0.0, tiny), (tiny, -0.5, 0.0, -0.0),
        (tiny, 1.0, tiny, 2 * tiny), (tiny, 0.5, -tiny, -0.0), (tiny, 0.75, -tiny, -0.0),
        (tiny, 0.25, -tiny, -tiny), (tiny, 1.5, 0.0, 2 * tiny),
    ]
    a, b, c, want = (np.array(col) for col in zip(*cases))
    got = fma(a, b, c, fmt).astype(np.float64)
    assert np.array_equal(got, want, equal_nan=True)
    num = ~np.isnan(want)                    # NaN sign bits are not specified by IEEE 754
    assert np.array_equal(np.signbit(got[num]), np.signbit(want[num]))
    fin = np.isfinite(a) & np.isfinite(b) & np.isfinite(c)
    ref = _fma_reference(*(cast(v[fin], fmt) for v in (a, b, c)), fmt)
    assert np.array_equal(_bits(ref), _bits(cast(want[fin], fmt)))


def test_fma_scalars_and_broadcast():
    r = fma(np.float32(3), np.array([1, 2], np.float32), np.float32(1), "float32")
    assert r.dtype == np.float32 and r.tolist() == [4.0, 7.0]
    with pytest.raises(ValueError, match="float64"):
        fma(1.0, 1.0, 1.0, "float64")


def test_mul_add_rounds_twice():
    # float16: a = 1 + 2^-10, b = 1 - 2^-11, a*b = 1 + 2^-11 - 2^-21: just below the midpoint of
    # 1 and 1 + 2^-10, so round(a*b) = 1 and round(1 - 1) = 0; fused, 2^-11 - 2^-21 is exact.
    a = np.float16(1 + 2 ** -10)
    b = np.float16(1 - 2 ** -11)
    assert mul_add(a, b, np.float16(-1), "float16") == 0.0
    assert fma(a, b, np.float16(-1), "float16") == np.float16(2 ** -11 - 2 ** -21)
    rng = np.random.default_rng(7)
    x, y, z = _random_operands("bfloat16", 3000, rng)
    prod = cast(x.astype(np.float64) * y.astype(np.float64), "bfloat16")
    ok = np.isfinite(prod.astype(np.float64))
    ref = _fma_reference(prod[ok], np.ones(ok.sum(), ml_dtypes.bfloat16), z[ok], "bfloat16")
    assert np.array_equal(_bits(mul_add(x, y, z, "bfloat16"))[ok], _bits(ref))


@HYP
@given(st.floats(width=32, allow_nan=False, allow_infinity=False),
       st.floats(width=32, allow_nan=False, allow_infinity=False),
       st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_fma_float32_hypothesis(a, b, c):
    a, b, c = (np.array([v], np.float32) for v in (a, b, c))
    assert _bits(fma(a, b, c, "float32")).tolist() == _bits(_fma_reference(a, b, c, "float32")).tolist()
