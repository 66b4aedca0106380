// Entry points of the dequantisation probe (entry.h): argument checks (the shared ones in csrc/checks.h),
// then the CPU reference or the CUDA launchers.
#include "entry.h"

#include <pybind11/pybind11.h>

#include <cmath>
#include <memory>
#include <string>

#include "../checks.h"
#include "../device_info.h"
#include "../reduction/small_float.h"
#include "dequant.h"

namespace driftscope {

namespace py = pybind11;
using namespace dq;

namespace {

using checks::value_error;

// Host scale / zero values: count of zero/NaN/Inf (zero counts only for scales).
int64_t count_bad_host(const void* v, int64_t n, bool is_half, bool zero_is_bad) {
  int64_t badn = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double x = is_half ? small_to_double(static_cast<const uint16_t*>(v)[i], kHalf)
                             : double(static_cast<const float*>(v)[i]);
    if (!std::isfinite(x) || (zero_is_bad && x == 0.0)) ++badn;
  }
  return badn;
}

int64_t count_bad(uintptr_t p, int64_t n, bool is_half, bool zero_is_bad, int64_t device, int64_t stream) {
  if (device < 0) return count_bad_host(reinterpret_cast<const void*>(p), n, is_half, zero_is_bad);
#ifdef DRIFTSCOPE_WITH_CUDA
  return launch_count_bad(reinterpret_cast<const void*>(p), n, is_half, zero_is_bad, reinterpret_cast<void*>(stream));
#else
  (void)stream;
  return 0;
#endif
}

void check_values(uintptr_t p, int64_t n, bool is_half, bool scales, int64_t device, int64_t stream) {
  const int64_t b = count_bad(p, n, is_half, scales, device, stream);
  if (b)
    value_error(std::string(scales ? "scales" : "zeros") + ": " + std::to_string(b) + " of " + std::to_string(n) +
        (scales ? " scales are zero, NaN or Inf" : " zero points are NaN or Inf") + "; refusing to dequantise");
}

bool on_gpu(int64_t device, const char* what) {
  if (device < 0) return false;
  require_gpu(what);
  return true;
}

}  // namespace

void dequant_int4_entry(uintptr_t packed, uintptr_t scales, uintptr_t zeros, uintptr_t out, int64_t n, int64_t k,
                        int64_t group, const std::string& formula, const std::string& compute,
                        const std::string& out_dtype, int64_t device, int64_t stream, bool check_scales) {
  const Formula f = checks::choice<Formula>(formula, "formula",
                                            {{"sub_mul", Formula::SubMul}, {"mul_sub", Formula::MulSub},
                                             {"fma", Formula::Fma}});
  const Compute c = checks::choice<Compute>(compute, "compute", {{"float16", Compute::F16}, {"float32", Compute::F32}});
  const Out o = checks::choice<Out>(out_dtype, "out",
                                    {{"bfloat16", Out::BF16}, {"float16", Out::F16}, {"float32", Out::F32}});
  checks::stream(stream);
  checks::positive(n, "rows");
  checks::positive(k, "row length");
  if (group <= 0 || group % 32)
    value_error("group_size: must be a positive multiple of 32, got " + std::to_string(group));
  if (k % group)
    value_error("group_size: " + std::to_string(group) + " does not divide the row length " + std::to_string(k));
  checks::non_null(packed, "packed");
  checks::non_null(scales, "scales");
  checks::non_null(out, "out");
  const int64_t ngroups = n * (k / group);
  const bool gpu = on_gpu(device, "dequant_int4 on a CUDA array");
  if (gpu) {
    checks::aligned16(packed, "packed");
    checks::aligned16(out, "out");
  }
  std::unique_ptr<DeviceGuard> guard;
  if (gpu) guard = std::make_unique<DeviceGuard>(int(device));
  if (check_scales) {
    check_values(scales, ngroups, true, true, device, stream);
    if (zeros) check_values(zeros, ngroups, true, false, device, stream);
  }
  const auto* z = reinterpret_cast<const void*>(zeros);
  if (!gpu) {
    py::gil_scoped_release nogil;
    cpu_dequant_int4(reinterpret_cast<const uint8_t*>(packed), reinterpret_cast<const uint16_t*>(scales),
                     static_cast<const uint16_t*>(z), reinterpret_cast<void*>(out), n, k, group, f, c, o);
    return;
  }
#ifdef DRIFTSCOPE_WITH_CUDA
  py::gil_scoped_release nogil;
  launch_dequant_int4(reinterpret_cast<const void*>(packed), reinterpret_cast<const void*>(scales), z,
                      reinterpret_cast<void*>(out), n, k, group, f, c, o, reinterpret_cast<void*>(stream));
#endif
}

void dequant_q4_entry(uintptr_t blocks, uintptr_t out, int64_t n_blocks, const std::string& qtype, int64_t device,
                      int64_t stream) {
  const Q4 t = checks::choice<Q4>(qtype, "qtype", {{"Q4_0", Q4::Q4_0}, {"Q4_1", Q4::Q4_1}});
  checks::stream(stream);
  checks::positive(n_blocks, "n_blocks");
  checks::non_null(blocks, "blocks");
  checks::non_null(out, "out");
  const bool gpu = on_gpu(device, "dequant_q4 on a CUDA array");
  if (gpu) {
    if (blocks % 4) value_error("blocks: device pointer must be 4-byte aligned");
    checks::aligned16(out, "out");
  }
  if (!gpu) {
    py::gil_scoped_release nogil;
    cpu_dequant_q4(reinterpret_cast<const uint8_t*>(blocks), reinterpret_cast<float*>(out), n_blocks, t);
    return;
  }
#ifdef DRIFTSCOPE_WITH_CUDA
  DeviceGuard guard{static_cast<int>(device)};
  py::gil_scoped_release nogil;
  launch_dequant_q4(reinterpret_cast<const void*>(blocks), reinterpret_cast<void*>(out), n_blocks, t,
                    reinterpret_cast<void*>(stream));
#else
  (void)stream;
#endif
}

void dequant_fp8_entry(uintptr_t q, uintptr_t scales, uintptr_t out, int64_t n, int64_t k, const std::string& fmt,
                       const std::string& scaling, const std::string& via, int64_t device, int64_t stream,
                       bool check_scales) {
  const Fp8 f = checks::choice<Fp8>(fmt, "fmt", {{"float8_e4m3fn", Fp8::E4M3}, {"float8_e5m2", Fp8::E5M2}});
  const Scaling s = checks::choice<Scaling>(scaling, "scaling",
                                            {{"tensor", Scaling::Tensor}, {"channel", Scaling::Channel},
                                             {"block", Scaling::Block}});
  const Via v = checks::choice<Via>(via, "via", {{"float32", Via::F32}, {"bfloat16", Via::BF16}});
  checks::stream(stream);
  checks::positive(n, "rows");
  checks::positive(k, "row length");
  if (k % 16) value_error("row length: must be a multiple of 16 (16-byte vector loads), got " + std::to_string(k));
  checks::non_null(q, "q");
  checks::non_null(scales, "scales");
  checks::non_null(out, "out");
  const int64_t bk = (k + kFp8Block - 1) / kFp8Block;
  const int64_t ns = s == Scaling::Tensor ? 1 : s == Scaling::Channel ? n : ((n + kFp8Block - 1) / kFp8Block) * bk;
  const bool gpu = on_gpu(device, "dequant_fp8 on a CUDA array");
  if (gpu) {
    checks::aligned16(q, "q");
    checks::aligned16(out, "out");
  }
  std::unique_ptr<DeviceGuard> guard;
  if (gpu) guard = std::make_unique<DeviceGuard>(int(device));
  if (check_scales) check_values(scales, ns, false, true, device, stream);
  if (!gpu) {
    py::gil_scoped_release nogil;
    cpu_dequant_fp8(reinterpret_cast<const uint8_t*>(q), reinterpret_cast<const float*>(scales),
                    reinterpret_cast<uint16_t*>(out), n, k, f, s, v);
    return;
  }
#ifdef DRIFTSCOPE_WITH_CUDA
  py::gil_scoped_release nogil;
  launch_dequant_fp8(reinterpret_cast<const void*>(q), reinterpret_cast<const void*>(scales),
                     reinterpret_cast<void*>(out), n, k, f, s, v, reinterpret_cast<void*>(stream));
#endif
}

}  // namespace driftscope
