// Host launchers of the reduction kernels (defined in the .cu files; CUDA builds only).
// Pointers are device pointers on the current device; `stream` is a cudaStream_t. Every CUDA call and
// launch is checked; failures throw std::runtime_error naming the call and the CUDA error.
#pragma once

#include <cstdint>

#include "../dtypes.h"

namespace driftscope {

void launch_fixed_order_sum(DType in, DType acc, const void* x, int64_t n, void* workspace, void* out,
                            int grid, int block, int final_block, void* stream);
void launch_atomic_sum(DType in, DType acc, const void* x, int64_t n, void* out, int grid, int block,
                       void* stream);
void launch_sequential_sum(DType in, DType acc, const void* x, int64_t n, void* out, void* stream);

}  // namespace driftscope
