// Host launchers of the FMA probe's kernels (CUDA builds only). Pointers are device pointers on the
// current device; `stream` is a cudaStream_t. Every launch is checked (std::runtime_error on failure).
#pragma once

#include "programs.h"

namespace driftscope {

// explicit_programs.cu: variant Fma or MulAdd.
void launch_fma_explicit(const FmaArgs& args, FmaVariant variant, void* stream);
// plain_contract.cu (nvcc --fmad=true) and plain_nocontract.cu (--fmad=false): the same kernel text.
void launch_fma_plain_contract(const FmaArgs& args, void* stream);
void launch_fma_plain_nocontract(const FmaArgs& args, void* stream);

}  // namespace driftscope
