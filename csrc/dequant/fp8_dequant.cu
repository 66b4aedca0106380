// FP8 (e4m3fn / e5m2) dequantisation kernel and launcher. A block's tile is kThreads x 16 fp8 bytes: each
// thread loads 16 bytes (one coalesced 16-byte load) into shared memory; then thread t takes the 8-value
// units t and t + kThreads of the tile (the row length is a multiple of 16, so a unit lies in one row and
// one 128-column scale block) -> 8 bfloat16 = one 16-byte store, so every warp store writes 512
// contiguous bytes. Scales are loaded while the bytes are in flight. Grid sized by occupancy,
// grid-stride over tiles. via F32: bf16(float32(q * s)); via BF16: bf16(q * bf16(s)) (exact product).
#include <cuda_fp8.h>

#include <cstdint>

#include "formulas.cuh"
#include "grid.cuh"

namespace driftscope {
namespace dq {

namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 2;  // 8-value units per thread per tile (16 bytes)

template <Fp8 F> __device__ __forceinline__ float2 fp8x2_to_float2(unsigned int two_bytes) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)two_bytes,
                                                   F == Fp8::E4M3 ? __NV_E4M3 : __NV_E5M2);  // exact
  return __half22float2(__half2(h));
}

template <Fp8 F, Scaling S, Via V, typename I>
__global__ void __launch_bounds__(kThreads) dequant_fp8_kernel(
    const uint4* __restrict__ q, const float* __restrict__ scales, uint4* __restrict__ out, I units, I k,
    I blocks_per_row, I tiles) {
  __shared__ uint4 stage[kThreads];
  const uint2* staged = reinterpret_cast<const uint2*>(stage);
  for (I tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const I first = tile * (I)(kThreads * kUnroll);  // first unit of the tile
    if (first / 2 + threadIdx.x < units / 2) stage[threadIdx.x] = __ldg(q + first / 2 + threadIdx.x);
    float s[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const I i = first + (I)(u * kThreads + threadIdx.x);
      s[u] = 1.0f;
      if (i < units) {
        if (S == Scaling::Tensor) {
          s[u] = __ldg(scales);
        } else {
          const I row = (i * 8) / k;
          if (S == Scaling::Channel) s[u] = __ldg(scales + row);
          else s[u] = __ldg(scales + (row / kFp8Block) * blocks_per_row + (i * 8 - row * k) / kFp8Block);
        }
      }
    }
    __syncthreads();
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const I i = first + (I)(u * kThreads + threadIdx.x);
      if (i >= units) continue;
      float sc = s[u];
      if (V == Via::BF16) sc = __bfloat162float(__float2bfloat16_rn(sc));
      const uint2 v = staged[u * kThreads + threadIdx.x];
      const unsigned int words[2] = {v.x, v.y};
      alignas(16) __nv_bfloat16 r[8];
#pragma unroll
      for (int j = 0; j < 4; ++j) {  // bytes 2j, 2j+1 (little-endian: value 2j in the low byte)
        const float2 x = fp8x2_to_float2<F>((words[j / 2] >> (16 * (j % 2))) & 0xFFFF);
        r[2 * j] = __float2bfloat16_rn(__fmul_rn(x.x, sc));
        r[2 * j + 1] = __float2bfloat16_rn(__fmul_rn(x.y, sc));
      }
      out[i] = *reinterpret_cast<const uint4*>(r);
    }
    __syncthreads();  // the stage is refilled by the next tile
  }
}

template <Fp8 F, Scaling S, Via V, typename I>
void run_indexed(const void* q, const void* scales, void* out, int64_t n, int64_t k, cudaStream_t st) {
  const long long units = n * (k / 8);
  const long long tiles = (units + kThreads * kUnroll - 1) / (kThreads * kUnroll);
  auto kernel = dequant_fp8_kernel<F, S, V, I>;
  const unsigned grid = grid_for(kernel, kThreads, tiles);
  kernel<<<grid, kThreads, 0, st>>>(static_cast<const uint4*>(q), static_cast<const float*>(scales),
                                    static_cast<uint4*>(out), (I)units, (I)k, (I)((k + kFp8Block - 1) / kFp8Block),
                                    (I)tiles);
  check_launch("dequant_fp8_kernel");
}

template <Fp8 F, Scaling S, Via V>
void run(const void* q, const void* scales, void* out, int64_t n, int64_t k, cudaStream_t st) {
  // 32-bit indices (cheap division) unless an element index (8 x unit, last tile included) could pass 2^32
  if (8 * (n * (k / 8) + kThreads * kUnroll) < (1LL << 32)) run_indexed<F, S, V, uint32_t>(q, scales, out, n, k, st);
  else run_indexed<F, S, V, unsigned long long>(q, scales, out, n, k, st);
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
