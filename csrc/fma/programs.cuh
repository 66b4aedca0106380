// The FMA probe's kernels: dot (one thread per row), horner and axpy (one thread per element), generic
// over the element type T (float, __half, __nv_bfloat16) and the operation Op:
//   FmaOp     __fmaf_rn / __hfma                        one rounding
//   MulAddOp  __fmul_rn + __fadd_rn / __hmul_rn + __hadd_rn   two roundings; never contracted
//   PlainOp   a * b + c                                 whatever the compiler makes of it
// Everything is in an anonymous namespace: explicit_programs.cu, plain_contract.cu (--fmad=true) and
// plain_nocontract.cu (--fmad=false) each include this text and get their own copies, so the SAME
// plain-expression kernel text is compiled twice under different flags without symbol clashes.
#ifndef DRIFTSCOPE_FMA_PROGRAMS_CUH
#define DRIFTSCOPE_FMA_PROGRAMS_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <stdexcept>

#include "../cuda_check.h"
#include "programs.h"

namespace {

struct FmaOp {
  static __device__ __forceinline__ float apply(float a, float b, float c) { return __fmaf_rn(a, b, c); }
  static __device__ __forceinline__ __half apply(__half a, __half b, __half c) { return __hfma(a, b, c); }
  static __device__ __forceinline__ __nv_bfloat16 apply(__nv_bfloat16 a, __nv_bfloat16 b, __nv_bfloat16 c) {
    return __hfma(a, b, c);
  }
};

struct MulAddOp {
  static __device__ __forceinline__ float apply(float a, float b, float c) { return __fadd_rn(__fmul_rn(a, b), c); }
  static __device__ __forceinline__ __half apply(__half a, __half b, __half c) {
    return __hadd_rn(__hmul_rn(a, b), c);
  }
  static __device__ __forceinline__ __nv_bfloat16 apply(__nv_bfloat16 a, __nv_bfloat16 b, __nv_bfloat16 c) {
    return __hadd_rn(__hmul_rn(a, b), c);
  }
};

struct PlainOp {
  template <typename T>
  static __device__ __forceinline__ T apply(T a, T b, T c) { return a * b + c; }  // the plain expression
};

template <typename T> __device__ __forceinline__ T zero_of();
template <> __device__ __forceinline__ float zero_of<float>() { return 0.0f; }
template <> __device__ __forceinline__ __half zero_of<__half>() { return __ushort_as_half((unsigned short)0); }
template <> __device__ __forceinline__ __nv_bfloat16 zero_of<__nv_bfloat16>() {
  return __ushort_as_bfloat16((unsigned short)0);
}

template <class Op, typename T>
__global__ void dot_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out, long long rows,
                           long long k) {
  const long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  const T* ar = a + r * k;
  const T* br = b + r * k;
  T acc = zero_of<T>();
  for (long long j = 0; j < k; ++j) acc = Op::apply(ar[j], br[j], acc);
  out[r] = acc;
}

template <class Op, typename T>
__global__ void horner_kernel(const T* __restrict__ coeffs, const T* __restrict__ x, T* __restrict__ out,
                              long long n, long long ncoeffs) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const T xi = x[i];
  T acc = coeffs[0];
  for (long long j = 1; j < ncoeffs; ++j) acc = Op::apply(acc, xi, coeffs[j]);
  out[i] = acc;
}

template <class Op, typename T>
__global__ void axpy_kernel(const T* __restrict__ alpha, const T* __restrict__ x, const T* __restrict__ y,
                            T* __restrict__ out, long long n) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  out[i] = Op::apply(alpha[0], x[i], y[i]);
}

constexpr int kBlock = 128;

template <class Op, typename T>
void launch_typed(const driftscope::FmaArgs& g, cudaStream_t s, const char* what) {
  const long long blocks = (g.n + kBlock - 1) / kBlock;
  if (blocks > 2147483647LL) throw std::invalid_argument(std::string(what) + ": too many outputs for one grid");
  const T* p0 = static_cast<const T*>(g.p0);
  const T* p1 = static_cast<const T*>(g.p1);
  T* out = static_cast<T*>(g.out);
  switch (g.program) {
    case driftscope::FmaProgram::Dot:
      dot_kernel<Op, T><<<unsigned(blocks), kBlock, 0, s>>>(p0, p1, out, g.n, g.k);
      break;
    case driftscope::FmaProgram::Horner:
      horner_kernel<Op, T><<<unsigned(blocks), kBlock, 0, s>>>(p0, p1, out, g.n, g.k);
      break;
    case driftscope::FmaProgram::Axpy:
      axpy_kernel<Op, T><<<unsigned(blocks), kBlock, 0, s>>>(p0, p1, static_cast<const T*>(g.p2), out, g.n);
      break;
  }
  driftscope::check_launch(what);
}

template <class Op>
void launch_programs(const driftscope::FmaArgs& g, void* stream, const char* what) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (g.dtype) {
    case driftscope::DType::F32: launch_typed<Op, float>(g, s, what); break;
    case driftscope::DType::F16: launch_typed<Op, __half>(g, s, what); break;
    case driftscope::DType::BF16: launch_typed<Op, __nv_bfloat16>(g, s, what); break;
  }
}

}  // namespace

#endif  // DRIFTSCOPE_FMA_PROGRAMS_CUH
