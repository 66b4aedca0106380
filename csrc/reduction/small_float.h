// float16 / bfloat16 <-> double conversions by bit manipulation (host only).
//
// to_double is exact. from_double rounds once, to nearest-even, from a double: subnormals, overflow to
// infinity, infinities and NaN (quiet, sign and top payload bits kept) are handled. Adding two values
// of a p-bit format in double and rounding once with from_double is the correctly rounded p-bit sum:
// double rounding through double is innocuous because 53 >= 2p + 2.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace driftscope {

struct Fmt {
  int ebits;  // exponent field width
  int mbits;  // stored mantissa bits
};
constexpr Fmt kHalf{5, 10};
constexpr Fmt kBFloat16{8, 7};

inline double small_to_double(uint16_t bits, Fmt f) {
  const int bias = (1 << (f.ebits - 1)) - 1;
  const uint32_t mmask = (1u << f.mbits) - 1;
  const uint32_t emax_field = (1u << f.ebits) - 1;
  const bool neg = (bits >> 15) & 1;
  const uint32_t e = (bits >> f.mbits) & emax_field;
  const uint32_t m = bits & mmask;
  double v;
  if (e == emax_field) {
    if (m == 0) {
      v = INFINITY;
    } else {  // NaN: keep the payload in the top mantissa bits of the double
      uint64_t d = 0x7ff0000000000000ull | (uint64_t(m) << (52 - f.mbits)) | (1ull << 51);
      std::memcpy(&v, &d, 8);
    }
  } else if (e == 0) {
    v = std::ldexp(double(m), 1 - bias - f.mbits);
  } else {
    v = std::ldexp(double(m | (1u << f.mbits)), int(e) - bias - f.mbits);
  }
  return neg ? -v : v;
}

inline uint16_t double_to_small(double v, Fmt f) {
  const int bias = (1 << (f.ebits - 1)) - 1;
  const int emin = 1 - bias;
  const int emax = bias;
  const uint16_t emax_field = uint16_t((1u << f.ebits) - 1);
  uint64_t d;
  std::memcpy(&d, &v, 8);
  const uint16_t sign = uint16_t((d >> 63) << 15);
  if (std::isnan(v)) {
    uint16_t payload = uint16_t((d & 0x000fffffffffffffull) >> (52 - f.mbits));
    return uint16_t(sign | (emax_field << f.mbits) | (1u << (f.mbits - 1)) | payload);
  }
  const double a = std::fabs(v);
  if (std::isinf(a)) return uint16_t(sign | (emax_field << f.mbits));
  if (a == 0.0) return sign;
  int k;
  std::frexp(a, &k);  // a = frac * 2^k, frac in [0.5, 1)
  int e = k - 1;      // a in [2^e, 2^(e+1))
  if (e < emin) e = emin;
  // Quantum of the binade; a / ulp and its rounding are exact in double for both formats.
  const double r = std::nearbyint(std::ldexp(a, f.mbits - e));  // current mode: to nearest even
  const double rounded = std::ldexp(r, e - f.mbits);
  const double maxfinite = std::ldexp(double((2u << f.mbits) - 1), emax - f.mbits);
  if (rounded > maxfinite) return uint16_t(sign | (emax_field << f.mbits));
  if (rounded < std::ldexp(1.0, emin)) {  // subnormal (or zero after rounding)
    return uint16_t(sign | uint16_t(std::ldexp(rounded, f.mbits - emin)));
  }
  std::frexp(rounded, &k);
  e = k - 1;
  const uint32_t m = uint32_t(std::ldexp(rounded, f.mbits - e)) - (1u << f.mbits);
  return uint16_t(sign | (uint16_t(e + bias) << f.mbits) | m);
}

}  // namespace driftscope
