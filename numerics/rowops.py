"""Exact NumPy models of probes.invariant's row kernels (mean, softmax, log-softmax), bit for bit.

Every function takes ``x`` as a 2-D array ``[rows, n]`` (float32, float16 or ml_dtypes bfloat16) and
treats each row on its own, in the order of ``docs/reduction-orders.md`` ("Row reductions"):
- the sum: ``orders.lane_tree_sum`` with ``orders.lane_block(n)`` lanes, in float32;
- the max: the same lanes (lane ``j`` takes ``max`` over elements ``j, j + block, ...``, past the end
  -inf), then the max over the lanes (max is exact: its order only matters for the sign of a zero);
- ``exp`` and ``log`` are NumPy's float32 ``np.exp`` / ``np.log`` on arrays (what Triton's
  interpreter runs for ``tl.exp`` / ``tl.log``; a GPU's are other approximations, so on a GPU the
  kernels are compared with these models for closeness, not bits);
- a division is IEEE float32 division (``tl.div_rn``), the result is rounded once to the output dtype.
"""
from __future__ import annotations

import numpy as np

from .formats import FORMATS
from .orders import lane_block, lane_tree_sum

__all__ = ["row_mean", "row_max", "softmax", "log_softmax"]


def _rows(x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"expected a 2-D array [rows, n] with n >= 1, got shape {x.shape}")
    if x.dtype.name not in ("float32", "float16", "bfloat16"):
        raise ValueError(f"unsupported dtype {x.dtype}; valid: float32, float16, bfloat16")
    return x.astype(np.float32)              # exact


def _out(y: np.ndarray, out_dtype) -> np.ndarray:
    name = np.dtype(out_dtype).name if not isinstance(out_dtype, str) else out_dtype
    if name not in ("float32", "float16", "bfloat16"):
        raise ValueError(f"unsupported output dtype {out_dtype!r}")
    return y.astype(FORMATS[name].dtype)     # float32 -> narrow: one RNE


def row_max(x) -> np.ndarray:
    """The float32 row maxima of ``x`` [rows, n] in the lane order (see the module docstring)."""
    x32 = _rows(x)
    rows, n = x32.shape
    block = lane_block(n)
    steps = -(-n // block)
    padded = np.full((rows, steps * block), -np.inf, dtype=np.float32)
    padded[:, :n] = x32
    lanes = padded.reshape(rows, steps, block)
    m = np.full((rows, block), -np.inf, dtype=np.float32)
    for t in range(steps):
        m = np.maximum(m, lanes[:, t, :])
    return np.max(m, axis=1)


def row_mean(x, out_dtype=None) -> np.ndarray:
    """Row means ``lane_tree_sum(row) / n`` (float32 division), rounded to ``out_dtype`` (default
    x's dtype). Shape [rows]."""
    x32 = _rows(x)
    n = x32.shape[1]
    s = lane_tree_sum(x32)
    mean = s / np.full_like(s, n)            # n < 2^24: exact in float32
    return _out(mean, np.asarray(x).dtype if out_dtype is None else out_dtype)


def _shifted_and_sum(x):
    x32 = _rows(x)
    m = row_max(x32)
    z = x32 - m[:, None]                     # x - max, float32
    e = np.exp(z)
    return z, e, lane_tree_sum(e)


def softmax(x, out_dtype=None) -> np.ndarray:
    """``exp(x - max) / lane_tree_sum(exp(x - max))`` per row (float32), rounded to ``out_dtype``
    (default x's dtype)."""
    _, e, s = _shifted_and_sum(x)
    return _out(e / s[:, None], np.asarray(x).dtype if out_dtype is None else out_dtype)


def log_softmax(x, out_dtype=None) -> np.ndarray:
    """``(x - max) - log(lane_tree_sum(exp(x - max)))`` per row (float32), rounded to ``out_dtype``."""
    z, _, s = _shifted_and_sum(x)
    return _out(z - np.log(s)[:, None], np.asarray(x).dtype if out_dtype is None else out_dtype)
