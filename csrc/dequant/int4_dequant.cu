// Group-wise int4 dequantisation kernel and its launcher. A block's tile is kThreads x 16 packed bytes:
// each thread loads 16 bytes (one coalesced 16-byte load per thread, 4 KB per block) into shared memory;
// then thread t takes the 32-bit words t, t + kThreads, t + 2 kThreads, t + 3 kThreads of the tile, each
// = 8 weights of one group (groups are multiples of 32) -> 8 outputs = one 16-byte store (bf16 / fp16;
// two for fp32), so every warp store writes 512 contiguous bytes. Scales (one per word) are loaded
// while the packed bytes are in flight. The group of word i is i / (group / 8): rows hold k / group whole
// groups, so the row is never computed. Grid sized by occupancy, grid-stride over tiles.
#include <cstdint>

#include "formulas.cuh"
#include "grid.cuh"

namespace driftscope {
namespace dq {

namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;  // words per thread per tile (16 bytes)

__device__ __forceinline__ __half load_half(const __half* p) {
  return __ushort_as_half(__ldg(reinterpret_cast<const unsigned short*>(p)));
}

template <Formula F, Compute C, Out O>
__device__ __forceinline__ void dequant_word(uint32_t w, __half sh, __half zh, bool symmetric,
                                             typename OutT<O>::T* dst) {
  using T = typename OutT<O>::T;
  alignas(16) T res[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int nib = (w >> (4 * i)) & 0xF;  // little-endian bytes: weight 2j low nibble, 2j+1 high
    const int q = symmetric ? ((nib ^ 8) - 8) : nib;
    if (C == Compute::F32) {
      res[i] = OutT<O>::from(formula_f32<F>(float(q), __half2float(sh), __half2float(zh)));
    } else {
      res[i] = OutT<O>::from(formula_f16<F>(__int2half_rn(q), sh, zh));
    }
  }
  uint4* d = reinterpret_cast<uint4*>(dst);
  const uint4* r = reinterpret_cast<const uint4*>(res);
#pragma unroll
  for (int i = 0; i < 8 * (int)sizeof(T) / 16; ++i) d[i] = r[i];
}

template <Formula F, Compute C, Out O, typename I>
__global__ void __launch_bounds__(kThreads) dequant_int4_kernel(
    const uint4* __restrict__ packed, const __half* __restrict__ scales, const __half* __restrict__ zeros,
    typename OutT<O>::T* __restrict__ out, I words, I words_per_group, I tiles) {
  __shared__ uint4 stage[kThreads];
  const uint32_t* staged = reinterpret_cast<const uint32_t*>(stage);
  const bool symmetric = zeros == nullptr;
  for (I tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const I first = tile * (I)(kThreads * kUnroll);  // first word of the tile
    if (first / 4 + threadIdx.x < words / 4) stage[threadIdx.x] = __ldg(packed + first / 4 + threadIdx.x);
    __half s[kUnroll], z[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const I i = first + (I)(u * kThreads + threadIdx.x);
      s[u] = z[u] = __ushort_as_half((unsigned short)0);
      if (i < words) {
        const I g = i / words_per_group;
        s[u] = load_half(scales + g);
        if (!symmetric) z[u] = load_half(zeros + g);
      }
    }
    __syncthreads();
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const I i = first + (I)(u * kThreads + threadIdx.x);
      if (i < words) {
        dequant_word<F, C, O>(staged[u * kThreads + threadIdx.x], s[u], z[u], symmetric,
                              out + (unsigned long long)i * 8);
      }
    }
    __syncthreads();  // the stage is refilled by the next tile
  }
}

template <Formula F, Compute C, Out O, typename I>
void run_indexed(const void* packed, const void* scales, const void* zeros, void* out, int64_t n, int64_t k,
                 int64_t group, cudaStream_t s) {
  const long long words = n * (k / 8);
  const long long tiles = (words + kThreads * kUnroll - 1) / (kThreads * kUnroll);
  auto kernel = dequant_int4_kernel<F, C, O, I>;
  const unsigned grid = grid_for(kernel, kThreads, tiles);
  kernel<<<grid, kThreads, 0, s>>>(static_cast<const uint4*>(packed), static_cast<const __half*>(scales),
                                   static_cast<const __half*>(zeros), static_cast<typename OutT<O>::T*>(out),
                                   (I)words, (I)(group / 8), (I)tiles);
  check_launch("dequant_int4_kernel");
}

template <Formula F, Compute C, Out O>
void run(const void* packed, const void* scales, const void* zeros, void* out, int64_t n, int64_t k,
         int64_t group, cudaStream_t s) {
  // 32-bit indices (cheap division) unless the last tile's indices could pass 2^32
  if (n * (k / 8) + kThreads * kUnroll < (1LL << 32)) run_indexed<F, C, O, uint32_t>(packed, scales, zeros, out, n, k, group, s);
  else run_indexed<F, C, O, unsigned long long>(packed, scales, zeros, out, n, k, group, s);
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
