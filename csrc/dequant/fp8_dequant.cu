// FP8 (e4m3fn / e5m2) dequantisation kernel and launcher: each thread loads 16 fp8 values (16 bytes; the
// row length is a multiple of 16, so one scale covers them) and stores 16 bfloat16 (two 16-byte stores);
// grid-stride. via F32: bf16(float32(q * s)); via BF16: bf16(q * bf16(s)) (the product is exact in fp32).
#include <cuda_fp8.h>

#include "../cuda_check.h"
#include "formulas.cuh"

namespace driftscope {
namespace dq {

namespace {

template <Fp8 F> __device__ __forceinline__ float fp8_to_float(unsigned int byte) {
  const __nv_fp8_storage_t b = (__nv_fp8_storage_t)byte;
  const __half_raw h = __nv_cvt_fp8_to_halfraw(b, F == Fp8::E4M3 ? __NV_E4M3 : __NV_E5M2);  // exact
  return __half2float(__half(h));
}

template <Fp8 F, Scaling S, Via V>
__global__ void dequant_fp8_kernel(const uint4* __restrict__ q, const float* __restrict__ scales,
                                   __nv_bfloat16* __restrict__ out, long long chunks, long long chunks_per_row,
                                   long long k, long long blocks_per_row) {
  for (long long c = blockIdx.x * (long long)blockDim.x + threadIdx.x; c < chunks;
       c += (long long)gridDim.x * blockDim.x) {
    const long long row = c / chunks_per_row, col = (c % chunks_per_row) * 16;
    float s = S == Scaling::Tensor ? scales[0]
              : S == Scaling::Channel ? scales[row]
                                      : scales[(row / kFp8Block) * blocks_per_row + col / kFp8Block];
    if (V == Via::BF16) s = __bfloat162float(__float2bfloat16_rn(s));
    const uint4 v = q[c];
    const unsigned int words[4] = {v.x, v.y, v.z, v.w};
    alignas(16) __nv_bfloat16 r[16];
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const float x = fp8_to_float<F>((words[i / 4] >> (8 * (i % 4))) & 0xFF);
      r[i] = __float2bfloat16_rn(__fmul_rn(x, s));
    }
    uint4* dst = reinterpret_cast<uint4*>(out + row * k + col);
    dst[0] = reinterpret_cast<const uint4*>(r)[0];
    dst[1] = reinterpret_cast<const uint4*>(r)[1];
  }
}

template <Fp8 F, Scaling S, Via V>
void run(const void* q, const void* scales, void* out, int64_t n, int64_t k, cudaStream_t st) {
  int sms = 0, dev = 0;
  check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
  const long long chunks = n * (k / 16);
  const int block = 256;
  long long grid = (chunks + block - 1) / block;
  if (grid > (long long)sms * 16) grid = (long long)sms * 16;
  dequant_fp8_kernel<F, S, V><<<(unsigned)grid, block, 0, st>>>(
      static_cast<const uint4*>(q), static_cast<const float*>(scales), static_cast<__nv_bfloat16*>(out), chunks,
      k / 16, k, (k + kFp8Block - 1) / kFp8Block);
  check_launch("dequant_fp8_kernel");
}

template <Fp8 F, Scaling S>
void by_via(Via v, const void* q, const void* sc, void* out, int64_t n, int64_t k, cudaStream_t st) {
  if (v == Via::F32) run<F, S, Via::F32>(q, sc, out, n, k, st);
  else run<F, S, Via::BF16>(q, sc, out, n, k, st);
}

template <Fp8 F>
void by_scaling(Scaling s, Via v, const void* q, const void* sc, void* out, int64_t n, int64_t k, cudaStream_t st) {
  if (s == Scaling::Tensor) by_via<F, Scaling::Tensor>(v, q, sc, out, n, k, st);
  else if (s == Scaling::Channel) by_via<F, Scaling::Channel>(v, q, sc, out, n, k, st);
  else by_via<F, Scaling::Block>(v, q, sc, out, n, k, st);
}

}  // namespace

void launch_dequant_fp8(const void* q, const void* scales, void* out, int64_t n, int64_t k, Fp8 fmt, Scaling sc,
                        Via via, void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  if (fmt == Fp8::E4M3) by_scaling<Fp8::E4M3>(sc, via, q, scales, out, n, k, st);
  else by_scaling<Fp8::E5M2>(sc, via, q, scales, out, n, k, st);
}

}  // namespace dq
}  // namespace driftscope
