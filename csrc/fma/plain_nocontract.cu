// The SAME plain expression `a * b + c` (PlainOp of programs.cuh) compiled with --fmad=false
// (CMakeLists.txt sets it for this file only): nvcc must keep the multiply and the add apart.
#include "launch.h"
#include "programs.cuh"

namespace driftscope {

void launch_fma_plain_nocontract(const FmaArgs& args, void* stream) {
  launch_programs<PlainOp>(args, stream, "fma program (plain, --fmad=false)");
}

}  // namespace driftscope
