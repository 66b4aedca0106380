// The plain float32 expression `a * b + c` of the three programs, compiled twice from cpu_plain.inc:
// plain_contract (-ffp-contract=fast -mfma: call only when cpu_has_fma()) and plain_nocontract
// (-ffp-contract=off). Plain C-style functions only, so that no inline library code built with -mfma
// can be shared with (and picked by the linker for) the rest of the module.
#pragma once

#include <cstdint>

namespace driftscope {
namespace plain_contract {
void dot(const float* a, const float* b, float* out, int64_t rows, int64_t k);
void horner(const float* coeffs, const float* x, float* out, int64_t n, int64_t ncoeffs);
void axpy(const float* alpha, const float* x, const float* y, float* out, int64_t n);
}  // namespace plain_contract
namespace plain_nocontract {
void dot(const float* a, const float* b, float* out, int64_t rows, int64_t k);
void horner(const float* coeffs, const float* x, float* out, int64_t n, int64_t ncoeffs);
void axpy(const float* alpha, const float* x, const float* y, float* out, int64_t n);
}  // namespace plain_nocontract
}  // namespace driftscope
