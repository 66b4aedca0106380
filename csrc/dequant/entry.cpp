// Checked entry points (entry.h): argument validation, then the CPU reference or the CUDA launchers.
#include "entry.h"

#include <pybind11/pybind11.h>

#include <cmath>
#include <memory>
#include <string>

#include "../device_info.h"
#include "../reduction/small_float.h"
#include "dequant.h"

namespace driftscope {

namespace py = pybind11;
using namespace dq;

namespace {

[[noreturn]] void bad(const std::string& msg) { throw py::value_error(msg); }

template <typename E>
E pick(const std::string& v, const char* what, std::initializer_list<std::pair<const char*, E>> opts) {
  std::string known;
  for (const auto& o : opts) {
    if (v == o.first) return o.second;
    known += (known.empty() ? "" : ", ") + std::string(o.first);
  }
  bad(std::string(what) + ": must be one of " + known + ", got '" + v + "'");
}

void need(uintptr_t p, const char* what) {
  if (!p) bad(std::string(what) + ": null pointer");
}

void positive(int64_t v, const char* what) {
  if (v <= 0) bad(std::string(what) + ": must be > 0 (empty input?), got " + std::to_string(v));
}

void aligned16(uintptr_t p, const char* what) {
  if (p % 16) bad(std::string(what) + ": pointer is not 16-byte aligned (the kernels use 16-byte vector access)");
}

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
    bad(std::string(scales ? "scales" : "zeros") + ": " + std::to_string(b) + " of " + std::to_string(n) +
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
  const Formula f = pick<Formula>(formula, "formula", {{"sub_mul", Formula::SubMul}, {"mul_sub", Formula::MulSub},
                                                      {"fma", Formula::Fma}});
  const Compute c = pick<Compute>(compute, "compute", {{"float16", Compute::F16}, {"float32", Compute::F32}});
  const Out o = pick<Out>(out_dtype, "out", {{"bfloat16", Out::BF16}, {"float16", Out::F16}, {"float32", Out::F32}});
  positive(n, "rows");
  positive(k, "row length");
  if (group <= 0 || group % 32) bad("group_size: must be a positive multiple of 32, got " + std::to_string(group));
  if (k % group) bad("group_size: " + std::to_string(group) + " does not divide the row length " + std::to_string(k));
  need(packed, "packed");
  need(scales, "scales");
  need(out, "out");
  const int64_t ngroups = n * (k / group);
  const bool gpu = on_gpu(device, "dequant_int4 on a CUDA array");
  if (gpu) {
    aligned16(packed, "packed");
    aligned16(out, "out");
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
  const Q4 t = pick<Q4>(qtype, "qtype", {{"Q4_0", Q4::Q4_0}, {"Q4_1", Q4::Q4_1}});
  positive(n_blocks, "n_blocks");
  need(blocks, "blocks");
  need(out, "out");
  const bool gpu = on_gpu(device, "dequant_q4 on a CUDA array");
  if (gpu) {
    if (blocks % 4) bad("blocks: device pointer must be 4-byte aligned");
    aligned16(out, "out");
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
  const Fp8 f = pick<Fp8>(fmt, "fmt", {{"float8_e4m3fn", Fp8::E4M3}, {"float8_e5m2", Fp8::E5M2}});
  const Scaling s = pick<Scaling>(scaling, "scaling", {{"tensor", Scaling::Tensor}, {"channel", Scaling::Channel},
                                                      {"block", Scaling::Block}});
  const Via v = pick<Via>(via, "via", {{"float32", Via::F32}, {"bfloat16", Via::BF16}});
  positive(n, "rows");
  positive(k, "row length");
  if (k % 16) bad("row length: must be a multiple of 16 (16-byte vector loads), got " + std::to_string(k));
  need(q, "q");
  need(scales, "scales");
  need(out, "out");
  const int64_t bk = (k + kFp8Block - 1) / kFp8Block;
  const int64_t ns = s == Scaling::Tensor ? 1 : s == Scaling::Channel ? n : ((n + kFp8Block - 1) / kFp8Block) * bk;
  const bool gpu = on_gpu(device, "dequant_fp8 on a CUDA array");
  if (gpu) {
    aligned16(q, "q");
    aligned16(out, "out");
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
