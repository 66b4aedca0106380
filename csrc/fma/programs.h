// The FMA probe's programs and variants (shared by the CPU reference, the CUDA launchers and the checks).
//   dot:    p0 = a (rows x k, row-major), p1 = b; out[r] = acc after acc = op(a[r,j], b[r,j], acc), acc = +0
//   horner: p0 = coeffs (k of them, highest degree first), p1 = x (n); acc = coeffs[0], acc = op(acc, x, coeffs[i])
//   axpy:   p0 = alpha (1 element), p1 = x, p2 = y (n); out = op(alpha, x, y)
// Variants: fma (one rounding), mul_add (two roundings), and the plain expression `a * b + c` compiled
// with contraction on (nvcc --fmad=true / g++ -ffp-contract=fast -mfma) or off. numerics/fma_programs.py
// holds the exact models.
#pragma once

#include <cstdint>

#include "../dtypes.h"

namespace driftscope {

enum class FmaProgram { Dot, Horner, Axpy };
enum class FmaVariant { Fma, MulAdd, PlainContract, PlainNoContract };

struct FmaArgs {
  FmaProgram program;
  DType dtype;
  const void* p0;
  const void* p1;
  const void* p2;  // axpy only
  void* out;
  int64_t n;       // outputs (dot: rows)
  int64_t k;       // dot: row length; horner: number of coefficients; axpy: unused
};

}  // namespace driftscope
