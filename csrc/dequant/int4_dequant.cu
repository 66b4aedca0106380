// Group-wise int4 dequantisation kernel and its launcher. Each thread takes 16 packed bytes (32 weights,
// one group since groups are multiples of 32) with one 16-byte load, and writes them with 16-byte
// stores; grid-stride over all chunks.
#include <stdexcept>

#include "../cuda_check.h"
#include "formulas.cuh"

namespace driftscope {
namespace dq {

namespace {

template <Formula F, Compute C, Out O>
__global__ void dequant_int4_kernel(const uint4* __restrict__ packed, const __half* __restrict__ scales,
                                    const __half* __restrict__ zeros, typename OutT<O>::T* __restrict__ out,
                                    long long chunks, long long chunks_per_row, long long groups,
                                    long long chunks_per_group) {
  using T = typename OutT<O>::T;
  for (long long c = blockIdx.x * (long long)blockDim.x + threadIdx.x; c < chunks;
       c += (long long)gridDim.x * blockDim.x) {
    const long long row = c / chunks_per_row;
    const long long g = row * groups + (c % chunks_per_row) / chunks_per_group;
    const __half sh = scales[g];
    const __half zh = zeros ? zeros[g] : __float2half_rn(0.0f);
    const uint4 v = packed[c];
    const unsigned int words[4] = {v.x, v.y, v.z, v.w};
    alignas(16) T res[32];
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      const int nib = (words[i / 8] >> (4 * (i % 8))) & 0xF;  // little-endian: weight 2j low nibble
      const int q = zeros ? nib : ((nib ^ 8) - 8);
      if (C == Compute::F32) {
        res[i] = OutT<O>::from(formula_f32<F>(float(q), __half2float(sh), __half2float(zh)));
      } else {
        res[i] = OutT<O>::from(formula_f16<F>(__int2half_rn(q), sh, zh));
      }
    }
    uint4* dst = reinterpret_cast<uint4*>(out + c * 32);
    const uint4* src = reinterpret_cast<const uint4*>(res);
#pragma unroll
    for (int i = 0; i < 32 * (int)sizeof(T) / 16; ++i) dst[i] = src[i];
  }
}

template <Formula F, Compute C, Out O>
void run(const void* packed, const void* scales, const void* zeros, void* out, int64_t n, int64_t k,
         int64_t group, cudaStream_t s) {
  const long long chunks = n * (k / 32);
  int sms = 0, dev = 0;
  check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
  const int block = 256;
  long long grid = (chunks + block - 1) / block;
  if (grid > (long long)sms * 16) grid = (long long)sms * 16;
  dequant_int4_kernel<F, C, O><<<(unsigned)grid, block, 0, s>>>(
      static_cast<const uint4*>(packed), static_cast<const __half*>(scales), static_cast<const __half*>(zeros),
      static_cast<typename OutT<O>::T*>(out), chunks, k / 32, k / group, group / 32);
  check_launch("dequant_int4_kernel");
}

template <Formula F, Compute C>
void by_out(Out o, const void* p, const void* sc, const void* z, void* out, int64_t n, int64_t k, int64_t g,
            cudaStream_t s) {
  if (o == Out::BF16) run<F, C, Out::BF16>(p, sc, z, out, n, k, g, s);
  else if (o == Out::F16) run<F, C, Out::F16>(p, sc, z, out, n, k, g, s);
  else run<F, C, Out::F32>(p, sc, z, out, n, k, g, s);
}

template <Formula F>
void by_compute(Compute c, Out o, const void* p, const void* sc, const void* z, void* out, int64_t n, int64_t k,
                int64_t g, cudaStream_t s) {
  if (c == Compute::F32) by_out<F, Compute::F32>(o, p, sc, z, out, n, k, g, s);
  else by_out<F, Compute::F16>(o, p, sc, z, out, n, k, g, s);
}

}  // namespace

void launch_dequant_int4(const void* packed, const void* scales, const void* zeros, void* out, int64_t n,
                         int64_t k, int64_t group, Formula f, Compute c, Out o, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (f == Formula::SubMul) by_compute<Formula::SubMul>(c, o, packed, scales, zeros, out, n, k, group, s);
  else if (f == Formula::MulSub) by_compute<Formula::MulSub>(c, o, packed, scales, zeros, out, n, k, group, s);
  else by_compute<Formula::Fma>(c, o, packed, scales, zeros, out, n, k, group, s);
}

}  // namespace dq
}  // namespace driftscope
