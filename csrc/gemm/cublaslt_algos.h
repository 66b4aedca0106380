// cuBLASLt algorithm enumeration for one GEMM problem (the GEMM probe, probes/gemm).
//
// Y[M, N] = X[M, K] @ op(W), row-major torch tensors: layout "tn" is F.linear (W is [N, K], Y = X W^T),
// layout "nn" is X @ W (W is [K, N]). In cuBLAS's column-major terms the call is D[N, M] = op(W) X^T.
// libcublasLt is dlopen'ed (the copy torch already loaded when there is one) and called through function
// pointers; cublasLt.h provides the types only. Without the header at build time the module is absent and
// gemm_build_info() says why.
#pragma once

#include <pybind11/pybind11.h>

namespace driftscope {

namespace py = pybind11;

// {"available": bool, "reason": str, "include_dir": str}
py::dict gemm_build_info();

// Registers the GemmPlan class (see the .cpp) on module m.
void register_gemm(py::module_& m);

}  // namespace driftscope
