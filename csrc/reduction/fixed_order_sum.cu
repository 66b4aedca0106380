// Launcher of the two-pass tree sum kernels (fixed_order_sum.cuh).
#include "fixed_order_sum.cuh"

#include <stdexcept>

#include "../cuda_check.h"
#include "launch.h"

namespace driftscope {

namespace {

template <typename T, typename A>
void run(void (*pass1)(const T*, long long, A*), void (*pass2)(const A*, long long, A*), const char* name1,
         const char* name2, const void* x, int64_t n, void* ws, void* out, int grid, int block, int final_block,
         cudaStream_t s) {
  pass1<<<grid, block, 0, s>>>(static_cast<const T*>(x), n, static_cast<A*>(ws));
  check_launch(name1);
  pass2<<<1, final_block, 0, s>>>(static_cast<const A*>(ws), grid, static_cast<A*>(out));
  check_launch(name2);
}

}  // namespace

void launch_fixed_order_sum(DType in, DType acc, const void* x, int64_t n, void* ws, void* out, int grid,
                            int block, int final_block, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
#define DS_RUN(P1, P2, T, A) run<T, A>(P1, P2, #P1, #P2, x, n, ws, out, grid, block, final_block, s)
  if (in == DType::F32 && acc == DType::F32) {
    DS_RUN(fixed_order_sum_pass1_f32_f32, fixed_order_sum_pass2_f32, float, float);
  } else if (in == DType::F16 && acc == DType::F32) {
    DS_RUN(fixed_order_sum_pass1_f16_f32, fixed_order_sum_pass2_f32, __half, float);
  } else if (in == DType::F16 && acc == DType::F16) {
    DS_RUN(fixed_order_sum_pass1_f16_f16, fixed_order_sum_pass2_f16, __half, __half);
  } else if (in == DType::BF16 && acc == DType::F32) {
    DS_RUN(fixed_order_sum_pass1_bf16_f32, fixed_order_sum_pass2_f32, __nv_bfloat16, float);
  } else if (in == DType::BF16 && acc == DType::BF16) {
    DS_RUN(fixed_order_sum_pass1_bf16_bf16, fixed_order_sum_pass2_bf16, __nv_bfloat16, __nv_bfloat16);
  } else {
    throw std::invalid_argument("fixed_order_sum: unsupported input/accumulator pair");
  }
#undef DS_RUN
}

}  // namespace driftscope
