// Entry points of the reduction probe (bound in csrc/bindings.cpp): the validated reductions, where x
// decides where they run (the C++ CPU reference or the CUDA kernels), the embedded kernel source text, and
// the float16 / bfloat16 conversions of the CPU reference (for its tests).
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

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

// The CUDA source of the kernels, self-contained (for NVRTC / cupy.RawModule): "reduction" holds every
// kernel; also "common", "fixed_order_sum", "atomic_sum", "sequential_sum" (kernel_source_names()).
std::string kernel_source(const std::string& name);
std::vector<std::string> kernel_source_names();

// The CPU reference's conversions, dtype "float16" or "bfloat16": one value, all 65536 patterns, many values.
double small_to_double(const std::string& dtype, uint16_t bits);
uint16_t double_to_small(const std::string& dtype, double v);
std::vector<double> small_to_double_all(const std::string& dtype);
std::vector<uint16_t> double_to_small_many(const std::string& dtype, const std::vector<double>& values);

}  // namespace driftscope
