// C++ CPU reference of the dequantisation kernels: the same bits as the CUDA kernels and as
// numerics/dequant.py. Compiled with -ffp-contract=off, so float `a*b - c` is two roundings; std::fma is
// used only in the fma formula. float16/bfloat16 arithmetic: each op done in double (exact here: the
// operands are fp16 values and small integers, all multiples of 2^-24 below 2^20) and rounded once.
#include <cmath>
#include <cstring>

#include "../reduction/small_float.h"
#include "dequant.h"

namespace driftscope {
namespace dq {

namespace {

inline double h2d(uint16_t b) { return small_to_double(b, kHalf); }
inline double rh(double v) { return small_to_double(double_to_small(v, kHalf), kHalf); }  // round to fp16

inline void store(void* out, int64_t i, double v, Out o) {
  // v is exactly representable in the compute format (fp16 or fp32); one rounding to the output.
  if (o == Out::F32) {
    static_cast<float*>(out)[i] = static_cast<float>(v);
  } else {
    static_cast<uint16_t*>(out)[i] = double_to_small(v, o == Out::F16 ? kHalf : kBFloat16);
  }
}

inline double formula_f32(float q, float s, float z, Formula f) {
  switch (f) {
    case Formula::SubMul: return double((q - z) * s);
    case Formula::MulSub: { float a = q * s; float b = z * s; return double(a - b); }
    case Formula::Fma: { float b = z * s; return double(std::fma(q, s, -b)); }
  }
  return 0.0;
}

inline double formula_f16(double q, double s, double z, Formula f) {
  switch (f) {
    case Formula::SubMul: return rh(rh(q - z) * s);
    case Formula::MulSub: return rh(rh(q * s) - rh(z * s));
    case Formula::Fma: return rh(q * s - rh(z * s));  // q*s - b exact in double: one rounding = fused
  }
  return 0.0;
}

double fp8_to_double(uint8_t b, Fp8 fmt) {
  if (fmt == Fp8::E5M2) return h2d(uint16_t(b) << 8);  // e5m2 is the top byte of a float16
  const bool neg = b & 0x80;
  const int e = (b >> 3) & 0xF, m = b & 7;
  double v;
  if (e == 15 && m == 7) v = NAN;
  else if (e == 0) v = std::ldexp(double(m), -9);
  else v = std::ldexp(double(8 + m), e - 10);
  return neg ? -v : v;
}

}  // namespace

void cpu_dequant_int4(const uint8_t* packed, const uint16_t* scales, const uint16_t* zeros, void* out,
                      int64_t n, int64_t k, int64_t group, Formula f, Compute c, Out o) {
  const int64_t groups = k / group;
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t j = 0; j < k; ++j) {
      const uint8_t byte = packed[r * (k / 2) + j / 2];
      const int nib = (j & 1) ? (byte >> 4) : (byte & 0xF);
      const int q = zeros ? nib : ((nib ^ 8) - 8);
      const double s = h2d(scales[r * groups + j / group]);
      const double z = zeros ? h2d(zeros[r * groups + j / group]) : 0.0;
      const double w = c == Compute::F32 ? formula_f32(float(q), float(s), float(z), f) : formula_f16(q, s, z, f);
      store(out, r * k + j, w, o);
    }
  }
}

void cpu_dequant_q4(const uint8_t* blocks, float* out, int64_t n_blocks, Q4 t) {
  const int bytes = t == Q4::Q4_0 ? 18 : 20;
  for (int64_t b = 0; b < n_blocks; ++b) {
    const uint8_t* p = blocks + b * bytes;
    uint16_t db, mb = 0;
    std::memcpy(&db, p, 2);
    if (t == Q4::Q4_1) std::memcpy(&mb, p + 2, 2);
    const float d = float(h2d(db)), m = float(h2d(mb));
    const uint8_t* qs = p + (t == Q4::Q4_0 ? 2 : 4);
    for (int i = 0; i < 32; ++i) {
      const int nib = i < 16 ? (qs[i] & 0xF) : (qs[i - 16] >> 4);
      out[b * 32 + i] = t == Q4::Q4_0 ? d * float(nib - 8) : d * float(nib) + m;
    }
  }
}

void cpu_dequant_fp8(const uint8_t* q, const float* scales, uint16_t* out, int64_t n, int64_t k, Fp8 fmt,
                     Scaling sc, Via via) {
  const int64_t bk = (k + kFp8Block - 1) / kFp8Block;
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t j = 0; j < k; ++j) {
      float s = sc == Scaling::Tensor ? scales[0]
                : sc == Scaling::Channel ? scales[r]
                                         : scales[(r / kFp8Block) * bk + j / kFp8Block];
      const float qv = float(fp8_to_double(q[r * k + j], fmt));
      if (via == Via::BF16) s = float(small_to_double(double_to_small(double(s), kBFloat16), kBFloat16));
      // both paths: one float32 product (exact for the bf16 operands), one rounding to bfloat16
      out[r * k + j] = double_to_small(double(qv * s), kBFloat16);
    }
  }
}

}  // namespace dq
}  // namespace driftscope
