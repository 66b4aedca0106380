"""The tensor-core accumulator probe: how a GPU's matrix units add products.

What it reveals (undocumented by NVIDIA): whether products are exact, how many bits beyond fp32's
24 the aligned sum keeps (p), whether the alignment truncates and the sum rounds toward zero or to
nearest, how many products are summed before one rounding (the block FMA size n_b), and whether
the accumulator is normalised between blocks, how many significant bits it keeps (sum_bits: 14
for fp8 on the H100), and whether K is split into slices whose fp32 results are added (split_k). These decide the low bits of every GEMM, hence why
the same matmul differs between GPUs, libraries (cuBLAS vs Triton) and input formats.

Method (after Fasi, Higham, Mikaitis, Pranesh, "Numerical behavior of NVIDIA tensor cores", PeerJ
CS 2021, and Khattak & Mikaitis 2025): designed dot products (``designs.py``) whose results flip
at the parameter values (a half-ulp that survives only in one block, a tiny term that survives only
with enough extra bits, an exact tie, a carry, a cancellation, a product that is exact only if not
rounded) are run through a backend (``backends.py``: cuBLAS via torch, ``torch._scaled_mm`` for
fp8, a Triton ``tl.dot`` kernel, a simulated device). ``detect.py`` searches the grid of
``numerics.matmul.MatmulModel`` parameters for those that reproduce every design output bit for
bit. A library may pick another kernel for a bigger shape (cuBLAS on the H100: split-K with a
``splitKreduce_kernel``, or an sm_75 HMMA.1688 kernel with 8-product blocks, for 317 x 256 x 317
but not for 64 x 64 x 64), so ``fit.py`` (stage 4) runs a random fit sample at the validation
shape and moves the designs' model by coordinate descent (split_k, block size, sum_bits, ...)
until it reproduces that sample. ``validate.py`` then checks the model on >= 100,000 other random
dot products (normal, mixed exponents, cancelling). ``refit.py`` re-analyses a saved report on a
CPU (the validation operands are regenerated from their seed). Published numbers are hypotheses
this tests, never inputs.

Layout: the designs, detection, fit and validation above; one case per backend x format measured into the
report in ``probe.py``; the table and the plot in ``table.py``; the command line (probes.runner) in
``__main__.py``. Run: ``python -m probes.accumulator [--device cpu|cuda] [--formats ...] [--backends ...]``.
"""
