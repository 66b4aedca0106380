// CPU builds of the FMA probe's programs, bit for bit equal to numerics/fma_programs.py.
//   fma, mul_add: every format. float32 uses std::fma and a float multiply then add (this file is
//     compiled with the project's -ffp-contract=off); float16/bfloat16 are emulated in double and
//     rounded after every operation (small_float.h), the fused one through round-to-odd.
//   plain (float32 only): `a * b + c` from cpu_plain.inc, compiled twice: cpu_plain_contract.cpp with
//     -ffp-contract=fast -mfma and cpu_plain_nocontract.cpp with -ffp-contract=off (CMakeLists.txt).
#pragma once

#include "programs.h"

namespace driftscope {

// True when this CPU executes FMA instructions (__builtin_cpu_supports("fma")). The contracted plain
// build needs them; it is refused (std::runtime_error) on a CPU without.
bool cpu_has_fma();

// Runs args.program with `variant` on host pointers. Throws std::invalid_argument for a plain variant
// with float16/bfloat16 (a CPU has no such arithmetic for a compiler to contract).
void cpu_fma_program(const FmaArgs& args, FmaVariant variant);

}  // namespace driftscope
