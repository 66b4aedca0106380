// Array intake: any object with __dlpack__, __cuda_array_interface__ or __array_interface__ becomes an
// ArrayView (pointer, size, dtype, device), validated for the reductions. Errors name the argument.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <string>

#include "dtypes.h"

namespace driftscope {

namespace py = pybind11;

enum class Where { CPU, CUDA };

struct ArrayView {
  std::string arg;        // argument name, for messages
  void* data = nullptr;
  int64_t size = 0;       // number of elements (1-D)
  DType dtype = DType::F32;
  Where where = Where::CPU;
  int device = -1;        // CUDA device ordinal; -1 = not known yet (__cuda_array_interface__)
  bool readonly = false;
  std::string protocol;   // "dlpack", "cuda_array_interface" or "array_interface"
  std::shared_ptr<void> keep;  // keeps a consumed DLPack tensor alive; its deleter runs on release

  const char* where_name() const { return where == Where::CPU ? "cpu" : "cuda"; }
};

// Reads `obj` as a 1-D contiguous array of float32 / float16 / bfloat16. Raises TypeError (not an array,
// wrong dtype) or ValueError (not 1-D, not contiguous, empty) naming `arg`.
ArrayView intake(py::handle obj, const std::string& arg);

}  // namespace driftscope
