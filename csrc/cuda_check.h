// Turn CUDA runtime errors into std::runtime_error (pybind11 raises RuntimeError). CUDA builds only.
#pragma once

#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

namespace driftscope {

inline std::string cuda_error_text(cudaError_t err) {
  return std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
}

inline void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + " failed: " + cuda_error_text(err));
}

// After a <<<>>> launch: configuration errors show up in cudaGetLastError.
inline void check_launch(const char* kernel) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("launch of ") + kernel + " failed: " + cuda_error_text(err));
}

}  // namespace driftscope
