"""numerics.fma_programs: hand-checked cases where one rounding (fma) and two (mul_add) differ."""
import ml_dtypes
import numpy as np
import pytest

from numerics import fma_programs as fp
from numerics.formats import to_bits

# (format, e, dtype): u = 1 + 2^-e has u*u = 1 + 2^(1-e) + 2^-2e; 2^-2e is at most half an ulp of 1, and
# round-half-even drops it, so round(u*u) - 1 = 2^(1-e) while the fused u*u - 1 = 2^(1-e) + 2^-2e.
#   float32 (ulp(1) = 2^-23): e = 12, 2^-24 is a tie, 1 + 2^-11 is even -> down.
#   float16 (ulp(1) = 2^-10): e = 6, 2^-12 < half ulp -> down.
#   bfloat16 (ulp(1) = 2^-7): e = 4, 2^-8 is a tie, 1 + 2^-3 is even -> down.
CASES = [("float32", 12, np.float32), ("float16", 6, np.float16), ("bfloat16", 4, ml_dtypes.bfloat16)]


def _expected(e):
    return {"fma": 2.0 ** (1 - e) + 2.0 ** (-2 * e), "mul_add": 2.0 ** (1 - e)}


@pytest.mark.parametrize("fmt,e,dt", CASES)
def test_dot_hand_checked(fmt, e, dt):
    u = 1 + 2.0 ** -e
    a = np.array([[1.0, u]], dtype=dt)
    b = np.array([[-1.0, u]], dtype=dt)  # acc = -1 (exact), then op(u, u, -1)
    for variant, want in _expected(e).items():
        got = fp.dot(a, b, fmt, variant)
        assert got.dtype == np.dtype(dt)
        assert float(got[0]) == want, (variant, float(got[0]))


@pytest.mark.parametrize("fmt,e,dt", CASES)
def test_horner_and_axpy_hand_checked(fmt, e, dt):
    u = 1 + 2.0 ** -e
    x = np.array([u, 2.0], dtype=dt)
    for variant, want in _expected(e).items():
        h = fp.horner(np.array([u, -1.0], dtype=dt), x, fmt, variant)  # u*x - 1
        assert float(h[0]) == want and float(h[1]) == float(np.asarray(2 * u - 1, dtype=dt))
        y = fp.axpy(np.asarray(u, dtype=dt), x, np.array([-1.0, -1.0], dtype=dt), fmt, variant)
        assert float(y[0]) == want


def test_horner_degree_two_by_hand():
    # float32: p = c0 x^2 + c1 x + c2 with x = u = 1 + 2^-12, c0 = 1, c1 = 0, c2 = -1:
    # step 1: op(1, u, 0) = u (exact); step 2: op(u, u, -1) -> fused 2^-11 + 2^-24, unfused 2^-11.
    u = np.float32(1 + 2.0 ** -12)
    c = np.array([1, 0, -1], dtype=np.float32)
    assert fp.horner(c, np.array([u]), "float32", "fma")[0] == np.float32(2.0 ** -11 + 2.0 ** -24)
    assert fp.horner(c, np.array([u]), "float32", "mul_add")[0] == np.float32(2.0 ** -11)


def test_first_step_is_the_same_and_random_inputs_differ_somewhere():
    rng = np.random.default_rng([0, 1])
    a = rng.uniform(-1, 1, (512, 16)).astype(np.float32)
    b = rng.uniform(-1, 1, (512, 16)).astype(np.float32)
    one = [to_bits(fp.dot(a[:, :1], b[:, :1], "float32", v), "float32") for v in fp.VARIANTS]
    assert np.array_equal(one[0], one[1])  # a single product: both round it once
    full = [to_bits(fp.dot(a, b, "float32", v), "float32") for v in fp.VARIANTS]
    differ = np.count_nonzero(full[0] != full[1])
    assert 0 < differ < 512


def test_dot_is_sequential_not_numpy():
    # 2^24 + 1 + 1 in float32: sequential accumulation loses both ones; a float64 sum would not.
    a = np.array([[2.0 ** 24, 1.0, 1.0]], dtype=np.float32)
    b = np.ones_like(a)
    assert fp.dot(a, b, "float32", "fma")[0] == np.float32(2.0 ** 24)


def test_errors():
    with pytest.raises(ValueError, match="variant"):
        fp.dot(np.ones((1, 1), np.float32), np.ones((1, 1), np.float32), "float32", "fused")
    with pytest.raises(ValueError, match="format"):
        fp.axpy(1.0, np.ones(2), np.ones(2), "float64", "fma")
    with pytest.raises(ValueError, match="representable"):
        fp.axpy(0.1, np.ones(2, np.float16), np.ones(2, np.float16), "float16", "fma")
    with pytest.raises(ValueError, match="same shape"):
        fp.dot(np.ones((2, 3), np.float32), np.ones((3, 2), np.float32), "float32", "fma")
    with pytest.raises(ValueError, match="program"):
        fp.program("gemm", {}, "float32", "fma")
