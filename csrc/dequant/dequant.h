// Dequantisation kernels (see numerics/dequant.py for the formulas they implement bit for bit).
// Pointers are raw host (CPU reference) or device (CUDA launchers) pointers; the entry points in
// entry.cpp check the arguments before anything here runs.
#pragma once

#include <cstdint>

namespace driftscope {
namespace dq {

enum class Formula { SubMul = 0, MulSub = 1, Fma = 2 };    // (q-z)*s | q*s - z*s | fma(q, s, -(z*s))
enum class Compute { F16 = 0, F32 = 1 };                    // scale arithmetic
enum class Out { BF16 = 0, F16 = 1, F32 = 2 };              // output dtype
enum class Q4 { Q4_0 = 0, Q4_1 = 1 };                       // GGUF block types
enum class Fp8 { E4M3 = 0, E5M2 = 1 };
enum class Scaling { Tensor = 0, Channel = 1, Block = 2 };  // fp8 scales: 1 | per row | 128x128
enum class Via { F32 = 0, BF16 = 1 };                       // fp8: scale product in fp32 or bf16

constexpr int kFp8Block = 128;

inline int out_size(Out o) { return o == Out::F32 ? 4 : 2; }

// int4 group-wise: packed (n, k/2) bytes (weight 2j low nibble), scales/zeros (n, k/group) fp16 bits;
// zeros == nullptr: symmetric (signed nibbles, z = 0).
void cpu_dequant_int4(const uint8_t* packed, const uint16_t* scales, const uint16_t* zeros, void* out,
                      int64_t n, int64_t k, int64_t group, Formula f, Compute c, Out o);
// GGUF: n_blocks blocks of 18 (Q4_0) / 20 (Q4_1) bytes -> n_blocks * 32 float32.
void cpu_dequant_q4(const uint8_t* blocks, float* out, int64_t n_blocks, Q4 t);
// fp8 (n, k) bytes, float32 scales (1 | n | ceil(n/128)*ceil(k/128)) -> bf16 bits.
void cpu_dequant_fp8(const uint8_t* q, const float* scales, uint16_t* out, int64_t n, int64_t k, Fp8 fmt,
                     Scaling sc, Via via);

#ifdef DRIFTSCOPE_WITH_CUDA
void launch_dequant_int4(const void* packed, const void* scales, const void* zeros, void* out, int64_t n,
                         int64_t k, int64_t group, Formula f, Compute c, Out o, void* stream);
void launch_dequant_q4(const void* blocks, void* out, int64_t n_blocks, Q4 t, void* stream);
void launch_dequant_fp8(const void* q, const void* scales, void* out, int64_t n, int64_t k, Fp8 fmt,
                        Scaling sc, Via via, void* stream);
// Number of bad values among n: fp16 (is_half) or fp32; bad = NaN/Inf, or zero when zero_is_bad.
// Synchronises the stream.
int64_t launch_count_bad(const void* v, int64_t n, bool is_half, bool zero_is_bad, void* stream);
#endif

}  // namespace dq
}  // namespace driftscope
