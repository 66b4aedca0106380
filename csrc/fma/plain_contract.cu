// The plain expression `a * b + c` (PlainOp of programs.cuh) compiled with the project's default
// --fmad=true (set again for this file in CMakeLists.txt): nvcc may contract it into an FMA.
#include "launch.h"
#include "programs.cuh"

namespace driftscope {

void launch_fma_plain_contract(const FmaArgs& args, void* stream) {
  launch_programs<PlainOp>(args, stream, "fma program (plain, --fmad=true)");
}

}  // namespace driftscope
