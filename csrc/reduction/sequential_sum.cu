// Launcher of the sequential sum kernels (sequential_sum.cuh): one thread.
#include "sequential_sum.cuh"

#include <stdexcept>

#include "../cuda_check.h"
#include "launch.h"

namespace driftscope {

namespace {

template <typename T, typename A>
void run(void (*kernel)(const T*, long long, A*), const char* name, const void* x, int64_t n, void* out,
         cudaStream_t s) {
  kernel<<<1, 1, 0, s>>>(static_cast<const T*>(x), n, static_cast<A*>(out));
  check_launch(name);
}

}  // namespace

void launch_sequential_sum(DType in, DType acc, const void* x, int64_t n, void* out, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
#define DS_RUN(K, T, A) run<T, A>(K, #K, x, n, out, s)
  if (in == DType::F32 && acc == DType::F32) {
    DS_RUN(sequential_sum_f32_f32, float, float);
  } else if (in == DType::F16 && acc == DType::F32) {
    DS_RUN(sequential_sum_f16_f32, __half, float);
  } else if (in == DType::F16 && acc == DType::F16) {
    DS_RUN(sequential_sum_f16_f16, __half, __half);
  } else if (in == DType::BF16 && acc == DType::F32) {
    DS_RUN(sequential_sum_bf16_f32, __nv_bfloat16, float);
  } else if (in == DType::BF16 && acc == DType::BF16) {
    DS_RUN(sequential_sum_bf16_bf16, __nv_bfloat16, __nv_bfloat16);
  } else {
    throw std::invalid_argument("sequential_sum: unsupported input/accumulator pair");
  }
#undef DS_RUN
}

}  // namespace driftscope
