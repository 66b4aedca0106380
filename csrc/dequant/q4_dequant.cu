// GGUF Q4_0 / Q4_1 block dequantisation kernel and launcher: eight threads per 32-weight block (18 / 20
// bytes, read as 16-bit words: the blocks are only 2-byte aligned), one coalesced float4 store each;
// grid-stride. Arithmetic as ggml's reference decoder: float32 d * (q - 8), float32(d * q) + m.
#include "../cuda_check.h"
#include "formulas.cuh"

namespace driftscope {
namespace dq {

namespace {

template <Q4 T>
__global__ void dequant_q4_kernel(const unsigned short* __restrict__ blocks, float4* __restrict__ out,
                                  long long n_parts) {
  // 8 threads per 32-weight block; thread j writes weights 4j..4j+3 as one float4, so a warp stores 512
  // contiguous bytes. Weights 0..15 are the low nibbles of the 16 bytes, 16..31 the high nibbles.
  constexpr int words = T == Q4::Q4_0 ? 9 : 10;
  constexpr int q0 = T == Q4::Q4_0 ? 1 : 2;  // first 16-bit word of the nibbles
  for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < n_parts;
       t += (long long)gridDim.x * blockDim.x) {
    const long long b = t >> 3;
    const int j = int(t & 7);
    const unsigned short* p = blocks + b * words;
    const float d = __half2float(__ushort_as_half(p[0]));
    const float m = T == Q4::Q4_1 ? __half2float(__ushort_as_half(p[1])) : 0.0f;
    const int byte0 = 4 * (j & 3);  // bytes byte0..byte0+3 of the 16 nibble bytes
    const unsigned int w = (unsigned int)p[q0 + byte0 / 2] | ((unsigned int)p[q0 + byte0 / 2 + 1] << 16);
    const int shift = j < 4 ? 0 : 4;
    float r[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int nib = (w >> (8 * i + shift)) & 0xF;
      r[i] = T == Q4::Q4_0 ? __fmul_rn(d, float(nib - 8)) : __fadd_rn(__fmul_rn(d, float(nib)), m);
    }
    out[t] = make_float4(r[0], r[1], r[2], r[3]);
  }
}

}  // namespace

void launch_dequant_q4(const void* blocks, void* out, int64_t n_blocks, Q4 t, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  int sms = 0, dev = 0;
  check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
  const int block = 256;
  const long long n_parts = n_blocks * 8;
  long long grid = (n_parts + block - 1) / block;
  if (grid > (long long)sms * 16) grid = (long long)sms * 16;
  const auto* in = static_cast<const unsigned short*>(blocks);
  auto* o = static_cast<float4*>(out);
  if (t == Q4::Q4_0) {
    dequant_q4_kernel<Q4::Q4_0><<<(unsigned)grid, block, 0, s>>>(in, o, n_parts);
    check_launch("dequant_q4_kernel<Q4_0>");
  } else {
    dequant_q4_kernel<Q4::Q4_1><<<(unsigned)grid, block, 0, s>>>(in, o, n_parts);
    check_launch("dequant_q4_kernel<Q4_1>");
  }
}

}  // namespace dq
}  // namespace driftscope
