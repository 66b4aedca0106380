"""The dequantisation probe: formulas equal on paper are not equal in floating point.

Quantised weights are dequantised by `(q - z) * s`, `q*s - z*s` or `fma(q, s, -z*s)`, with the scale
arithmetic in float16 or float32, into bfloat16 before the matmul or inside it; GGUF Q4_0/Q4_1 blocks and
FP8 with per-tensor / per-channel / 128x128 block scales likewise. Each choice moves bits, and a GPU
migration often changes the kernel that makes it. The formulas are modelled in numerics/dequant.py;
the CUDA kernels (csrc/dequant), Triton kernels and torch code here are checked against that model bit
for bit, and the probe measures how far the formulas disagree and how fast the kernels stream."""
