// Entry points of the GEMM probe (bound in csrc/bindings.cpp; Python face: probes/gemm/cublaslt.py):
// cuBLASLt algorithm enumeration for one GEMM problem.
//
// Y[M, N] = X[M, K] @ op(W), row-major torch tensors: layout "tn" is F.linear (W is [N, K], Y = X W^T),
// layout "nn" is X @ W (W is [K, N]). In cuBLAS's column-major terms the call is D[N, M] = op(W) X^T.
// libcublasLt is dlopen'ed (the copy torch already loaded when there is one) and called through function
// pointers; cublasLt.h provides the types only. Without the header at build time (or without CUDA) the
// class exists but its constructor raises, and gemm_build_info() says why.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace driftscope {

namespace py = pybind11;

// {"available": bool, "reason": str, "include_dir": str}
py::dict gemm_build_info();

// One GEMM problem on one CUDA device (checked: M, N, K > 0, dtype, compute, layout, device in range).
class GemmPlan {
 public:
  // candidates: paths of libcublasLt to try after the copy already loaded, before the sonames.
  GemmPlan(int64_t m, int64_t n, int64_t k, const std::string& dtype, const std::string& compute,
           const std::string& layout, int device, const std::vector<std::string>& candidates);
  ~GemmPlan();
  GemmPlan(const GemmPlan&) = delete;
  GemmPlan& operator=(const GemmPlan&) = delete;

  // {"path": the libcublasLt loaded, "version": cublasLtGetVersion()}
  py::dict library() const;
  // The heuristic's ranked picks (rank 0 = its default choice) under a workspace limit.
  py::dict heuristic(int count, uint64_t workspace_bytes);
  // Every algorithm configuration that cublasLtMatmulAlgoCheck accepts, within the caps (see the .cpp).
  py::dict enumerate(int max_valid, int max_checks, uint64_t workspace_bytes, int max_custom, double max_seconds);
  // One matmul with `algo` (bytes of a picks/valid entry) on device pointers; returns the cuBLAS status name.
  std::string run(const py::bytes& algo, uintptr_t x, uintptr_t w, uintptr_t y, uintptr_t workspace,
                  uint64_t workspace_bytes, uintptr_t stream);
  // Per-run times (ms, CUDA events on `stream`) of `runs` matmuls after `warmup` ones.
  std::vector<float> time(const py::bytes& algo, uintptr_t x, uintptr_t w, uintptr_t y, uintptr_t workspace,
                          uint64_t workspace_bytes, uintptr_t stream, int runs, int warmup);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace driftscope
