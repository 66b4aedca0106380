// Build and device information, plus the small CUDA helpers the reductions need.
#pragma once

#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace driftscope {

namespace py = pybind11;

// Raised (as probes._C.NoGPUError, a RuntimeError) when CUDA work is asked for and no GPU is usable.
struct NoGPU : std::runtime_error {
  using std::runtime_error::runtime_error;
};

bool built_with_cuda();
std::string compiled_cuda_archs();
int cuda_device_count();  // 0 when built without CUDA, or no driver / no GPU; never throws
py::object cuda_runtime_version();
py::object cuda_driver_version();
py::object cublaslt_version(const std::vector<std::string>& candidates);

// dlopen (RTLD_NOW | RTLD_LOCAL) of the first loadable library: the candidate paths first, then the
// sonames; nullptr when none loads.
void* open_first(const std::vector<std::string>& candidates, const std::vector<const char*>& sonames);
py::object cublas_version(const std::vector<std::string>& candidates);
py::dict device_properties(int device);

// Throws NoGPU with a message saying why (built without CUDA, no driver, no device).
void require_gpu(const std::string& what);
// The CUDA device that owns a device pointer (for __cuda_array_interface__ arrays).
int pointer_device(const void* p, const std::string& arg);

// Sets the current CUDA device for its lifetime, restores the previous one afterwards.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

}  // namespace driftscope
