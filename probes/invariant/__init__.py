"""Batch-invariant kernels (placeholder while the package is being written)."""
from probes.invariant.attention import AttentionResult, attention
from probes.invariant.rows import log_softmax, row_mean, softmax

__all__ = ["row_mean", "softmax", "log_softmax", "attention", "AttentionResult"]
