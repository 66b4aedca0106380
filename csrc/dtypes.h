// Element and accumulator dtypes the reductions accept.
#pragma once

#include <cstddef>
#include <string>

namespace driftscope {

enum class DType { F32, F16, BF16 };

inline std::size_t itemsize(DType d) { return d == DType::F32 ? 4 : 2; }

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::F32: return "float32";
    case DType::F16: return "float16";
    case DType::BF16: return "bfloat16";
  }
  return "?";
}

// The short tag used in kernel names: fixed_order_sum_pass1_<in>_<acc>.
inline const char* dtype_tag(DType d) {
  switch (d) {
    case DType::F32: return "f32";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
  }
  return "?";
}

constexpr const char* kAllowedDtypes = "float32, float16, bfloat16";

// Elements per 16-byte vector load: the `chunk` of docs/reduction-orders.md.
inline int chunk_of(DType d) { return static_cast<int>(16 / itemsize(d)); }

}  // namespace driftscope
