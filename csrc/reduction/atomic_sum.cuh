// Atomic sum (docs/reduction-orders.md): pass 1 as in the two-pass sum, then thread 0 of each block
// atomically adds its partial into out[0], which the caller zeroes first (+0.0).
//   atomic_sum_<in>_<acc>(const In* x, long long n, Acc* out)   grid x block threads
// Note: float atomicAdd (atom.add.f32) flushes subnormal inputs and results to zero, the f16/bf16
// atomics do not.
#ifndef DRIFTSCOPE_REDUCTION_ATOMIC_SUM_CUH
#define DRIFTSCOPE_REDUCTION_ATOMIC_SUM_CUH

#include "common.cuh"

namespace driftscope_red {

template <typename T, typename A>
__device__ __forceinline__ void atomic_sum(const T* __restrict__ x, long long n, A* out) {
  const A p = block_partial<T, A>(x, n);
  if (threadIdx.x == 0) atomicAdd(out, p);
}

}  // namespace driftscope_red

#define DRIFTSCOPE_ATOMIC(NAME, T, A)                                                                   \
  extern "C" __global__ void __launch_bounds__(1024) NAME(const T* __restrict__ x, long long n, A* out) { \
    driftscope_red::atomic_sum<T, A>(x, n, out);                                                        \
  }

DRIFTSCOPE_ATOMIC(atomic_sum_f32_f32, float, float)
DRIFTSCOPE_ATOMIC(atomic_sum_f16_f32, __half, float)
DRIFTSCOPE_ATOMIC(atomic_sum_f16_f16, __half, __half)
DRIFTSCOPE_ATOMIC(atomic_sum_bf16_f32, __nv_bfloat16, float)
DRIFTSCOPE_ATOMIC(atomic_sum_bf16_bf16, __nv_bfloat16, __nv_bfloat16)

#endif  // DRIFTSCOPE_REDUCTION_ATOMIC_SUM_CUH
