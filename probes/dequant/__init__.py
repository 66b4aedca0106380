"""The dequantisation probe: formulas equal on paper are not equal in floating point.

Quantised weights are dequantised by `(q - z) * s`, `q*s - z*s` or `fma(q, s, -z*s)`, with the scale
arithmetic in float16 or float32, into bfloat16 before the matmul or inside it; GGUF Q4_0/Q4_1 blocks and
FP8 with per-tensor / per-channel / 128x128 block scales likewise. Each choice moves bits, and a GPU
migration often changes the kernel that makes it. The formulas are modelled in numerics/dequant.py;
the CUDA kernels (csrc/dequant), Triton kernels and torch code here are checked against that model bit
for bit, and the probe measures how far the formulas disagree and how fast the kernels stream.
Fusing the dequantisation into a Triton matmul can move bits by itself: with mma v2 tiles the compiler
gives the int4-fed dot a different register layout (kWidth 8 instead of 2) that permutes K inside each
64-wide tile, and the tensor core's block-FMA accumulation is order dependent (triton_fused.py,
mma_k_order.py).

Layout, as in a Triton tutorial: the kernels (`csrc/dequant/` through `kernels.py`, `triton_dequant.py`,
`torch_dequant.py`, the fused matmul in `triton_fused.py`), the wrappers (`backends.py`: numerics, cuda_ext,
triton, torch), the seeded inputs (`inputs.py`), the reference check and the measurement of each case into
the report (`probe.py`; the speed part in `speed.py`), the table and the plot (`table.py`), and the command
line (`__main__.py`, probes.runner)."""
