"""FMA probe: does ``a * b + c`` round once or twice, and who decides?

A fused multiply-add (FMA) computes ``a*b + c`` exactly and rounds once; a multiply followed by an add
rounds the product first and the sum again. The two differ in the last bits whenever the product's
dropped bits matter to the sum. Compilers may *contract* a plain ``a * b + c`` into an FMA (nvcc does by
default, ``--fmad=true``; Triton does, ``enable_fp_fusion=True``; Numba does with ``fastmath=True``; GCC
with ``-ffp-contract=fast`` on a CPU with FMA), so two builds of the same source text compute different
bits. The probe runs a dot product (sequential over k, one thread per row), Horner's rule and axpy, in
float32, float16 and bfloat16, with an explicit FMA, an explicit multiply-then-add, and the plain
expression built with contraction on and off, and reports for each: whether it equals the exact model of
``numerics.fma_programs`` bit for bit (``model_match``), and between variants the fraction of outputs
that differ, the largest distance in ulps and the histogram of distances.

Layout, as in a Triton tutorial: the kernels (``csrc/fma/`` for CUDA and the C++ CPU reference,
``triton_fma.py``, ``numba_fma.py``), the wrappers (``kernels.py``), the inputs, measurement and report
(``probe.py``), the table and the plot (``table.py``), and the command line (``__main__.py``).
"""
