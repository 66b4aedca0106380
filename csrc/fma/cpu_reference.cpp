// CPU reference of the FMA probe (see cpu_reference.h). Compiled with the project's -ffp-contract=off:
// the mul_add variants below really round the product before the add.
#include "cpu_reference.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "../reduction/small_float.h"
#include "cpu_plain.h"

namespace driftscope {

bool cpu_has_fma() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("fma");
#elif defined(__aarch64__)
  return true;  // FMA (fmadd) is part of AArch64
#else
  return false;
#endif
}

namespace {

// ---- float32: hardware/libm arithmetic ---------------------------------------------------------------
struct F32Fma {
  using T = float;
  static float apply(float a, float b, float c) { return std::fma(a, b, c); }  // correctly rounded
  static float zero() { return 0.0f; }
};
struct F32MulAdd {
  using T = float;
  static float apply(float a, float b, float c) {
    const float p = a * b;  // rounded to float (no contraction in this file)
    return p + c;
  }
  static float zero() { return 0.0f; }
};

// ---- float16 / bfloat16: exact in double, rounded once per operation ----------------------------------
// a*b of two p-bit values (p <= 11) is exact in double. p + c is made exact as s + err (TwoSum), rounded
// to odd in double (if inexact and the last bit of s is even, step s one ulp toward err) and then to the
// small format: rounding to odd with >= p + 2 bits, then to nearest, equals rounding to nearest once.
double exact_to_odd(double p, double c) {
  const double s = p + c;
  if (!std::isfinite(s)) return s;
  const double bb = s - p;
  const double err = (p - (s - bb)) + (c - bb);
  if (err == 0.0) return s;
  uint64_t bits;
  std::memcpy(&bits, &s, 8);
  if (bits & 1u) return s;
  return std::nextafter(s, err > 0 ? INFINITY : -INFINITY);
}

template <const Fmt& F>
struct SmallFma {
  using T = uint16_t;
  static uint16_t apply(uint16_t a, uint16_t b, uint16_t c) {
    const double p = small_to_double(a, F) * small_to_double(b, F);
    return double_to_small(exact_to_odd(p, small_to_double(c, F)), F);
  }
  static uint16_t zero() { return 0; }
};
template <const Fmt& F>
struct SmallMulAdd {
  using T = uint16_t;
  static uint16_t apply(uint16_t a, uint16_t b, uint16_t c) {
    const uint16_t p = double_to_small(small_to_double(a, F) * small_to_double(b, F), F);  // exact product, rounded once
    return double_to_small(exact_to_odd(small_to_double(p, F), small_to_double(c, F)), F);
  }
  static uint16_t zero() { return 0; }
};

template <class Op>
void run(const FmaArgs& g) {
  using T = typename Op::T;
  const T* p0 = static_cast<const T*>(g.p0);
  const T* p1 = static_cast<const T*>(g.p1);
  T* out = static_cast<T*>(g.out);
  switch (g.program) {
    case FmaProgram::Dot:
      for (int64_t r = 0; r < g.n; ++r) {
        T acc = Op::zero();
        for (int64_t j = 0; j < g.k; ++j) acc = Op::apply(p0[r * g.k + j], p1[r * g.k + j], acc);
        out[r] = acc;
      }
      break;
    case FmaProgram::Horner:
      for (int64_t i = 0; i < g.n; ++i) {
        T acc = p0[0];
        for (int64_t j = 1; j < g.k; ++j) acc = Op::apply(acc, p1[i], p0[j]);
        out[i] = acc;
      }
      break;
    case FmaProgram::Axpy: {
      const T* y = static_cast<const T*>(g.p2);
      for (int64_t i = 0; i < g.n; ++i) out[i] = Op::apply(p0[0], p1[i], y[i]);
      break;
    }
  }
}

template <template <const Fmt&> class Op>
void run_small(const FmaArgs& g) {
  if (g.dtype == DType::F16) {
    run<Op<kHalf>>(g);
  } else {
    run<Op<kBFloat16>>(g);
  }
}

void run_plain(const FmaArgs& g, bool contract) {
  const float* p0 = static_cast<const float*>(g.p0);
  const float* p1 = static_cast<const float*>(g.p1);
  const float* p2 = static_cast<const float*>(g.p2);
  float* out = static_cast<float*>(g.out);
  switch (g.program) {
    case FmaProgram::Dot:
      contract ? plain_contract::dot(p0, p1, out, g.n, g.k) : plain_nocontract::dot(p0, p1, out, g.n, g.k);
      break;
    case FmaProgram::Horner:
      contract ? plain_contract::horner(p0, p1, out, g.n, g.k) : plain_nocontract::horner(p0, p1, out, g.n, g.k);
      break;
    case FmaProgram::Axpy:
      contract ? plain_contract::axpy(p0, p1, p2, out, g.n) : plain_nocontract::axpy(p0, p1, p2, out, g.n);
      break;
  }
}

}  // namespace

void cpu_fma_program(const FmaArgs& g, FmaVariant variant) {
  const bool f32 = g.dtype == DType::F32;
  switch (variant) {
    case FmaVariant::Fma:
      f32 ? run<F32Fma>(g) : run_small<SmallFma>(g);
      return;
    case FmaVariant::MulAdd:
      f32 ? run<F32MulAdd>(g) : run_small<SmallMulAdd>(g);
      return;
    case FmaVariant::PlainContract:
    case FmaVariant::PlainNoContract:
      if (!f32)
        throw std::invalid_argument(std::string("variant: the plain CPU builds are float32 only (a CPU has no ") +
                                    dtype_name(g.dtype) + " arithmetic for the compiler to contract); got " +
                                    dtype_name(g.dtype));
      if (variant == FmaVariant::PlainContract && !cpu_has_fma())
        throw std::runtime_error("variant plain_contract: this CPU has no FMA instructions (the build uses -mfma)");
      run_plain(g, variant == FmaVariant::PlainContract);
      return;
  }
}

}  // namespace driftscope
