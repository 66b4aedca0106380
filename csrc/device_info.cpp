// Build/device information. CUDA runtime calls only in CUDA builds (DRIFTSCOPE_WITH_CUDA); cuBLAS and
// cuBLASLt versions come from dlopen'ed libraries through declared prototypes (no cuBLAS headers).
#include "device_info.h"

#include <dlfcn.h>

#include <cstdio>

#ifdef DRIFTSCOPE_WITH_CUDA
#include "cuda_check.h"
#endif

#include "build_config.h"  // generated: DRIFTSCOPE_CUDA_ARCHS

namespace driftscope {

void* open_first(const std::vector<std::string>& candidates, const std::vector<const char*>& sonames) {
  for (const auto& path : candidates) {
    if (void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL)) return h;
  }
  for (const char* so : sonames) {
    if (void* h = dlopen(so, RTLD_NOW | RTLD_LOCAL)) return h;
  }
  return nullptr;
}

bool built_with_cuda() {
#ifdef DRIFTSCOPE_WITH_CUDA
  return true;
#else
  return false;
#endif
}

std::string compiled_cuda_archs() { return DRIFTSCOPE_CUDA_ARCHS; }

int cuda_device_count() {
#ifdef DRIFTSCOPE_WITH_CUDA
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear it; "no driver" / "no device" just means zero GPUs
    return 0;
  }
  return n;
#else
  return 0;
#endif
}

py::object cuda_runtime_version() {
#ifdef DRIFTSCOPE_WITH_CUDA
  int v = 0;
  if (cudaRuntimeGetVersion(&v) != cudaSuccess || v == 0) {
    cudaGetLastError();
    return py::none();
  }
  return py::int_(v);
#else
  return py::none();
#endif
}

py::object cuda_driver_version() {
  int v = 0;
#ifdef DRIFTSCOPE_WITH_CUDA
  if (cudaDriverGetVersion(&v) != cudaSuccess) {
    cudaGetLastError();
    v = 0;
  }
#else
  if (void* h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL)) {
    using Fn = int (*)(int*);
    if (auto fn = reinterpret_cast<Fn>(dlsym(h, "cuDriverGetVersion"))) {
      if (fn(&v) != 0) v = 0;
    }
  }
#endif
  if (v == 0) return py::none();
  return py::int_(v);
}

py::object cublaslt_version(const std::vector<std::string>& candidates) {
  void* h = open_first(candidates, {"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"});
  if (!h) return py::none();
  using Fn = size_t (*)();  // size_t cublasLtGetVersion(void)
  auto fn = reinterpret_cast<Fn>(dlsym(h, "cublasLtGetVersion"));
  if (!fn) return py::none();  // the library stays loaded: unloading cuBLAS is not worth the risk
  return py::int_(fn());
}

py::object cublas_version(const std::vector<std::string>& candidates) {
  void* h = open_first(candidates, {"libcublas.so.13", "libcublas.so.12", "libcublas.so"});
  if (!h) return py::none();
  // cublasStatus_t cublasGetProperty(libraryPropertyType type, int* value); MAJOR=0, MINOR=1, PATCH=2
  using Fn = int (*)(int, int*);
  auto fn = reinterpret_cast<Fn>(dlsym(h, "cublasGetProperty"));
  if (!fn) return py::none();
  int major = 0, minor = 0, patch = 0;
  if (fn(0, &major) != 0 || fn(1, &minor) != 0 || fn(2, &patch) != 0) return py::none();
  return py::int_(major * 10000 + minor * 100 + patch);  // the CUBLAS_VERSION encoding
}

void require_gpu(const std::string& what) {
#ifdef DRIFTSCOPE_WITH_CUDA
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw NoGPU(what + " needs a CUDA GPU and none is usable (" + cuda_error_text(err) + ")");
  }
  if (n == 0) throw NoGPU(what + " needs a CUDA GPU and none is usable (no CUDA device)");
#else
  throw NoGPU(what + " needs a CUDA GPU but probes._C was built without CUDA (no nvcc at build time, or "
                     "DRIFTSCOPE_NO_CUDA=1); rebuild with nvcc on PATH");
#endif
}

#ifdef DRIFTSCOPE_WITH_CUDA

int pointer_device(const void* p, const std::string& arg) {
  cudaPointerAttributes attr{};
  cudaError_t err = cudaPointerGetAttributes(&attr, p);
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw py::value_error(arg + ": cannot tell which GPU owns the __cuda_array_interface__ pointer (" +
                          cuda_error_text(err) + ")");
  }
  if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
    throw py::value_error(arg + ": the __cuda_array_interface__ pointer is not CUDA device memory");
  return attr.device;
}

DeviceGuard::DeviceGuard(int device) {
  check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
  if (previous_ != device) check_cuda(cudaSetDevice(device), "cudaSetDevice");
}

DeviceGuard::~DeviceGuard() {
  int now = -1;
  if (cudaGetDevice(&now) == cudaSuccess && now != previous_ && previous_ >= 0) cudaSetDevice(previous_);
}

py::dict device_properties(int device) {
  require_gpu("device_properties");
  const int n = cuda_device_count();
  if (device < 0 || device >= n)
    throw py::value_error("device: " + std::to_string(device) + " out of range (" + std::to_string(n) +
                          " CUDA device(s))");
  cudaDeviceProp p{};
  check_cuda(cudaGetDeviceProperties(&p, device), "cudaGetDeviceProperties");
  py::dict d;
  d["index"] = device;
  d["name"] = std::string(p.name);
  d["major"] = p.major;
  d["minor"] = p.minor;
  d["compute_capability"] = std::to_string(p.major) + "." + std::to_string(p.minor);
  d["multiprocessor_count"] = p.multiProcessorCount;
  d["l2_cache_size"] = p.l2CacheSize;
  d["total_memory"] = static_cast<unsigned long long>(p.totalGlobalMem);
  d["memory_bus_width"] = p.memoryBusWidth;
  d["max_threads_per_multiprocessor"] = p.maxThreadsPerMultiProcessor;
  d["max_threads_per_block"] = p.maxThreadsPerBlock;
  d["warp_size"] = p.warpSize;
  d["shared_memory_per_block"] = static_cast<unsigned long long>(p.sharedMemPerBlock);
  d["shared_memory_per_block_optin"] = static_cast<unsigned long long>(p.sharedMemPerBlockOptin);
  d["shared_memory_per_multiprocessor"] = static_cast<unsigned long long>(p.sharedMemPerMultiprocessor);
  d["registers_per_block"] = p.regsPerBlock;
  d["ecc_enabled"] = static_cast<bool>(p.ECCEnabled);
  d["pci_bus_id"] = p.pciBusID;
  d["pci_device_id"] = p.pciDeviceID;
  d["pci_domain_id"] = p.pciDomainID;
  // cudaDeviceProp lost clockRate / memoryClockRate in CUDA 13; the attributes remain. kHz; None if absent.
  int khz = 0;
  d["clock_rate_khz"] = cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, device) == cudaSuccess
                            ? py::object(py::int_(khz)) : py::object(py::none());
  cudaGetLastError();
  khz = 0;
  d["memory_clock_rate_khz"] = cudaDeviceGetAttribute(&khz, cudaDevAttrMemoryClockRate, device) == cudaSuccess
                                   ? py::object(py::int_(khz)) : py::object(py::none());
  cudaGetLastError();
  // nvidia-smi's form: GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx
  const unsigned char* u = reinterpret_cast<const unsigned char*>(p.uuid.bytes);
  char buf[64];
  std::snprintf(buf, sizeof(buf),
                "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1], u[2],
                u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
  d["uuid"] = std::string(buf);
  return d;
}

#else  // CPU-only build

int pointer_device(const void*, const std::string& arg) { require_gpu(arg); return -1; }
DeviceGuard::DeviceGuard(int) { require_gpu("DeviceGuard"); }
DeviceGuard::~DeviceGuard() = default;
py::dict device_properties(int) {
  require_gpu("device_properties");
  return py::dict();
}

#endif

}  // namespace driftscope
