"""numerics.formats: rounding vs ml_dtypes/NumPy on every bit pattern, tf32, toward-zero, ULPs."""
import ml_dtypes
import numpy as np
import pytest

from numerics.formats import (FORMATS, cast, from_bits, get_format, quantize_int, round_to_format,
                              to_bits, ulp_distance)

SMALL = ["bfloat16", "float16", "float8_e4m3fn", "float8_e5m2"]


def _all_patterns(fmt):
    bits = np.arange(2 ** fmt.total_bits, dtype=np.uint32).astype(fmt.bits_dtype)
    return bits, bits.view(fmt.dtype)


def _ref_cast(x32, fmt):
    """The library cast from float32 (single rounding in NumPy and ml_dtypes)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return x32.astype(fmt.dtype)


@pytest.mark.parametrize("name", SMALL)
def test_every_pattern_round_trips(name):
    fmt = get_format(name)
    bits, vals = _all_patterns(fmt)
    with np.errstate(invalid="ignore"):
        v64 = vals.astype(np.float64)
    nan = np.isnan(v64)
    r = round_to_format(v64, fmt)
    assert np.array_equal(r[~nan], v64[~nan])
    assert np.isnan(r[nan]).all()
    assert np.array_equal(cast(v64, fmt).view(fmt.bits_dtype)[~nan], bits[~nan])
    assert np.array_equal(to_bits(v64[~nan], fmt), bits[~nan])
    assert np.array_equal(from_bits(bits, fmt).view(fmt.bits_dtype), bits)


@pytest.mark.parametrize("name", SMALL)
def test_values_between_patterns_match_library_cast(name):
    """float32 values at, just above and just below every midpoint of adjacent patterns (both
    signs), plus overflow/inf, rounded by cast() and by ml_dtypes/NumPy astype: same bits."""
    fmt = get_format(name)
    _, vals = _all_patterns(fmt)
    v = np.unique(vals.astype(np.float32)[~np.isnan(vals.astype(np.float32))])  # sorted, finite...
    v = v[np.isfinite(v)]
    mids = ((v[:-1].astype(np.float64) + v[1:]) / 2).astype(np.float32)       # exact in float32
    assert np.array_equal(mids.astype(np.float64), (v[:-1].astype(np.float64) + v[1:]) / 2)
    rng = np.random.default_rng(0)
    lo, hi = v[:-1].astype(np.float64), v[1:].astype(np.float64)
    between = (lo + (hi - lo) * rng.random(lo.size)).astype(np.float32)
    big = np.float32(fmt.max_finite)
    extra = np.array([np.inf, -np.inf, 3e38, -3e38, 1e-45, -1e-45, 0.0, -0.0, big,
                      np.nextafter(big, np.float32(np.inf))], dtype=np.float32)
    x = np.concatenate([mids, np.nextafter(mids, np.float32(np.inf)),
                        np.nextafter(mids, np.float32(-np.inf)), between, extra])
    ref = _ref_cast(x, fmt).view(fmt.bits_dtype)
    mine = cast(x, fmt).view(fmt.bits_dtype)
    assert np.array_equal(mine, ref), x[mine != ref][:10]


def test_float16_from_float64_midpoints_matches_numpy():
    """NumPy converts float64 -> float16 directly (one rounding): compare near every midpoint."""
    fmt = get_format("float16")
    _, vals = _all_patterns(fmt)
    v = np.unique(vals.astype(np.float64)[np.isfinite(vals.astype(np.float64))])
    mids = (v[:-1] + v[1:]) / 2
    x = np.concatenate([mids, np.nextafter(mids, np.inf), np.nextafter(mids, -np.inf)])
    with np.errstate(over="ignore"):
        ref = x.astype(np.float16)
    assert np.array_equal(cast(x, fmt).view(np.uint16), ref.view(np.uint16))


def test_bfloat16_from_float64_is_single_rounding():
    # 1 + 2^-8 is the midpoint of 1 and 1 + 2^-7; 2^-40 above it must round up. Going through
    # float32 (as ml_dtypes' float64 astype does) loses the 2^-40 and ties to even (1.0).
    x = np.array([1 + 2.0 ** -8 + 2.0 ** -40, -(1 + 2.0 ** -8 + 2.0 ** -40), 1 + 2.0 ** -8])
    assert cast(x, "bfloat16").astype(np.float64).tolist() == [1 + 2 ** -7, -(1 + 2 ** -7), 1.0]


def test_e4m3fn_overflow_is_nan_and_e5m2_overflow_is_inf():
    r = round_to_format([448.0, 464.0, 464.1, 1e6, np.inf, -1e6], "float8_e4m3fn")
    assert r[:2].tolist() == [448.0, 448.0]          # 464 is the tie 448|480: 448 is even
    assert np.isnan(r[2:]).all() and np.signbit(r[5])
    r = round_to_format([57344.0, 61440.0, 1e6, -1e6], "float8_e5m2")
    assert r.tolist() == [57344.0, np.inf, np.inf, -np.inf]


def test_tf32_hand_worked():
    e = 2.0 ** -10                                   # tf32 ulp at 1
    x = np.array([1 + e / 2, 1 + 3 * e / 2, 1 + e / 2 + 2.0 ** -20, -(1 + e / 2 + 2.0 ** -20),
                  2.0 ** -136, 2.0 ** -137, 3 * 2.0 ** -137, 3.4028234663852886e38])
    r = round_to_format(x, "tf32")
    assert r.tolist() == [1.0, 1 + 2 * e, 1 + e, -(1 + e), 2.0 ** -136, 0.0, 2.0 ** -135, np.inf]
    assert round_to_format(1 + e / 2, "tf32", "nearest_away") == 1 + e
    assert round_to_format(1 + e - 2.0 ** -30, "tf32", "toward_zero") == 1.0
    assert FORMATS["tf32"].max_finite == (2 - e) * 2.0 ** 127
    # bit layouts: 19-bit pattern (s | 8 exponent | 10 mantissa) or float32 bits
    assert to_bits(1.0, "tf32") == 127 << 10
    assert to_bits(-(1 + e), "tf32") == (1 << 18) | (127 << 10) | 1
    assert to_bits(1 + e, "tf32", tf32_layout="fp32") == 0x3F800000 | (1 << 13)
    assert from_bits(np.uint32((127 << 10) | 1), "tf32") == np.float32(1 + e)
    assert cast(np.float32(1 + e / 2), "tf32").dtype == np.float32
    with pytest.raises(ValueError):
        from_bits(np.uint32(1 << 19), "tf32")
    with pytest.raises(ValueError):
        from_bits(np.uint32(1), "tf32", tf32_layout="fp32")


def test_toward_zero_hand_worked():
    r = round_to_format([1.9999, -1.9999, 70000.0, -70000.0, 1e-9, -1e-9, np.inf, 65519.0],
                        "float16", "toward_zero")
    assert r.tolist() == [2 - 2 ** -10, -(2 - 2 ** -10), 65504.0, -65504.0, 0.0, -0.0, np.inf,
                          65504.0]
    assert np.signbit(r[5])
    assert round_to_format(500.0, "float8_e4m3fn", "toward_zero") == 448.0
    assert round_to_format(1 + 2.0 ** -7 - 2.0 ** -30, "bfloat16", "toward_zero") == 1.0
    assert round_to_format(-3.0 * 2 ** -134, "bfloat16", "toward_zero") == -(2.0 ** -133)


def test_ulp_distance_hand_worked():
    one = np.float32(1)
    assert ulp_distance(one, np.nextafter(one, np.float32(2))) == 1
    assert ulp_distance(np.float32(-0.0), np.float32(0.0)) == 0
    tiny = np.float32(1e-45)
    assert ulp_distance(tiny, -tiny) == 2
    assert ulp_distance(np.float32(1), np.float32(2)) == 2 ** 23
    assert ulp_distance(1.0, 2.0, "bfloat16") == 128
    assert ulp_distance(65504.0, np.inf, "float16") == 1
    assert ulp_distance(np.float16(-1), np.float16(1)) == 2 * 15360
    assert ulp_distance(448.0, -448.0, ml_dtypes.float8_e4m3fn) == 2 * 126
    assert ulp_distance(-8, 7, "int4") == 15
    assert ulp_distance(np.array([1.0, 2.0]), np.array([1.0, 4.0]), "float16").tolist() == [0, 1024]
    with pytest.raises(ValueError, match="NaN"):
        ulp_distance(np.float32(np.nan), np.float32(1))
    with pytest.raises(ValueError, match="representable"):
        ulp_distance(1.0 + 2 ** -20, 1.0, "float16")


def test_quantize_int_round_half_even_and_refuses_out_of_range():
    assert quantize_int([2.5, -8.5, 7.4, -0.5, 3.5, -7.5], "int4").tolist() == [2, -8, 7, 0, 4, -8]
    assert quantize_int([14.5, -0.4, 0.5, 1.5], "uint4").tolist() == [14, 0, 0, 2]
    assert quantize_int([7.9, -8.9], "int4", "toward_zero").tolist() == [7, -8]
    for bad, name in ((7.5, "int4"), (-9.0, "int4"), (15.5, "uint4"), (-0.6, "uint4"),
                      (np.nan, "int4")):
        with pytest.raises(ValueError, match=str(bad) if bad == bad else "nan"):
            quantize_int([0.0, bad], name)
    c = cast([-8.0, 7.0, 2.5], "int4")
    assert c.dtype == ml_dtypes.int4 and c.astype(np.int8).tolist() == [-8, 7, 2]
    assert to_bits([-1.0, 7.0, -8.0], "int4").tolist() == [15, 7, 8]
    assert from_bits(np.array([15, 8], np.uint8), "int4").astype(np.int8).tolist() == [-1, -8]
    assert from_bits(np.array([15], np.uint8), "uint4").astype(np.uint8).tolist() == [15]


def test_get_format_and_fields():
    with pytest.raises(ValueError, match="float8_e4m3fn"):
        get_format("fp8")
    with pytest.raises(ValueError, match="nearest_even"):
        round_to_format(1.0, "float16", "up")
    assert get_format(np.float16) is FORMATS["float16"]
    assert get_format(ml_dtypes.bfloat16).name == "bfloat16"
    for name in SMALL + ["float32"]:
        f = FORMATS[name]
        fi = ml_dtypes.finfo(f.dtype)
        assert f.max_finite == float(fi.max)
        assert f.smallest_normal == float(fi.smallest_normal)
        assert f.smallest_subnormal == float(fi.smallest_subnormal)
        assert f.mantissa_bits == fi.nmant and f.exponent_bits == fi.nexp
    assert FORMATS["float8_e4m3fn"].has_inf is False
    assert (FORMATS["int4"].min_finite, FORMATS["int4"].max_finite) == (-8, 7)
    assert (FORMATS["uint4"].min_finite, FORMATS["uint4"].max_finite) == (0, 15)


def test_signed_zero_and_nan_preserved():
    r = round_to_format([-0.0, -1e-300, 1e-300, np.nan], "float16")
    assert np.signbit(r[:2]).all() and not np.signbit(r[2]) and np.isnan(r[3])
