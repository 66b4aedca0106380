// Device arithmetic of the dequantisation formulas. Every op is an explicit round-to-nearest intrinsic
// (__fmul_rn, __hsub_rn ...), so nvcc's --fmad=true cannot contract q*s - z*s into an FMA: the kernel
// computes the formula it is named after, and only `fma` fuses.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "dequant.h"

namespace driftscope {
namespace dq {

template <Formula F> __device__ __forceinline__ float formula_f32(float q, float s, float z) {
  if (F == Formula::SubMul) return __fmul_rn(__fsub_rn(q, z), s);
  if (F == Formula::MulSub) return __fsub_rn(__fmul_rn(q, s), __fmul_rn(z, s));
  return __fmaf_rn(q, s, -__fmul_rn(z, s));
}

template <Formula F> __device__ __forceinline__ __half formula_f16(__half q, __half s, __half z) {
  if (F == Formula::SubMul) return __hmul_rn(__hsub_rn(q, z), s);
  if (F == Formula::MulSub) return __hsub_rn(__hmul_rn(q, s), __hmul_rn(z, s));
  return __hfma(q, s, __hneg(__hmul_rn(z, s)));
}

// Output stores: one rounding from the compute value.
template <Out O> struct OutT;
template <> struct OutT<Out::BF16> {
  using T = __nv_bfloat16;
  static __device__ __forceinline__ T from(float v) { return __float2bfloat16_rn(v); }
  static __device__ __forceinline__ T from(__half v) { return __float2bfloat16_rn(__half2float(v)); }
};
template <> struct OutT<Out::F16> {
  using T = __half;
  static __device__ __forceinline__ T from(float v) { return __float2half_rn(v); }
  static __device__ __forceinline__ T from(__half v) { return v; }
};
template <> struct OutT<Out::F32> {
  using T = float;
  static __device__ __forceinline__ T from(float v) { return v; }
  static __device__ __forceinline__ T from(__half v) { return __half2float(v); }
};

}  // namespace dq
}  // namespace driftscope
