"""Fit the model to a kernel's outputs at the validation shape (detection stage 4).

The designs (stages 1-3) run at small shapes (K = 64 and 512), where a library may pick another
kernel than for the validation shape: on the H100, cuBLAS ran bf16 (64 x 64 x 64) on an sm_90
kernel with 16-product blocks but (317 x 256 x 317) on an sm_75 HMMA.1688 kernel (8-product
blocks) with split-K and a ``splitKreduce_kernel``. So this stage runs one more random matmul
*at the validation shape* (a fit sample with its own seed, so the same kernel is chosen) and
searches the model's parameters by coordinate descent from the designs' model: for each
parameter in turn (split_k, block_size, sum_bits, extra_bits, roundings, alignment, promotion,
...) every value is tried with the others fixed, and the one that reproduces the most fit-sample
bits is kept, until the fit sample is reproduced bit for bit or a sweep changes nothing (then block size and
extra bits are searched jointly, and one more sweep follows).
The designs' model is kept as long as it already reproduces the fit sample.

The result is then validated on the *validation* sample (another seed): the fit never sees it.
``fit_model`` also serves ``refit.py`` (re-analysing a saved report offline).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from numerics.matmul import MatmulModel
from numerics.matmul_fast import matmul_bits

SPLIT_K = (1, 2, 3, 4, 5, 6, 8, 16)
BLOCK_SIZES = (1, 2, 4, 8, 16, 32, 64)
SUM_BITS = tuple(range(24, 11, -1))
EXTRA_BITS = tuple(range(-16, 27)) + (None,)
PROMOTE_EVERY = (None, 32, 64, 128, 256)
FIT_SEED_OFFSET = 1000          # the fit sample's seed = the run's seed + this
FIT_ROWS = (0, 1, 2, 3, 4, 5)   # rows of the fit sample evaluated (two of each row kind)
FIT_DOTS = 1800                 # ... or more rows, so that about this many dot products are fitted


def _candidates(m: MatmulModel, param: str):
    if param == "split_k":
        vals = SPLIT_K
    elif param == "block_size":
        vals = BLOCK_SIZES
    elif param == "sum_bits":
        vals = SUM_BITS
    elif param == "extra_bits":
        vals = EXTRA_BITS
    elif param in ("rounding",):
        vals = ("toward_zero", "nearest_even")
    elif param == "final_rounding":
        vals = (None, "toward_zero", "nearest_even")
    elif param in ("normalize", "exact_products"):
        vals = (True, False)
    elif param == "align_to":
        vals = ("value", "exponent_sum")
    elif param == "align_cut":
        vals = ("toward_zero", "floor")
    elif param == "promote_every":
        vals = PROMOTE_EVERY
    else:
        raise ValueError(param)
    out = []
    for v in vals:
        try:
            out.append(replace(m, **{param: v}))
        except ValueError:          # e.g. promote_every not a multiple of the block size
            continue
    return out


PARAMS = ("split_k", "block_size", "sum_bits", "extra_bits", "rounding", "final_rounding",
          "align_to", "normalize", "align_cut", "promote_every", "exact_products")


MAX_EVALS = 150                 # candidate models evaluated at most (bounds the time of a misfit)


class _Budget(Exception):
    pass


def fit_model(A, B, got, start: MatmulModel, *, rows=FIT_ROWS, sweeps: int = 4,
              max_evals: int = MAX_EVALS):
    """Coordinate descent from ``start`` on the dot products ``A[rows] @ B`` whose fp32 outputs
    are ``got[rows]`` (float array or uint32 bits). Returns ``(model, rate, trace)``: the best
    model, its match rate on those rows, and the steps taken ([param, value, rate], ...). At most
    ``max_evals`` candidates are evaluated (the trace then ends with ["budget", ...])."""
    rows = [r for r in rows if r < A.shape[0]]
    a = A[rows]
    g = np.asarray(got)[rows]
    gb = g if g.dtype == np.uint32 else g.astype(np.float32).view(np.uint32)
    cache: dict = {}

    def rate(m):
        if m not in cache:
            if len(cache) >= max_evals:
                raise _Budget
            w = matmul_bits(a, B, m)
            cache[m] = float((w.astype(np.float32).view(np.uint32) == gb).mean())
        return cache[m]

    best, r = start, rate(start)
    trace = [["start", start.describe(), r]]
    state = {"best": best, "r": r}
    try:
        _search(A, B, got, rows, sweeps, rate, state, trace, max_evals)
    except _Budget:
        trace.append(["budget", f"{max_evals} candidates evaluated", state["r"]])
    return state["best"], state["r"], trace


def _search(A, B, got, rows, sweeps, rate, state, trace, max_evals, joint=True):
    best, r = state["best"], state["r"]
    for _ in range(sweeps):
        if r == 1.0:
            break
        changed = False
        for param in PARAMS:
            before = best
            for m in _candidates(before, param):
                rm = rate(m)
                if rm > r:
                    best, r, changed = m, rm, True
                    state.update(best=best, r=r)
            if best != before:
                trace.append([param, best.describe(), r])
            if r == 1.0:
                break
        if not changed:
            break
    if r < 1.0 and joint:             # stuck: block size and extra bits jointly, then one more sweep
        before = best
        for nb in BLOCK_SIZES:
            for p in EXTRA_BITS:
                try:
                    m = replace(before, block_size=nb, extra_bits=p)
                except ValueError:
                    continue
                rm = rate(m)
                if rm > r:
                    best, r = m, rm
                    state.update(best=best, r=r)
        if best != before:
            trace.append(["block_size+extra_bits", best.describe(), r])
            if r < 1.0:
                state["r"] = r
                _search(A, B, got, rows, 1, rate, state, trace, max_evals, joint=False)


def fit_at_shape(backend, fmt: str, start: MatmulModel, *, M: int, N: int, K: int, seed: int,
                 max_evals: int = MAX_EVALS):
    """Run the fit sample (``random_operands`` with seed + FIT_SEED_OFFSET, shape M x K x N)
    through ``backend`` and fit from ``start``. Returns a dict for the report."""
    from probes.accumulator.validate import random_operands
    A, B, inputs = random_operands(fmt, M * N, K, seed + FIT_SEED_OFFSET)
    got = backend.matmul(A, B, fmt)
    rows = tuple(range(min(M, max(len(FIT_ROWS), -(-FIT_DOTS // N)))))
    model, r, trace = fit_model(A, B, got, start, rows=rows, max_evals=max_evals)
    return {"model": model, "fit_rate": r, "trace": trace, "inputs": inputs,
            "rows": list(rows), "changed": {k: [getattr(start, k), getattr(model, k)]
                                                for k in model.as_dict()
                                                if getattr(start, k) != getattr(model, k)}}
