// Argument checks shared by the reductions, then dispatch to csrc/reduction/cpu_reference.cpp or to the
// CUDA launchers (on x's device, on the given stream, with the GIL released).
#include "reductions.h"

#include <cstdio>
#include <string>
#include <vector>

#include "array.h"
#include "device_info.h"
#include "reduction/cpu_reference.h"
#ifdef DRIFTSCOPE_WITH_CUDA
#include "reduction/launch.h"
#endif

namespace driftscope {

namespace {

[[noreturn]] void value_error(const std::string& msg) { throw py::value_error(msg); }

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

void check_stream(int64_t stream) {
  if (stream < 0) value_error("stream: must be a cudaStream_t handle (an int >= 0), got " + std::to_string(stream));
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
  if (v.readonly) value_error(v.arg + ": array is read-only");
  if (reinterpret_cast<uintptr_t>(v.data) % itemsize(acc) != 0)
    value_error(v.arg + ": pointer is not aligned to its itemsize");
}

// All arrays on the same device; resolves __cuda_array_interface__ devices. Returns true for CUDA.
bool check_devices(std::vector<ArrayView*> arrays, const char* what) {
  ArrayView& x = *arrays[0];
  for (ArrayView* a : arrays) {
    if (a->where != x.where)
      value_error(a->arg + ": is a " + a->where_name() + " array but x is a " + x.where_name() +
                  " array; all arrays must be on the same device");
  }
  if (x.where == Where::CPU) return false;
  require_gpu(what);
  for (ArrayView* a : arrays)
    if (a->device < 0) a->device = pointer_device(a->data, a->arg);
  for (ArrayView* a : arrays) {
    if (a->device != x.device)
      value_error(a->arg + ": is on cuda:" + std::to_string(a->device) + " but x is on cuda:" +
                  std::to_string(x.device) + "; all arrays must be on the same device");
  }
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
  check_stream(stream);
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
  check_stream(stream);
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
  check_stream(stream);
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

}  // namespace driftscope
