// Sequential sum (docs/reduction-orders.md): ONE thread adds x[0], x[1], ... in index order.
//   sequential_sum_<in>_<acc>(const In* x, long long n, Acc* out)   launch with 1 x 1 threads
// 16-byte loads run ahead of the adds (x must be 16-byte aligned); the adds stay in index order.
#ifndef DRIFTSCOPE_REDUCTION_SEQUENTIAL_SUM_CUH
#define DRIFTSCOPE_REDUCTION_SEQUENTIAL_SUM_CUH

#include "common.cuh"

namespace driftscope_red {

template <typename T, typename A>
__device__ __forceinline__ void sequential_sum(const T* __restrict__ x, long long n, A* __restrict__ out) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  const long long nchunks = n / Chunk<T>::N;
  const uint4* __restrict__ xv = reinterpret_cast<const uint4*>(x);
  A s = Acc<A>::zero();
  long long c = 0;
  for (; c + DRIFTSCOPE_UNROLL <= nchunks; c += DRIFTSCOPE_UNROLL) {
    uint4 v[DRIFTSCOPE_UNROLL];
#pragma unroll
    for (int u = 0; u < DRIFTSCOPE_UNROLL; ++u) v[u] = __ldg(xv + c + u);
#pragma unroll
    for (int u = 0; u < DRIFTSCOPE_UNROLL; ++u) Chunk<T>::add(s, v[u]);
  }
  for (; c < nchunks; ++c) Chunk<T>::add(s, __ldg(xv + c));
  for (long long i = nchunks * Chunk<T>::N; i < n; ++i) s = Acc<A>::add(s, Conv<A, T>::go(x[i]));
  out[0] = s;
}

}  // namespace driftscope_red

#define DRIFTSCOPE_SEQUENTIAL(NAME, T, A)                                                          \
  extern "C" __global__ void NAME(const T* __restrict__ x, long long n, A* __restrict__ out) { \
    driftscope_red::sequential_sum<T, A>(x, n, out);                                           \
  }

DRIFTSCOPE_SEQUENTIAL(sequential_sum_f32_f32, float, float)
DRIFTSCOPE_SEQUENTIAL(sequential_sum_f16_f32, __half, float)
DRIFTSCOPE_SEQUENTIAL(sequential_sum_f16_f16, __half, __half)
DRIFTSCOPE_SEQUENTIAL(sequential_sum_bf16_f32, __nv_bfloat16, float)
DRIFTSCOPE_SEQUENTIAL(sequential_sum_bf16_bf16, __nv_bfloat16, __nv_bfloat16)

#endif  // DRIFTSCOPE_REDUCTION_SEQUENTIAL_SUM_CUH
