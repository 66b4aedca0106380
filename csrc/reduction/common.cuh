// Device code shared by every reduction: accumulator arithmetic, pass 1 (thread sums in chunk order)
// and the block tree of docs/reduction-orders.md.
//
// Self-contained on purpose: compiled by nvcc into probes._C (csrc/reduction/*.cu) AND, unchanged, by
// NVRTC through CuPy's RawModule (probes._C.kernel_source). Only cuda_fp16.h / cuda_bf16.h are included.
#ifndef DRIFTSCOPE_REDUCTION_COMMON_CUH
#define DRIFTSCOPE_REDUCTION_COMMON_CUH

#include <cuda_fp16.h>
#include <cuda_bf16.h>

namespace driftscope_red {

// Chunks of 16 bytes loaded per batch by each thread; the loads are independent, the adds still go
// into ONE running sum in chunk order (the order is fixed by the spec, only the loads run ahead).
#define DRIFTSCOPE_UNROLL 8

// ---- accumulator arithmetic: every add is one IEEE addition rounded to nearest-even ----------------
template <typename A> struct Acc;

template <> struct Acc<float> {
  static __device__ __forceinline__ float zero() { return 0.0f; }
  static __device__ __forceinline__ float add(float a, float b) { return __fadd_rn(a, b); }  // never an FMA
  static __device__ __forceinline__ float shfl_down(float v, int off) {
    return __shfl_down_sync(0xffffffffu, v, off);
  }
};

template <> struct Acc<__half> {
  static __device__ __forceinline__ __half zero() { return __ushort_as_half((unsigned short)0); }
  static __device__ __forceinline__ __half add(__half a, __half b) { return __hadd(a, b); }
  static __device__ __forceinline__ __half shfl_down(__half v, int off) {
    unsigned int bits = __shfl_down_sync(0xffffffffu, (unsigned int)__half_as_ushort(v), off);
    return __ushort_as_half((unsigned short)bits);
  }
};

template <> struct Acc<__nv_bfloat16> {
  static __device__ __forceinline__ __nv_bfloat16 zero() { return __ushort_as_bfloat16((unsigned short)0); }
  static __device__ __forceinline__ __nv_bfloat16 add(__nv_bfloat16 a, __nv_bfloat16 b) { return __hadd(a, b); }
  static __device__ __forceinline__ __nv_bfloat16 shfl_down(__nv_bfloat16 v, int off) {
    unsigned int bits = __shfl_down_sync(0xffffffffu, (unsigned int)__bfloat16_as_ushort(v), off);
    return __ushort_as_bfloat16((unsigned short)bits);
  }
};

// ---- element -> accumulator (exact when the accumulator is wider) ----------------------------------
template <typename A, typename T> struct Conv;
template <typename T> struct Conv<T, T> {
  static __device__ __forceinline__ T go(T v) { return v; }
};
template <> struct Conv<float, __half> {
  static __device__ __forceinline__ float go(__half v) { return __half2float(v); }
};
template <> struct Conv<float, __nv_bfloat16> {
  static __device__ __forceinline__ float go(__nv_bfloat16 v) { return __bfloat162float(v); }
};

// ---- one 16-byte chunk, added element by element in index order -----------------------------------
template <typename T> struct Chunk;

template <> struct Chunk<float> {
  enum { N = 4 };
  template <typename A>
  static __device__ __forceinline__ void add(A& s, uint4 v) {
    s = Acc<A>::add(s, Conv<A, float>::go(__uint_as_float(v.x)));
    s = Acc<A>::add(s, Conv<A, float>::go(__uint_as_float(v.y)));
    s = Acc<A>::add(s, Conv<A, float>::go(__uint_as_float(v.z)));
    s = Acc<A>::add(s, Conv<A, float>::go(__uint_as_float(v.w)));
  }
};

template <typename T> __device__ __forceinline__ T from_bits16(unsigned short b);
template <> __device__ __forceinline__ __half from_bits16<__half>(unsigned short b) { return __ushort_as_half(b); }
template <> __device__ __forceinline__ __nv_bfloat16 from_bits16<__nv_bfloat16>(unsigned short b) {
  return __ushort_as_bfloat16(b);
}

template <typename T> struct Chunk16 {  // 8 halves; element 2k is the low 16 bits of word k
  enum { N = 8 };
  template <typename A>
  static __device__ __forceinline__ void add_word(A& s, unsigned int w) {
    s = Acc<A>::add(s, Conv<A, T>::go(from_bits16<T>((unsigned short)(w & 0xffffu))));
    s = Acc<A>::add(s, Conv<A, T>::go(from_bits16<T>((unsigned short)(w >> 16))));
  }
  template <typename A>
  static __device__ __forceinline__ void add(A& s, uint4 v) {
    add_word(s, v.x);
    add_word(s, v.y);
    add_word(s, v.z);
    add_word(s, v.w);
  }
};
template <> struct Chunk<__half> : Chunk16<__half> {};
template <> struct Chunk<__nv_bfloat16> : Chunk16<__nv_bfloat16> {};

// ---- pass 1: the running sum of thread t = blockIdx.x * blockDim.x + threadIdx.x ---------------------
// Chunks t, t + T, t + 2T, ... (T = gridDim.x * blockDim.x) in that order, then tail element j = t.
// x must be 16-byte aligned.
template <typename T, typename A>
__device__ __forceinline__ A thread_sum(const T* __restrict__ x, long long n) {
  const long long nthreads = (long long)gridDim.x * blockDim.x;
  const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long nchunks = n / Chunk<T>::N;
  const uint4* __restrict__ xv = reinterpret_cast<const uint4*>(x);
  A s = Acc<A>::zero();
  long long c = t;
  for (; c + (DRIFTSCOPE_UNROLL - 1) * nthreads < nchunks; c += DRIFTSCOPE_UNROLL * nthreads) {
    uint4 v[DRIFTSCOPE_UNROLL];
#pragma unroll
    for (int u = 0; u < DRIFTSCOPE_UNROLL; ++u) v[u] = __ldg(xv + c + u * nthreads);
#pragma unroll
    for (int u = 0; u < DRIFTSCOPE_UNROLL; ++u) Chunk<T>::add(s, v[u]);
  }
  for (; c < nchunks; c += nthreads) Chunk<T>::add(s, __ldg(xv + c));
  const long long tail_start = nchunks * Chunk<T>::N;
  if (t < n - tail_start) s = Acc<A>::add(s, Conv<A, T>::go(x[tail_start + t]));
  return s;
}

// ---- halving tree on a warp: offsets 16, 8, 4, 2, 1; lane 0 holds the result -----------------------
template <typename A>
__device__ __forceinline__ A warp_tree(A v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = Acc<A>::add(v, Acc<A>::shfl_down(v, off));
  return v;
}

// ---- block tree: warp trees, then the warp sums padded with +0.0 to 32 and one more warp tree ------
// blockDim.x must be a multiple of 32 and <= 1024. The result is valid in thread 0.
template <typename A>
__device__ __forceinline__ A block_tree(A v) {
  __shared__ unsigned int raw[32];  // room for 32 accumulators of at most 4 bytes
  A* warp_sums = reinterpret_cast<A*>(raw);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int nwarps = blockDim.x >> 5;
  v = warp_tree(v);
  if (nwarps == 1) return v;  // one halving tree
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < nwarps ? warp_sums[lane] : Acc<A>::zero();
    v = warp_tree(v);
  }
  return v;
}

// The block partial p_b of pass 1 (valid in thread 0).
template <typename T, typename A>
__device__ __forceinline__ A block_partial(const T* __restrict__ x, long long n) {
  return block_tree<A>(thread_sum<T, A>(x, n));
}

}  // namespace driftscope_red

#endif  // DRIFTSCOPE_REDUCTION_COMMON_CUH
