// Argument checks shared by the probes' entry files (csrc/<probe>/entry.cpp). Each one raises a Python
// ValueError (py::value_error) or TypeError whose message starts with the argument's name, so that
// probes.ext can turn it into a KernelInputError that says what is wrong with which argument.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "array.h"

namespace driftscope {
namespace checks {

namespace py = pybind11;

[[noreturn]] inline void value_error(const std::string& msg) { throw py::value_error(msg); }

// A cudaStream_t handle passed as an int (0: the legacy default stream; CPU arrays ignore it).
inline void stream(int64_t s) {
  if (s < 0) value_error("stream: must be a cudaStream_t handle (an int >= 0), got " + std::to_string(s));
}

// The option named `v` among `opts` (name, value); the error lists the names.
template <typename E>
E choice(const std::string& v, const char* what, std::initializer_list<std::pair<const char*, E>> opts) {
  std::string known;
  for (const auto& o : opts) {
    if (v == o.first) return o.second;
    known += (known.empty() ? "" : ", ") + std::string(o.first);
  }
  value_error(std::string(what) + ": must be one of " + known + ", got '" + v + "'");
}

// A size or count: > 0 (0 usually means an empty input upstream).
inline void positive(int64_t v, const char* what) {
  if (v <= 0) value_error(std::string(what) + ": must be > 0 (empty input?), got " + std::to_string(v));
}

// Raw pointers (the entries that take data_ptr() integers).
inline void non_null(uintptr_t p, const char* what) {
  if (!p) value_error(std::string(what) + ": null pointer");
}

inline void aligned16(uintptr_t p, const char* what) {
  if (p % 16)
    value_error(std::string(what) + ": pointer is not 16-byte aligned (the kernels use 16-byte vector access)");
}

// ArrayViews (the entries that take arrays, csrc/array.h).
inline void writable(const ArrayView& v) {
  if (v.readonly) value_error(v.arg + ": array is read-only");
}

inline void itemsize_aligned(const ArrayView& v) {
  if (reinterpret_cast<uintptr_t>(v.data) % itemsize(v.dtype) != 0)
    value_error(v.arg + ": pointer is not aligned to its itemsize");
}

inline void same_size(const ArrayView& a, const ArrayView& b) {
  if (a.size != b.size)
    value_error(a.arg + " has " + std::to_string(a.size) + " elements but " + b.arg + " has " +
                std::to_string(b.size) + "; they must match");
}

// All arrays on the device of the first one (CPU, or one CUDA device; __cuda_array_interface__ devices are
// looked up from the pointer). Returns true for CUDA arrays, after require_gpu(what) (probes._C.NoGPUError
// when no GPU is usable).
bool same_device(const std::vector<ArrayView*>& arrays, const std::string& what);

}  // namespace checks
}  // namespace driftscope
