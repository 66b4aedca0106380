// Counts bad scale / zero-point values on the device (NaN, Inf, and zero for scales), so the entry
// points can refuse them with a clear error instead of producing silently wrong weights.
#include "../cuda_check.h"
#include "formulas.cuh"

namespace driftscope {
namespace dq {

namespace {

template <typename T>
__global__ void count_bad_kernel(const T* __restrict__ v, long long n, bool zero_is_bad,
                                 unsigned long long* bad) {
  unsigned long long local = 0;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    float x;
    if constexpr (sizeof(T) == 2) x = __half2float(v[i]); else x = v[i];
    if (isnan(x) || isinf(x) || (zero_is_bad && x == 0.0f)) ++local;
  }
  if (local) atomicAdd(bad, local);
}

}  // namespace

int64_t launch_count_bad(const void* v, int64_t n, bool is_half, bool zero_is_bad, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  unsigned long long* d = nullptr;
  check_cuda(cudaMallocAsync(reinterpret_cast<void**>(&d), sizeof(*d), s), "cudaMallocAsync");
  unsigned long long h = 0;
  try {
    check_cuda(cudaMemsetAsync(d, 0, sizeof(*d), s), "cudaMemsetAsync");
    const int block = 256;
    long long grid = (n + block - 1) / block;
    if (grid > 1024) grid = 1024;
    if (is_half) count_bad_kernel<__half><<<(unsigned)grid, block, 0, s>>>(static_cast<const __half*>(v), n, zero_is_bad, d);
    else count_bad_kernel<float><<<(unsigned)grid, block, 0, s>>>(static_cast<const float*>(v), n, zero_is_bad, d);
    check_launch("count_bad_kernel");
    check_cuda(cudaMemcpyAsync(&h, d, sizeof(h), cudaMemcpyDeviceToHost, s), "cudaMemcpyAsync");
    check_cuda(cudaStreamSynchronize(s), "cudaStreamSynchronize");
  } catch (...) {
    cudaFreeAsync(d, s);
    throw;
  }
  check_cuda(cudaFreeAsync(d, s), "cudaFreeAsync");
  return static_cast<int64_t>(h);
}

}  // namespace dq
}  // namespace driftscope
