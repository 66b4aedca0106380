"""GEMM probe: which kernel did cuBLAS pick, and does a request's row depend on its batch?

cuBLAS picks a kernel (tile, split-K, reduction scheme, stages) by heuristics that look at the shape,
dtype and GPU. Two picks for the same product give different bits, so the same row of X @ W^T changes
when X gains rows: a larger M picks another kernel, and a request's logits depend on what else is in its
batch. The probe lists every cuBLASLt algorithm for one product, runs them all on the same inputs and
clusters their outputs into bit-identical groups (marking the heuristic's default and torch's own
result); sweeps M (and, for attention, batch and sequence length) to find where row 0 changes its
bits; and offers a batch-invariant Triton matmul (every output element summed by the same wgmma k16 chain
for every M; the tile config may change with M's bucket only among configs measured to give identical
bits), timed against cuBLAS in the same run.

Layout, as in a Triton tutorial: the kernels (`csrc/gemm/` for cuBLASLt; `triton_matmul.py` with its
wrapper, `triton_tiles.py` the shared tile walks, `triton_handoff.py` the last partial wave balanced by
handing accumulators on, `triton_wide.py` tiles of power-of-two parts, `triton_mixed.py` whole waves of
big tiles and the rest in small ones, `triton_splitk.py` K in slices fixed by the shape with the float32
partials added in slice order; configs, M buckets and the tables in `triton_configs.py`, the measured
tables shipped per GPU in `choices/*.json`, the bench against cuBLAS in `triton_bench.py`, the sm_90
compile check without a GPU in `compile_check.py`, issue 14's one-run GPU check (tests, speed cold and in
CUDA graphs, cuBLASLt without split-K) in `bimatmul.py`), the wrapper
(`cublaslt.py`), the reference check and clustering (`cluster.py`), the sweeps (`sweep.py`), the
measurement and the report (`probe.py`), the table and the plot (`table.py`) and the command line
(`__main__.py`).
"""
