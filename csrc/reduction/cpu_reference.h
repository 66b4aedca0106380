// CPU builds of the reduction orders of docs/reduction-orders.md, bit for bit equal to the CUDA kernels
// (same chunk = 16 / itemsize, grid, block, warp = 32, final_block).
#pragma once

#include <cstdint>
#include <vector>

#include "../dtypes.h"

namespace driftscope {

// Two-pass tree sum: writes the `grid` block partials to workspace and the result to out[0].
void cpu_fixed_order_sum(DType in, DType acc, const void* x, int64_t n, void* workspace, void* out, int64_t grid,
                         int block, int final_block);

// Atomic sum: std::thread workers compute the block partials (pass 1 order) and add each one into a shared
// cell with a compare-exchange loop, so the arrival order depends on scheduling as on a GPU. If arrival is
// given it receives the block indices in the order their adds landed; partials (if given, `grid` entries
// of the acc dtype) receives the partials.
void cpu_atomic_sum(DType in, DType acc, const void* x, int64_t n, void* out, int64_t grid, int block,
                    std::vector<int64_t>* arrival = nullptr, void* partials = nullptr);

// Sequential sum: one loop in index order.
void cpu_sequential_sum(DType in, DType acc, const void* x, int64_t n, void* out);

// Exposed for the conversion tests: bits <-> double for float16 / bfloat16.
double cpu_small_to_double(DType d, uint16_t bits);
uint16_t cpu_double_to_small(DType d, double v);

}  // namespace driftscope
