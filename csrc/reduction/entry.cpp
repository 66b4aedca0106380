// Entry points of the reduction probe (entry.h): argument checks (the shared ones in csrc/checks.h), then
// dispatch to cpu_reference.cpp or to the CUDA launchers (on x's device, on the given stream, with the GIL
// released).
#include "entry.h"

#include <cstdio>
#include <string>
#include <vector>

#include "../array.h"
#include "../checks.h"
#include "../device_info.h"
#include "cpu_reference.h"
#include "kernel_sources.h"  // generated into the build tree
#ifdef DRIFTSCOPE_WITH_CUDA
#include "launch.h"
#endif

namespace driftscope {

namespace {

using checks::value_error;

DType acc_dtype(const std::string& accumulate, DType in) {
  if (accumulate == "float32") return DType::F32;
  if (accumulate == "input") return in;
  value_error("accumulate: must be 'float32' or 'input', got '" + accumulate + "'");
}

void check_block(const char* name, int64_t b) {
  if (b < 32 || b > 1024 || b % 32 != 0) {
    value_error(std::string(name) + ": must be a multiple of 32 in [32, 1024], got " + std::to_string(b));
  }
}

void check_grid(int64_t grid) {
  if (grid < 1 || grid > 2147483647LL) value_error("grid: must be in [1, 2**31 - 1], got " + std::to_string(grid));
}

// out / workspace: acc dtype, writable, at least `min_size` elements (exactly 1 for out).
void check_output(const ArrayView& v, DType acc, int64_t min_size, bool exact) {
  if (v.dtype != acc)
    throw py::type_error(v.arg + ": dtype " + dtype_name(v.dtype) + " does not match the accumulator dtype " +
                         dtype_name(acc));
  if (exact && v.size != min_size)
    value_error(v.arg + ": must have exactly " + std::to_string(min_size) + " element, has " + std::to_string(v.size));
  if (!exact && v.size < min_size)
    value_error(v.arg + ": too small: " + std::to_string(v.size) + " elements, needs at least " +
                std::to_string(min_size) + " (one per block of pass 1: grid)");
  checks::writable(v);
  checks::itemsize_aligned(v);
}

// All arrays on x's device (x first); returns true for CUDA, where x must be 16-byte aligned.
bool check_devices(const std::vector<ArrayView*>& arrays, const char* what) {
  if (!checks::same_device(arrays, what)) return false;
  const ArrayView& x = *arrays[0];
  if (reinterpret_cast<uintptr_t>(x.data) % 16 != 0) {
    char ptr[32];
    std::snprintf(ptr, sizeof(ptr), "0x%llx", static_cast<unsigned long long>(reinterpret_cast<uintptr_t>(x.data)));
    value_error(std::string("x: device pointer ") + ptr +
                " is not 16-byte aligned; the CUDA kernels use 16-byte vector loads (probes.ext makes an aligned copy)");
  }
  return true;
}

#ifndef DRIFTSCOPE_WITH_CUDA
[[noreturn]] void no_cuda() { require_gpu("this reduction"); throw NoGPU("unreachable"); }
#endif

}  // namespace

void fixed_order_sum(py::handle xo, py::handle outo, py::handle wso, int64_t grid, int64_t block,
                     int64_t final_block, const std::string& accumulate, int64_t stream) {
  check_grid(grid);
  check_block("block", block);
  check_block("final_block", final_block);
  checks::stream(stream);
  ArrayView x = intake(xo, "x");
  const DType acc = acc_dtype(accumulate, x.dtype);
  ArrayView out = intake(outo, "out");
  ArrayView ws = intake(wso, "workspace");
  check_output(out, acc, 1, true);
  check_output(ws, acc, grid, false);
  const bool gpu = check_devices({&x, &out, &ws}, "fixed_order_sum on a CUDA array");
  if (!gpu) {
    py::gil_scoped_release nogil;
    cpu_fixed_order_sum(x.dtype, acc, x.data, x.size, ws.data, out.data, grid, int(block), int(final_block));
    return;
  }
#ifdef DRIFTSCOPE_WITH_CUDA
  DeviceGuard guard(x.device);
  py::gil_scoped_release nogil;
  launch_fixed_order_sum(x.dtype, acc, x.data, x.size, ws.data, out.data, int(grid), int(block), int(final_block),
                         reinterpret_cast<void*>(stream));
#else
  no_cuda();
#endif
}

void atomic_sum(py::handle xo, py::handle outo, int64_t grid, int64_t block, const std::string& accumulate,
                int64_t stream) {
  check_grid(grid);
  check_block("block", block);
  checks::stream(stream);
  ArrayView x = intake(xo, "x");
  const DType acc = acc_dtype(accumulate, x.dtype);
  ArrayView out = intake(outo, "out");
  check_output(out, acc, 1, true);
  const bool gpu = check_devices({&x, &out}, "atomic_sum on a CUDA array");
  if (!gpu) {
    py::gil_scoped_release nogil;
    cpu_atomic_sum(x.dtype, acc, x.data, x.size, out.data, grid, int(block));
    return;
  }
#ifdef DRIFTSCOPE_WITH_CUDA
  DeviceGuard guard(x.device);
  py::gil_scoped_release nogil;
  launch_atomic_sum(x.dtype, acc, x.data, x.size, out.data, int(grid), int(block), reinterpret_cast<void*>(stream));
#else
  no_cuda();
#endif
}

void sequential_sum(py::handle xo, py::handle outo, const std::string& accumulate, int64_t stream) {
  checks::stream(stream);
  ArrayView x = intake(xo, "x");
  const DType acc = acc_dtype(accumulate, x.dtype);
  ArrayView out = intake(outo, "out");
  check_output(out, acc, 1, true);
  const bool gpu = check_devices({&x, &out}, "sequential_sum on a CUDA array");
  if (!gpu) {
    py::gil_scoped_release nogil;
    cpu_sequential_sum(x.dtype, acc, x.data, x.size, out.data);
    return;
  }
#ifdef DRIFTSCOPE_WITH_CUDA
  DeviceGuard guard(x.device);
  py::gil_scoped_release nogil;
  launch_sequential_sum(x.dtype, acc, x.data, x.size, out.data, reinterpret_cast<void*>(stream));
#else
  no_cuda();
#endif
}

py::list atomic_sum_cpu_trace(py::handle xo, py::handle outo, py::handle po, int64_t grid, int64_t block,
                              const std::string& accumulate) {
  check_grid(grid);
  check_block("block", block);
  ArrayView x = intake(xo, "x");
  const DType acc = acc_dtype(accumulate, x.dtype);
  ArrayView out = intake(outo, "out");
  ArrayView partials = intake(po, "partials");
  check_output(out, acc, 1, true);
  check_output(partials, acc, grid, false);
  if (check_devices({&x, &out, &partials}, "atomic_sum_cpu_trace"))
    value_error("x: atomic_sum_cpu_trace runs on CPU arrays only");
  std::vector<int64_t> arrival;
  {
    py::gil_scoped_release nogil;
    cpu_atomic_sum(x.dtype, acc, x.data, x.size, out.data, grid, int(block), &arrival, partials.data);
  }
  py::list r;
  for (int64_t b : arrival) r.append(b);
  return r;
}

// ---- kernel source text -----------------------------------------------------------------------------

std::vector<std::string> kernel_source_names() {
  return {"reduction", "common", "fixed_order_sum", "atomic_sum", "sequential_sum"};
}

std::string kernel_source(const std::string& name) {
  using namespace kernel_src;
  const std::string common = kCommon;
  if (name == "common") return common;
  if (name == "fixed_order_sum") return common + kFixed;
  if (name == "atomic_sum") return common + kAtomic;
  if (name == "sequential_sum") return common + kSequential;
  if (name == "reduction") return common + kFixed + kAtomic + kSequential;
  std::string known;
  for (const auto& n : kernel_source_names()) known += (known.empty() ? "" : ", ") + n;
  value_error("name: unknown kernel source '" + name + "' (known: " + known + ")");
}

// ---- float16 / bfloat16 conversions of the CPU reference --------------------------------------------

namespace {

DType small_dtype(const std::string& name) {
  if (name == "float16") return DType::F16;
  if (name == "bfloat16") return DType::BF16;
  value_error("dtype: must be 'float16' or 'bfloat16', got '" + name + "'");
}

}  // namespace

double small_to_double(const std::string& dtype, uint16_t bits) {
  return cpu_small_to_double(small_dtype(dtype), bits);
}

uint16_t double_to_small(const std::string& dtype, double v) { return cpu_double_to_small(small_dtype(dtype), v); }

std::vector<double> small_to_double_all(const std::string& dtype) {
  const DType d = small_dtype(dtype);
  std::vector<double> r(65536);
  for (uint32_t b = 0; b < 65536; ++b) r[b] = cpu_small_to_double(d, static_cast<uint16_t>(b));
  return r;
}

std::vector<uint16_t> double_to_small_many(const std::string& dtype, const std::vector<double>& values) {
  const DType d = small_dtype(dtype);
  std::vector<uint16_t> r(values.size());
  for (size_t i = 0; i < values.size(); ++i) r[i] = cpu_double_to_small(d, values[i]);
  return r;
}

}  // namespace driftscope
