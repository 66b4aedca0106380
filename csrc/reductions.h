// Validated entry points of the reductions: x decides where they run (CPU reference or CUDA kernels).
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

namespace driftscope {

namespace py = pybind11;

void fixed_order_sum(py::handle x, py::handle out, py::handle workspace, int64_t grid, int64_t block,
                     int64_t final_block, const std::string& accumulate, int64_t stream);
void atomic_sum(py::handle x, py::handle out, int64_t grid, int64_t block, const std::string& accumulate,
                int64_t stream);
void sequential_sum(py::handle x, py::handle out, const std::string& accumulate, int64_t stream);

// CPU only: the atomic sum plus what the test needs to check it: the arrival order (list of block indices)
// and, in `partials` (>= grid elements of the acc dtype), the block partials.
py::list atomic_sum_cpu_trace(py::handle x, py::handle out, py::handle partials, int64_t grid, int64_t block,
                              const std::string& accumulate);

}  // namespace driftscope
