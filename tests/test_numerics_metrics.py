"""numerics.metrics on hand-worked values."""
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

from numerics.metrics import (bitwise_equal, count_differing, distinct_count,
                              max_relative_difference, max_ulp, relative_error)


def test_bitwise_equal_and_count_differing():
    a = np.array([0.0, 1.0, np.nan], np.float32)
    assert bitwise_equal(a, a.copy())                           # equal-bit NaNs are equal
    b = np.array([-0.0, 1.0, np.nan], np.float32)
    assert not bitwise_equal(a, b) and count_differing(a, b) == 1
    c = a.copy()
    c.view(np.uint32)[2] |= 1                                   # a NaN with another payload
    assert count_differing(a, c) == 1
    with pytest.raises(ValueError, match="shapes"):
        bitwise_equal(a, a[:2])
    with pytest.raises(ValueError, match="dtypes"):
        bitwise_equal(a, a.astype(np.float64))
    h = np.array([1, 2], ml_dtypes.bfloat16)
    assert bitwise_equal(h, h.copy())


def test_max_ulp():
    a = np.array([1.0, 2.0, -0.0], np.float16)
    b = np.array([np.nextafter(np.float16(1), np.float16(2)), 2.0, 0.0], np.float16)
    assert max_ulp(a, b) == 1
    assert max_ulp(np.array([1, 2], ml_dtypes.bfloat16), np.array([1, 4], ml_dtypes.bfloat16)) == 128
    with pytest.raises(ValueError, match="NaN"):
        max_ulp(np.array([np.nan]), np.array([1.0]))


def test_relative_error():
    assert relative_error(np.float32(1.5), Fraction(3, 2)) == 0.0
    assert relative_error(1.1, 1.0) == pytest.approx(0.1)
    assert relative_error(np.float16(0.25), 0) == 0.25          # exact 0: absolute error
    assert relative_error(2.0, Fraction(-1)) == 3.0
    assert np.isnan(relative_error(np.nan, 1.0)) and relative_error(np.inf, 1.0) == np.inf
    assert relative_error(1.0, Fraction(1, 3)) == 2.0


def test_distinct_count_and_max_relative_difference():
    v = np.array([0.0, -0.0, 1.0, 1.0, np.nan, np.nan], np.float32)
    assert distinct_count(v) == 4
    a = np.array([1.0, 0.0, 4.0], np.float32)
    b = np.array([1.5, 0.0, 4.0], np.float32)
    assert max_relative_difference(a, b) == pytest.approx(1 / 3)
    assert max_relative_difference(a, a) == 0.0
    assert np.isnan(max_relative_difference(np.array([np.nan]), np.array([1.0])))
