"""Batch-invariant kernels for a deterministic serving mode: the result for one row (one token) depends only
on that row's own data, never on how many rows there are, which other rows share the launch, or where the
row sits in the packed tensor. Every reduction has a fixed order, defined once in numerics/ and
docs/reduction-orders.md, and the kernels equal those models bit for bit in Triton's interpreter.

- `row_mean(x, dims, keepdim, dtype)`: aten::mean.dim (RMSNorm's variance);
- `softmax(x, dim, half_to_float)`, `log_softmax(...)`: aten::_softmax / aten::_log_softmax;
- `attention(q, k, v, attn_mask=, is_causal=, scale=)`: SDPA with grouped-query heads, for prefill and for
  decode over continuous batching's packed KV; returns AttentionResult(out, uncovered) where `uncovered`
  is a device tensor counting mask rows the kernels do not cover (check it after the step).
The matmul is probes.gemm.triton_matmul.batch_invariant_matmul. `packed` rebuilds continuous batching's
packed calls, `bench` times the kernels against torch's ops (GPU), `compile_check` compiles them for sm_90
without a GPU.
"""
import importlib

__all__ = ["row_mean", "softmax", "log_softmax", "attention", "AttentionResult"]

_HOME = {"row_mean": "rows", "softmax": "rows", "log_softmax": "rows", "attention": "attention",
         "AttentionResult": "attention"}


def __getattr__(name):
    """The kernels are imported on first use: Triton (the `gpu` extra) is needed only when they run."""
    if name in _HOME:
        value = getattr(importlib.import_module(f"probes.invariant.{_HOME[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'probes.invariant' has no attribute {name!r}")
