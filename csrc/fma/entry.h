// Entry points of the FMA probe (bound in csrc/bindings.cpp): its programs, validated; the arrays' device
// decides where they run (the C++ CPU reference or the CUDA kernels). All arrays are 1-D, contiguous,
// non-empty, of ONE dtype (float32, float16 or bfloat16) and on one device; `out` is writable.
// variant: "fma", "mul_add", "plain_contract", "plain_nocontract" (see programs.h).
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

namespace driftscope {

namespace py = pybind11;

// a, b: rows x k row-major (flattened), out: rows; k = a.size / out.size.
void fma_dot(py::handle a, py::handle b, py::handle out, const std::string& variant, int64_t stream);
// coeffs: highest degree first; x, out: n.
void fma_horner(py::handle coeffs, py::handle x, py::handle out, const std::string& variant, int64_t stream);
// alpha: 1 element; x, y, out: n.
void fma_axpy(py::handle alpha, py::handle x, py::handle y, py::handle out, const std::string& variant,
              int64_t stream);
bool fma_cpu_has_fma();

}  // namespace driftscope
