// Two-pass tree sum (docs/reduction-orders.md): pass 1 writes one partial per block, pass 2 is one block.
// extern "C" entry points, one per (input, accumulator) pair, so CuPy's RawModule finds them by name:
//   fixed_order_sum_pass1_<in>_<acc>(const In* x, long long n, Acc* partials)   grid x block threads
//   fixed_order_sum_pass2_<acc>(const Acc* partials, long long grid, Acc* out)  1 x final_block threads
#ifndef DRIFTSCOPE_REDUCTION_FIXED_ORDER_SUM_CUH
#define DRIFTSCOPE_REDUCTION_FIXED_ORDER_SUM_CUH

#include "common.cuh"

namespace driftscope_red {

template <typename T, typename A>
__device__ __forceinline__ void fixed_pass1(const T* __restrict__ x, long long n, A* __restrict__ partials) {
  const A p = block_partial<T, A>(x, n);
  if (threadIdx.x == 0) partials[blockIdx.x] = p;
}

// Thread i adds p_i, p_{i + final_block}, ... then the block tree.
template <typename A>
__device__ __forceinline__ void fixed_pass2(const A* __restrict__ partials, long long grid, A* __restrict__ out) {
  A s = Acc<A>::zero();
  for (long long i = threadIdx.x; i < grid; i += blockDim.x) s = Acc<A>::add(s, partials[i]);
  s = block_tree<A>(s);
  if (threadIdx.x == 0) out[0] = s;
}

}  // namespace driftscope_red

#define DRIFTSCOPE_FIXED_PASS1(NAME, T, A)                                                          \
  extern "C" __global__ void __launch_bounds__(1024) NAME(const T* __restrict__ x, long long n,    \
                                                           A* __restrict__ partials) {            \
    driftscope_red::fixed_pass1<T, A>(x, n, partials);                                            \
  }
#define DRIFTSCOPE_FIXED_PASS2(NAME, A)                                                             \
  extern "C" __global__ void __launch_bounds__(1024) NAME(const A* __restrict__ partials,          \
                                                           long long grid, A* __restrict__ out) { \
    driftscope_red::fixed_pass2<A>(partials, grid, out);                                          \
  }

DRIFTSCOPE_FIXED_PASS1(fixed_order_sum_pass1_f32_f32, float, float)
DRIFTSCOPE_FIXED_PASS1(fixed_order_sum_pass1_f16_f32, __half, float)
DRIFTSCOPE_FIXED_PASS1(fixed_order_sum_pass1_f16_f16, __half, __half)
DRIFTSCOPE_FIXED_PASS1(fixed_order_sum_pass1_bf16_f32, __nv_bfloat16, float)
DRIFTSCOPE_FIXED_PASS1(fixed_order_sum_pass1_bf16_bf16, __nv_bfloat16, __nv_bfloat16)
DRIFTSCOPE_FIXED_PASS2(fixed_order_sum_pass2_f32, float)
DRIFTSCOPE_FIXED_PASS2(fixed_order_sum_pass2_f16, __half)
DRIFTSCOPE_FIXED_PASS2(fixed_order_sum_pass2_bf16, __nv_bfloat16)

#endif  // DRIFTSCOPE_REDUCTION_FIXED_ORDER_SUM_CUH
