// The one pybind11 module, probes._C: registrations only. What each name does lives in the probe's entry
// file (csrc/<probe>/entry.h: reduction, fma, gemm, dequant) or in the shared device_info.h; the
// arguments they share are checked by csrc/checks.h. The Python face is probes/ext.py, the only module
// that imports probes._C.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "dequant/entry.h"
#include "device_info.h"
#include "fma/entry.h"
#include "gemm/entry.h"
#include "reduction/entry.h"

namespace py = pybind11;
using namespace driftscope;

PYBIND11_MODULE(_C, m) {
  m.doc() = "driftscope C++/CUDA extension: the kernels of the reduction, FMA, GEMM and dequantisation probes.";

  py::register_exception<NoGPU>(m, "NoGPUError", PyExc_RuntimeError);

  // ---- build and device information (csrc/device_info.h) --------------------------------------------
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

  // ---- reduction probe (csrc/reduction/entry.h; Python face: probes.ext's reductions) ---------------
  m.def("kernel_source", &kernel_source, py::arg("name") = "reduction",
        "CUDA source of the kernels (self-contained; 'reduction' holds every kernel).");
  m.def("kernel_source_names", &kernel_source_names);
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
  m.def("_small_to_double", &small_to_double);
  m.def("_double_to_small", &double_to_small);
  m.def("_small_to_double_all", &small_to_double_all, "All 65536 patterns at once (exhaustive conversion test).");
  m.def("_double_to_small_many", &double_to_small_many);

  // ---- FMA probe (csrc/fma/entry.h; Python face: probes/fma/kernels.py) -----------------------------
  m.def("fma_dot", &fma_dot, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("variant"),
        py::arg("stream") = 0,
        "out[r] = acc after acc = op(a[r*k+j], b[r*k+j], acc) for j in order (k = a.size / out.size).");
  m.def("fma_horner", &fma_horner, py::arg("coeffs"), py::arg("x"), py::arg("out"), py::arg("variant"),
        py::arg("stream") = 0, "Horner's rule, coeffs highest degree first: acc = op(acc, x, coeffs[i]).");
  m.def("fma_axpy", &fma_axpy, py::arg("alpha"), py::arg("x"), py::arg("y"), py::arg("out"), py::arg("variant"),
        py::arg("stream") = 0, "out = op(alpha[0], x, y) element-wise.");
  m.def("fma_cpu_has_fma", &fma_cpu_has_fma, "True when this CPU has FMA instructions (__builtin_cpu_supports).");

  // ---- GEMM probe (csrc/gemm/entry.h; Python face: probes/gemm/cublaslt.py) -------------------------
  m.def("gemm_build_info", &gemm_build_info, "Whether GemmPlan (cuBLASLt) was built in, and why not.");
  py::class_<GemmPlan>(m, "GemmPlan",
                       "One GEMM problem on one GPU through cuBLASLt (dlopen'ed): heuristic picks, every "
                       "algorithm configuration, run/time one on device pointers. Layout 'tn' = F.linear.")
      .def(py::init<int64_t, int64_t, int64_t, const std::string&, const std::string&, const std::string&, int,
                    const std::vector<std::string>&>(),
           py::arg("m"), py::arg("n"), py::arg("k"), py::arg("dtype"), py::arg("compute") = "32f",
           py::arg("layout") = "tn", py::arg("device") = 0, py::arg("candidates") = std::vector<std::string>{})
      .def("library", &GemmPlan::library)
      .def("heuristic", &GemmPlan::heuristic, py::arg("count"), py::arg("workspace_bytes"))
      .def("enumerate", &GemmPlan::enumerate, py::arg("max_valid"), py::arg("max_checks"), py::arg("workspace_bytes"),
           py::arg("max_custom") = 3, py::arg("max_seconds") = 10.0)
      .def("run", &GemmPlan::run, py::arg("algo"), py::arg("x"), py::arg("w"), py::arg("y"), py::arg("workspace"),
           py::arg("workspace_bytes"), py::arg("stream") = 0)
      .def("time", &GemmPlan::time, py::arg("algo"), py::arg("x"), py::arg("w"), py::arg("y"), py::arg("workspace"),
           py::arg("workspace_bytes"), py::arg("stream") = 0, py::arg("runs") = 20, py::arg("warmup") = 3);

  // ---- dequantisation probe (csrc/dequant/entry.h; Python face: probes/dequant/kernels.py) ----------
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
