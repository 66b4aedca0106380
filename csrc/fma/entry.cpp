// Entry points of the FMA probe (entry.h): argument checks (the shared ones in csrc/checks.h), then dispatch
// to cpu_reference.cpp or the CUDA launchers.
#include "entry.h"

#include <cstdint>
#include <string>
#include <vector>

#include "../array.h"
#include "../checks.h"
#include "../device_info.h"
#include "cpu_reference.h"
#include "programs.h"
#ifdef DRIFTSCOPE_WITH_CUDA
#include "launch.h"
#endif

namespace driftscope {

namespace {

using checks::value_error;

FmaVariant parse_variant(const std::string& v) {
  return checks::choice<FmaVariant>(v, "variant", {{"fma", FmaVariant::Fma}, {"mul_add", FmaVariant::MulAdd},
                                                   {"plain_contract", FmaVariant::PlainContract},
                                                   {"plain_nocontract", FmaVariant::PlainNoContract}});
}

// One dtype, one device, aligned pointers, writable out. Returns true for CUDA arrays.
bool check_arrays(std::vector<ArrayView*> inputs, ArrayView& out, const char* what) {
  const ArrayView& first = *inputs[0];
  inputs.push_back(&out);
  for (const ArrayView* a : inputs) {
    if (a->dtype != first.dtype)
      throw py::type_error(a->arg + ": dtype " + dtype_name(a->dtype) + " does not match " + first.arg + "'s " +
                           dtype_name(first.dtype) + "; all arrays must have one dtype");
  }
  const bool gpu = checks::same_device(inputs, what);
  for (const ArrayView* a : inputs) checks::itemsize_aligned(*a);
  checks::writable(out);
  return gpu;
}

void dispatch(const FmaArgs& args, FmaVariant variant, bool gpu, int device, int64_t stream) {
  if (!gpu) {
    if (variant == FmaVariant::PlainContract || variant == FmaVariant::PlainNoContract) {
      if (args.dtype != DType::F32)
        value_error(std::string("variant: the plain CPU builds are float32 only (a CPU has no ") +
                    dtype_name(args.dtype) + " arithmetic for a compiler to contract)");
      if (variant == FmaVariant::PlainContract && !cpu_has_fma())
        throw std::runtime_error("variant plain_contract: this CPU has no FMA instructions (that build uses -mfma)");
    }
    py::gil_scoped_release nogil;
    cpu_fma_program(args, variant);
    return;
  }
#ifdef DRIFTSCOPE_WITH_CUDA
  DeviceGuard guard(device);
  py::gil_scoped_release nogil;
  void* s = reinterpret_cast<void*>(stream);
  switch (variant) {
    case FmaVariant::Fma:
    case FmaVariant::MulAdd: launch_fma_explicit(args, variant, s); break;
    case FmaVariant::PlainContract: launch_fma_plain_contract(args, s); break;
    case FmaVariant::PlainNoContract: launch_fma_plain_nocontract(args, s); break;
  }
#else
  (void)device;
  (void)stream;
  require_gpu("the FMA programs on CUDA arrays");
#endif
}

}  // namespace

void fma_dot(py::handle ao, py::handle bo, py::handle outo, const std::string& variant, int64_t stream) {
  const FmaVariant v = parse_variant(variant);
  checks::stream(stream);
  ArrayView a = intake(ao, "a");
  ArrayView b = intake(bo, "b");
  ArrayView out = intake(outo, "out");
  const bool gpu = check_arrays({&a, &b}, out, "fma_dot on CUDA arrays");
  checks::same_size(a, b);
  if (a.size % out.size != 0)
    value_error("a: " + std::to_string(a.size) + " elements is not rows x k for rows = out.size = " +
                std::to_string(out.size));
  FmaArgs args{FmaProgram::Dot, a.dtype, a.data, b.data, nullptr, out.data, out.size, a.size / out.size};
  dispatch(args, v, gpu, a.device, stream);
}

void fma_horner(py::handle co, py::handle xo, py::handle outo, const std::string& variant, int64_t stream) {
  const FmaVariant v = parse_variant(variant);
  checks::stream(stream);
  ArrayView c = intake(co, "coeffs");
  ArrayView x = intake(xo, "x");
  ArrayView out = intake(outo, "out");
  const bool gpu = check_arrays({&c, &x}, out, "fma_horner on CUDA arrays");
  checks::same_size(x, out);
  FmaArgs args{FmaProgram::Horner, x.dtype, c.data, x.data, nullptr, out.data, out.size, c.size};
  dispatch(args, v, gpu, x.device, stream);
}

void fma_axpy(py::handle alo, py::handle xo, py::handle yo, py::handle outo, const std::string& variant,
              int64_t stream) {
  const FmaVariant v = parse_variant(variant);
  checks::stream(stream);
  ArrayView alpha = intake(alo, "alpha");
  ArrayView x = intake(xo, "x");
  ArrayView y = intake(yo, "y");
  ArrayView out = intake(outo, "out");
  const bool gpu = check_arrays({&alpha, &x, &y}, out, "fma_axpy on CUDA arrays");
  if (alpha.size != 1) value_error("alpha: must have exactly 1 element, has " + std::to_string(alpha.size));
  checks::same_size(x, y);
  checks::same_size(x, out);
  FmaArgs args{FmaProgram::Axpy, x.dtype, alpha.data, x.data, y.data, out.data, out.size, 0};
  dispatch(args, v, gpu, x.device, stream);
}

bool fma_cpu_has_fma() { return cpu_has_fma(); }

}  // namespace driftscope
