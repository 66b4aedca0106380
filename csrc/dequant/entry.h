// Checked entry points of the dequantisation kernels (bound in csrc/bindings.cpp). Arrays arrive as raw
// pointers from probes/dequant/kernels.py, which checks dtypes, devices, contiguity and shapes of the
// torch / NumPy arrays; here: sizes, names, alignment, scale values, then CPU reference or CUDA launch.
// device < 0: host pointers (C++ reference); device >= 0: device pointers on that GPU.
#pragma once

#include <cstdint>
#include <string>

namespace driftscope {

void dequant_int4_entry(uintptr_t packed, uintptr_t scales, uintptr_t zeros, uintptr_t out, int64_t n, int64_t k,
                        int64_t group, const std::string& formula, const std::string& compute,
                        const std::string& out_dtype, int64_t device, int64_t stream, bool check_scales);
void dequant_q4_entry(uintptr_t blocks, uintptr_t out, int64_t n_blocks, const std::string& qtype, int64_t device,
                      int64_t stream);
void dequant_fp8_entry(uintptr_t q, uintptr_t scales, uintptr_t out, int64_t n, int64_t k, const std::string& fmt,
                       const std::string& scaling, const std::string& via, int64_t device, int64_t stream,
                       bool check_scales);

}  // namespace driftscope
