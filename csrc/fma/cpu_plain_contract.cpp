// Plain float32 programs, contraction ON: CMakeLists.txt compiles this file with -ffp-contract=fast -mfma.
#include "cpu_plain.h"
#define DS_PLAIN_NS plain_contract
#include "cpu_plain.inc"
