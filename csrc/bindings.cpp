// The one pybind11 module, probes._C: build/device information, kernel sources and the reductions.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "device_info.h"
#include "dtypes.h"
#include "gemm/cublaslt_algos.h"
#include "kernel_sources.h"  // generated into the build tree
#include "reduction/cpu_reference.h"
#include "reductions.h"
#include "fma/fma_api.h"  // FMA probe (csrc/fma/)
#include "dequant/entry.h"  // dequantisation probe

namespace py = pybind11;
using namespace driftscope;

namespace {

const std::vector<std::string> kSourceNames = {"reduction", "common", "fixed_order_sum", "atomic_sum",
                                               "sequential_sum"};

std::string kernel_source(const std::string& name) {
  using namespace kernel_src;
  const std::string common = kCommon;
  if (name == "common") return common;
  if (name == "fixed_order_sum") return common + kFixed;
  if (name == "atomic_sum") return common + kAtomic;
  if (name == "sequential_sum") return common + kSequential;
  if (name == "reduction") return common + kFixed + kAtomic + kSequential;
  std::string known;
  for (const auto& n : kSourceNames) known += (known.empty() ? "" : ", ") + n;
  throw py::value_error("name: unknown kernel source '" + name + "' (known: " + known + ")");
}

DType small_dtype(const std::string& name) {
  if (name == "float16") return DType::F16;
  if (name == "bfloat16") return DType::BF16;
  throw py::value_error("dtype: must be 'float16' or 'bfloat16', got '" + name + "'");
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "driftscope C++/CUDA extension: reductions in the orders of docs/reduction-orders.md.";

  py::register_exception<NoGPU>(m, "NoGPUError", PyExc_RuntimeError);

  m.def("built_with_cuda", &built_with_cuda, "True when the CUDA kernels were compiled in.");
  m.def("compiled_cuda_archs", &compiled_cuda_archs, "CMAKE_CUDA_ARCHITECTURES of the build ('' without CUDA).");
  m.def("cuda_device_count", &cuda_device_count, "Number of usable CUDA devices; 0 without driver/GPU/CUDA build.");
  m.def("cuda_runtime_version", &cuda_runtime_version, "cudaRuntimeGetVersion() (e.g. 13000) or None.");
  m.def("cuda_driver_version", &cuda_driver_version, "CUDA driver version (e.g. 13000) or None without a driver.");
  m.def("cublaslt_version", &cublaslt_version, py::arg("candidates") = std::vector<std::string>{},
        "cublasLtGetVersion() of the first loadable libcublasLt (candidate paths, then sonames), or None.");
  m.def("cublas_version", &cublas_version, py::arg("candidates") = std::vector<std::string>{},
        "major*10000+minor*100+patch of the first loadable libcublas (candidate paths, then sonames), or None.");
  m.def("device_properties", &device_properties, py::arg("device"), "cudaDeviceProp fields of one device as a dict.");

  m.def("kernel_source", &kernel_source, py::arg("name") = "reduction",
        "CUDA source of the kernels (self-contained; 'reduction' holds every kernel).");
  m.def("kernel_source_names", []() { return kSourceNames; });

  m.def("fixed_order_sum", &fixed_order_sum, py::arg("x"), py::arg("out"), py::arg("workspace"), py::arg("grid"),
        py::arg("block"), py::arg("final_block"), py::arg("accumulate"), py::arg("stream") = 0,
        "Two-pass tree sum of x into out[0]; the grid block partials are left in workspace.");
  m.def("atomic_sum", &atomic_sum, py::arg("x"), py::arg("out"), py::arg("grid"), py::arg("block"),
        py::arg("accumulate"), py::arg("stream") = 0,
        "Pass 1 of the tree sum, block partials added atomically into out[0] (order set by arrival).");
  m.def("sequential_sum", &sequential_sum, py::arg("x"), py::arg("out"), py::arg("accumulate"),
        py::arg("stream") = 0, "Sum of x in index order by one thread.");
  m.def("_atomic_sum_cpu_trace", &atomic_sum_cpu_trace, py::arg("x"), py::arg("out"), py::arg("partials"),
        py::arg("grid"), py::arg("block"), py::arg("accumulate"),
        "CPU atomic sum that also returns the arrival order and writes the block partials (tests).");

  m.def("_small_to_double", [](const std::string& dtype, uint16_t bits) { return cpu_small_to_double(small_dtype(dtype), bits); });
  m.def("_double_to_small", [](const std::string& dtype, double v) { return cpu_double_to_small(small_dtype(dtype), v); });
  m.def("_small_to_double_all", [](const std::string& dtype) {
    // All 65536 patterns at once (exhaustive conversion test): list of doubles.
    const DType d = small_dtype(dtype);
    std::vector<double> r(65536);
    for (uint32_t b = 0; b < 65536; ++b) r[b] = cpu_small_to_double(d, static_cast<uint16_t>(b));
    return r;
  });
  m.def("_double_to_small_many", [](const std::string& dtype, const std::vector<double>& values) {
    const DType d = small_dtype(dtype);
    std::vector<uint16_t> r(values.size());
    for (size_t i = 0; i < values.size(); ++i) r[i] = cpu_double_to_small(d, values[i]);
    return r;
  });

  // ---- FMA probe (csrc/fma/): dot / horner / axpy, fused vs unfused vs the plain expression ----------
  m.def("fma_dot", &fma_dot, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("variant"),
        py::arg("stream") = 0,
        "out[r] = acc after acc = op(a[r*k+j], b[r*k+j], acc) for j in order (k = a.size / out.size).");
  m.def("fma_horner", &fma_horner, py::arg("coeffs"), py::arg("x"), py::arg("out"), py::arg("variant"),
        py::arg("stream") = 0, "Horner's rule, coeffs highest degree first: acc = op(acc, x, coeffs[i]).");
  m.def("fma_axpy", &fma_axpy, py::arg("alpha"), py::arg("x"), py::arg("y"), py::arg("out"), py::arg("variant"),
        py::arg("stream") = 0, "out = op(alpha[0], x, y) element-wise.");
  m.def("fma_cpu_has_fma", &fma_cpu_has_fma, "True when this CPU has FMA instructions (__builtin_cpu_supports).");

  // ---- gemm probe (csrc/gemm, probes/gemm) ----
  m.def("gemm_build_info", &gemm_build_info, "Whether GemmPlan (cuBLASLt) was built in, and why not.");
  register_gemm(m);
  // ---- dequantisation probe (csrc/dequant; Python face: probes/dequant/kernels.py) ------------------
  m.def("dequant_int4", &dequant_int4_entry, py::arg("packed"), py::arg("scales"), py::arg("zeros"), py::arg("out"),
        py::arg("n"), py::arg("k"), py::arg("group"), py::arg("formula"), py::arg("compute"), py::arg("out_dtype"),
        py::arg("device"), py::arg("stream") = 0, py::arg("check_scales") = true,
        "Group-wise int4 dequantisation (raw pointers; device < 0: C++ reference on host memory).");
  m.def("dequant_q4", &dequant_q4_entry, py::arg("blocks"), py::arg("out"), py::arg("n_blocks"), py::arg("qtype"),
        py::arg("device"), py::arg("stream") = 0, "GGUF Q4_0/Q4_1 block dequantisation to float32 (raw pointers).");
  m.def("dequant_fp8", &dequant_fp8_entry, py::arg("q"), py::arg("scales"), py::arg("out"), py::arg("n"), py::arg("k"),
        py::arg("fmt"), py::arg("scaling"), py::arg("via"), py::arg("device"), py::arg("stream") = 0,
        py::arg("check_scales") = true, "FP8 dequantisation to bfloat16 (raw pointers).");
}
