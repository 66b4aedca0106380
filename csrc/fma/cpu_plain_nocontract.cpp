// Plain float32 programs, contraction OFF: CMakeLists.txt compiles this file with -ffp-contract=off.
#include "cpu_plain.h"
#define DS_PLAIN_NS plain_nocontract
#include "cpu_plain.inc"
