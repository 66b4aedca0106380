"""Wrappers over the extension's FMA programs (``csrc/fma/``): NumPy arrays run the C++ CPU reference,
torch CUDA tensors the CUDA kernels (on the tensor's device and current stream).

Variants and the model each is predicted to equal (``numerics.fma_programs``):

* ``fma``: ``__fmaf_rn`` / ``__hfma`` (CPU: ``std::fma``, double + round-to-odd for 16-bit) -> fma
* ``mul_add``: ``__fmul_rn + __fadd_rn`` / ``__hmul_rn + __hadd_rn`` -> mul_add
* ``plain_contract``: ``a * b + c`` built with nvcc ``--fmad=true`` (CPU: ``-ffp-contract=fast -mfma``, and with GCC ``--param=avoid-fma-max-bits=0``, see CMakeLists.txt) -> fma
* ``plain_nocontract``: the same text with ``--fmad=false`` (CPU: ``-ffp-contract=off``) -> mul_add

On the CPU the plain builds exist for float32 only.
"""
from __future__ import annotations

import numpy as np

from probes import ext

VARIANTS = ("fma", "mul_add", "plain_contract", "plain_nocontract")
PREDICTED = {"fma": "fma", "mul_add": "mul_add", "plain_contract": "fma", "plain_nocontract": "mul_add"}


def _is_torch(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _flat(x):
    if _is_torch(x):
        return x.contiguous().reshape(-1)
    return np.ascontiguousarray(x).reshape(-1)


def _empty_like(x, n):
    if _is_torch(x):
        import torch
        return torch.empty(n, dtype=x.dtype, device=x.device)
    return np.empty(n, dtype=np.asarray(x).dtype)


def dot(a, b, variant, out=None):
    """Per row of the 2-D ``a, b`` (rows, k): ``acc = op(a[r, j], b[r, j], acc)`` from +0, j in order."""
    if getattr(a, "ndim", None) != 2 or tuple(a.shape) != tuple(getattr(b, "shape", ())):
        raise ext.KernelInputError(f"a and b must be 2-D of one shape, got {tuple(getattr(a, 'shape', ()))} "
                                   f"and {tuple(getattr(b, 'shape', ()))}")
    rows = a.shape[0]
    out = _empty_like(a, rows) if out is None else out
    ext.call("fma_dot", _flat(a), _flat(b), out, variant, ext.stream_of(a))
    return out


def horner(coeffs, x, variant, out=None):
    """``p(x)`` by Horner's rule with ``coeffs`` highest degree first, element-wise over 1-D ``x``."""
    out = _empty_like(x, x.shape[0] if getattr(x, "ndim", 0) == 1 else 0) if out is None else out
    ext.call("fma_horner", coeffs, x, out, variant, ext.stream_of(x))
    return out


def axpy(alpha, x, y, variant, out=None):
    """``op(alpha[0], x, y)`` element-wise; ``alpha`` is a 1-element array of x's dtype and device."""
    out = _empty_like(x, x.shape[0] if getattr(x, "ndim", 0) == 1 else 0) if out is None else out
    ext.call("fma_axpy", alpha, x, y, out, variant, ext.stream_of(x))
    return out


def cpu_has_fma() -> bool:
    """Whether this CPU has FMA instructions (the contracted C++ build needs them)."""
    return bool(ext.call("fma_cpu_has_fma"))


PROGRAMS = {"dot": dot, "horner": horner, "axpy": axpy}
