// Launcher of the explicit variants: __fmaf_rn / __hfma (fma) and __fmul_rn + __fadd_rn / __hmul_rn +
// __hadd_rn (mul_add). The flags of this file (the project's --fmad=true) cannot change their bits.
#include <stdexcept>

#include "launch.h"
#include "programs.cuh"

namespace driftscope {

void launch_fma_explicit(const FmaArgs& args, FmaVariant variant, void* stream) {
  if (variant == FmaVariant::Fma) {
    launch_programs<FmaOp>(args, stream, "fma program (fma variant)");
  } else if (variant == FmaVariant::MulAdd) {
    launch_programs<MulAddOp>(args, stream, "fma program (mul_add variant)");
  } else {
    throw std::invalid_argument("launch_fma_explicit: variant must be fma or mul_add");
  }
}

}  // namespace driftscope
