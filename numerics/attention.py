"""Exact NumPy model of probes.invariant's batch-invariant attention, bit for bit in Triton's interpreter.

The order (``docs/reduction-orders.md``, "Attention"): for one query row (one token, one query head)
with allowed keys ``[start, end)``:
- the keys are cut into splits of ``split`` keys counted from ``start`` (split ``s`` covers
  ``[start + s split, min(end, start + (s + 1) split))``), so their number, ``ceil((end - start) /
  split)``, depends on the row's own key count only; no allowed key: the output is zeros;
- inside a split, blocks of ``block_n`` keys counted from the split's first key, visited in order, each
  an online-softmax step in float32 (``online_block``): scores ``k_order_dot(q, k^T) * scale``, keys past
  the split's end -inf, running max ``m``, sum ``l`` (the block's p summed by the halving tree), and
  accumulator ``acc = k_order_dot(p rounded to the input dtype, v, acc * alpha)``;
- the splits' ``(m, l, acc)`` merged in split order 0, 1, 2, ... (``combine``), then ``acc / l`` rounded
  to the input dtype.
``k_order_dot`` is the interpreter's dot (probes.gemm.triton_matmul.interpreter_dot_shim): every
element summed over k in order in float32 from +0, each product rounded to float32 (exact for 16-bit
operands), then the accumulator operand added. ``exp`` is NumPy's float32 ``np.exp`` (the
interpreter's): a GPU's differs, so on a GPU the kernels are compared with this model for closeness.

``mask_intervals`` derives ``[start, end)`` from an SDPA mask and flags the rows the kernels do not cover
(allowed keys not one interval, or an additive mask with a non-zero allowed value).
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

from .formats import FORMATS
from .orders import halving_tree_reduce

__all__ = ["SPLIT", "BLOCK_N", "k_order_dot", "online_block", "combine", "mask_intervals",
           "causal_intervals", "attention"]

#: The kernels' fixed constants: keys per KV split and keys per block (a power of two dividing SPLIT).
SPLIT = 512
BLOCK_N = 64

_F32 = np.float32


def _f32(a) -> np.ndarray:
    return np.asarray(a).astype(_F32)         # exact for float16 / bfloat16


def k_order_dot(a, b, d=None) -> np.ndarray:
    """``d + a @ b`` (a [M, K], b [K, N]) as the interpreter shim's tl.dot: ``acc = +0``, then
    ``acc += a[:, k] * b[k, :]`` for k = 0, 1, ... in float32, then ``acc + d`` (d default +0)."""
    a32, b32 = _f32(a), _f32(b)
    acc = np.zeros((a32.shape[0], b32.shape[1]), _F32)
    for k in range(a32.shape[1]):
        acc += a32[:, k:k + 1] * b32[k:k + 1, :]
    return acc + (np.zeros_like(acc) if d is None else _f32(d))


def _cast(x, dtype) -> np.ndarray:
    return np.asarray(x, _F32).astype(FORMATS[np.dtype(dtype).name].dtype)  # float32 -> narrow: one RNE


def online_block(m, l, acc, scores, valid, v_block, dtype):
    """One online-softmax step. m, l [R]; acc [R, D]; scores [R, N] (float32, already scaled); valid
    [N] bool; v_block [N, D] (zeros where not valid); dtype: the dtype p is rounded to for p @ v.
    Returns the new (m, l, acc). A block with no valid key returns m, l unchanged and acc + 0."""
    s = np.where(np.asarray(valid)[None, :], scores, -np.inf).astype(_F32)
    m_new = np.maximum(m, np.max(s, axis=1))
    m_use = np.where(m_new == -np.inf, _F32(0), m_new)
    alpha = np.exp(m - m_use)
    p = np.exp(s - m_use[:, None])
    l_new = l * alpha + halving_tree_reduce(p)
    acc_new = k_order_dot(_cast(p, dtype), v_block, acc * alpha[:, None])
    return m_new, l_new, acc_new


def combine(parts):
    """Merge split states [(m, l, acc), ...] in order: (M, L, A) = parts[0], then for each next split
    ``M' = max(M, m)``, ``a = exp(M - M')``, ``b = exp(m - M')``, ``L = L a + l b``, ``A = A a + acc b``.
    Returns A / L (float32)."""
    M, L, A = parts[0]
    for m, l, a in parts[1:]:
        m_new = np.maximum(M, m)
        m_use = np.where(m_new == -np.inf, _F32(0), m_new)
        ca, cb = np.exp(M - m_use), np.exp(m - m_use)
        L = L * ca + l * cb
        A = A * ca[:, None] + a * cb[:, None]
        M = m_new
    return A / L[:, None]


def _split_state(q_row, K, V, lo, hi, scale, block_n, dtype):
    D = q_row.shape[-1]
    m = np.full(1, -np.inf, _F32)
    l = np.zeros(1, _F32)
    acc = np.zeros((1, D), _F32)
    for b0 in range(lo, hi, block_n):
        keys = b0 + np.arange(block_n)
        valid = keys < hi
        kb = np.zeros((block_n, D), K.dtype)
        vb = np.zeros((block_n, D), V.dtype)
        kb[valid] = K[keys[valid]]
        vb[valid] = V[keys[valid]]
        scores = k_order_dot(q_row[None, :], kb.T) * _F32(scale)
        m, l, acc = online_block(m, l, acc, scores, valid, vb, dtype)
    return m, l, acc


def attention(q, k, v, start, end, *, scale=None, split=SPLIT, block_n=BLOCK_N) -> np.ndarray:
    """The kernels' output for q [B, Hq, Lq, D], k / v [B, Hk, Lk, D] (Hq % Hk == 0; query head h reads
    kv head h // (Hq / Hk)) with allowed keys [start, end) per row (int arrays broadcastable to
    [B, Hq, Lq]). ``scale`` defaults to 1/sqrt(D), rounded to float32. Returns [B, Hq, Lq, D] in q's dtype."""
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    B, Hq, Lq, D = q.shape
    G = Hq // k.shape[1]
    scale = 1.0 / np.sqrt(D) if scale is None else scale
    start = np.broadcast_to(start, (B, Hq, Lq))
    end = np.broadcast_to(end, (B, Hq, Lq))
    out = np.zeros((B, Hq, Lq, D), _F32)
    for b in range(B):
        for h in range(Hq):
            K, V = k[b, h // G], v[b, h // G]
            for i in range(Lq):
                st, en = int(start[b, h, i]), int(end[b, h, i])
                parts = [_split_state(q[b, h, i], K, V, lo, min(en, lo + split), scale, block_n, q.dtype)
                         for lo in range(st, en, split)]
                if parts:
                    out[b, h, i] = combine(parts)[0]
    return _cast(out, q.dtype)


def causal_intervals(lq: int, lk: int):
    """torch SDPA's is_causal (top-left aligned: query i attends keys 0..i): start 0, end min(i + 1, lk)."""
    return np.zeros(lq, np.int64), np.minimum(np.arange(lq) + 1, lk)


def mask_intervals(mask):
    """(start, end, uncovered) per row of an SDPA mask [..., Lq, Lk]: bool (True = attend) or float
    (additive: a value <= the dtype's finfo.min, -inf included, masks; anything else attends).
    start/end: the first allowed key and one past the last (0, 0 when none). uncovered: the row's
    allowed keys are not one interval [start, end), or an allowed additive value is not exactly 0
    (NaN included). A row with no allowed key is covered (the kernels output zeros)."""
    mask = np.asarray(mask)
    if mask.dtype == np.bool_:
        allowed, biased = mask, np.zeros(mask.shape, bool)
    else:
        vals = _f32(mask)
        allowed = ~(vals <= _F32(ml_dtypes.finfo(mask.dtype).min))
        biased = allowed & (vals != 0)
    lk = mask.shape[-1]
    idx = np.arange(lk)
    count = allowed.sum(-1)
    first = np.where(allowed, idx, lk).min(-1)
    last = np.where(allowed, idx, -1).max(-1)
    any_ = count > 0
    start = np.where(any_, first, 0)
    end = np.where(any_, last + 1, 0)
    uncovered = any_ & ((count != last - first + 1) | biased.any(-1))
    return start, end, uncovered
