"""Reduction-order probe: does a sum's result depend on the order the hardware happened to use?

A fixed-order (deterministic) reduction adds the elements in an order fixed by the code alone
(docs/reduction-orders.md): it returns one bit pattern every run, and `numerics.orders` predicts that
pattern on a CPU. An atomic reduction computes the same per-block partials and lets the blocks add
them into one cell with atomicAdd, in whatever order they arrive (as torch's index_add_ and
scatter_add_ do element by element): it returns many. The probe pushes one input through every
backend and strategy many times and reports how many distinct results each gives, how far apart they
are in ulps, how far from the exact sum, whether the fixed orders match the model bit for bit, and what
determinism costs in time.

Layout, as in a Triton tutorial: the kernels (`csrc/reduction/` for the extension and CuPy,
`triton_sum.py`, `numba_sum.py`, `torch_sum.py`), the wrappers and their reference models
(`backends.py`), the measurement and the report (`probe.py`), the table and the plot (`table.py`),
and the command line (`__main__.py`).
"""
