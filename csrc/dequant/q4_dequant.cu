// GGUF Q4_0 / Q4_1 block dequantisation kernel and launcher: one thread per 32-weight block (18 / 20
// bytes, read as 16-bit words: the blocks are only 2-byte aligned), eight 16-byte float4 stores;
// grid-stride. Arithmetic as ggml's reference decoder: float32 d * (q - 8), float32(d * q) + m.
#include "../cuda_check.h"
#include "formulas.cuh"

namespace driftscope {
namespace dq {

namespace {

template <Q4 T>
__global__ void dequant_q4_kernel(const unsigned short* __restrict__ blocks, float4* __restrict__ out,
                                  long long n_blocks) {
  constexpr int words = T == Q4::Q4_0 ? 9 : 10;
  for (long long b = blockIdx.x * (long long)blockDim.x + threadIdx.x; b < n_blocks;
       b += (long long)gridDim.x * blockDim.x) {
    const unsigned short* p = blocks + b * words;
    unsigned short w[words];
#pragma unroll
    for (int i = 0; i < words; ++i) w[i] = p[i];
    const float d = __half2float(__ushort_as_half(w[0]));
    const float m = T == Q4::Q4_1 ? __half2float(__ushort_as_half(w[1])) : 0.0f;
    constexpr int q0 = T == Q4::Q4_0 ? 1 : 2;  // first word of the nibbles
    float r[32];
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const int byte = (w[q0 + i / 2] >> (8 * (i % 2))) & 0xFF;
      const int lo = byte & 0xF, hi = byte >> 4;
      if (T == Q4::Q4_0) {
        r[i] = __fmul_rn(d, float(lo - 8));
        r[i + 16] = __fmul_rn(d, float(hi - 8));
      } else {
        r[i] = __fadd_rn(__fmul_rn(d, float(lo)), m);
        r[i + 16] = __fadd_rn(__fmul_rn(d, float(hi)), m);
      }
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) out[b * 8 + i] = make_float4(r[4 * i], r[4 * i + 1], r[4 * i + 2], r[4 * i + 3]);
  }
}

}  // namespace

void launch_dequant_q4(const void* blocks, void* out, int64_t n_blocks, Q4 t, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  int sms = 0, dev = 0;
  check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
  const int block = 256;
  long long grid = (n_blocks + block - 1) / block;
  if (grid > (long long)sms * 16) grid = (long long)sms * 16;
  const auto* in = static_cast<const unsigned short*>(blocks);
  auto* o = static_cast<float4*>(out);
  if (t == Q4::Q4_0) {
    dequant_q4_kernel<Q4::Q4_0><<<(unsigned)grid, block, 0, s>>>(in, o, n_blocks);
    check_launch("dequant_q4_kernel<Q4_0>");
  } else {
    dequant_q4_kernel<Q4::Q4_1><<<(unsigned)grid, block, 0, s>>>(in, o, n_blocks);
    check_launch("dequant_q4_kernel<Q4_1>");
  }
}

}  // namespace dq
}  // namespace driftscope
