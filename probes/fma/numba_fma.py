"""Numba CUDA kernels of the FMA probe: ``cuda.fma`` against the plain ``a * b + c``.

Variants (float32 and float16; Numba has no bfloat16 arrays):

* ``fma``: ``cuda.fma(a, b, c)`` (float32) / ``cuda.fp16.hfma(a, b, c)`` (float16)   -> fma
* ``plain_fastmath``: ``a * b + c`` in a kernel compiled with ``fastmath=True``       -> fma
* ``plain_default``: the same text with ``fastmath=False`` (Numba's default)          -> fma as well:
  numba-cuda 0.30 passes no ``-fma`` option to NVVM and NVVM's default is ``-fma=1`` (contract);
  there is no switch to turn it off (NVIDIA/numba-cuda#118). The GPU test checks this prediction.

Under NUMBA_ENABLE_CUDASIM=1 (the CPU mode) the simulator runs the kernel bodies as Python on NumPy
scalars: every ``*`` and ``+`` is one NumPy float32/float16 operation rounded to the format, and the
simulator's ``cuda.fma`` / ``hfma`` are literally ``a * b + c``. So the simulator models the
*unfused* program (mul_add) for every variant; it says nothing about what NVVM would contract.

dot: thread ``r`` runs ``acc = op(a[r, j], b[r, j], acc)`` for ``j = 0 .. k-1``; horner, axpy: one
thread per element.
"""
import os
from functools import lru_cache

import numpy as np

if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack  # numba 0.68 uses np.row_stack (removed in NumPy 2.5; the GPU machine has 2.5)

from numba import cuda  # noqa: E402

VARIANTS = ("fma", "plain_fastmath", "plain_default")
DTYPES = ("float32", "float16")
BLOCK = 128


def simulated() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


@lru_cache(maxsize=None)
def _kernels(variant, dtype):
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)} (Numba has no bfloat16), not {dtype!r}")
    fastmath = variant == "plain_fastmath"
    # (cuda.fma is looked up inside the body: in the simulator it exists only on the kernel's fake module.)
    if variant == "fma" and dtype == "float32":
        @cuda.jit(device=True)
        def op(a, b, c):
            return cuda.fma(a, b, c)
    elif variant == "fma":
        @cuda.jit(device=True)
        def op(a, b, c):
            return cuda.fp16.hfma(a, b, c)
    else:
        @cuda.jit(device=True, fastmath=fastmath)
        def op(a, b, c):
            return a * b + c

    @cuda.jit(fastmath=fastmath)
    def dot_kernel(a, b, out):
        r = cuda.grid(1)
        if r < out.shape[0]:
            acc = a[r, 0] - a[r, 0]  # +0 of the element type (a is finite)
            for j in range(a.shape[1]):
                acc = op(a[r, j], b[r, j], acc)
            out[r] = acc

    @cuda.jit(fastmath=fastmath)
    def horner_kernel(coeffs, x, out):
        i = cuda.grid(1)
        if i < out.shape[0]:
            acc = coeffs[0]
            for j in range(1, coeffs.shape[0]):
                acc = op(acc, x[i], coeffs[j])
            out[i] = acc

    @cuda.jit(fastmath=fastmath)
    def axpy_kernel(alpha, x, y, out):
        i = cuda.grid(1)
        if i < out.shape[0]:
            out[i] = op(alpha[0], x[i], y[i])

    return dot_kernel, horner_kernel, axpy_kernel


def _dtype(*arrays):
    names = {str(a.dtype) for a in arrays}
    if len(names) != 1:
        raise ValueError(f"all arrays must have one dtype, got {sorted(names)}")
    if any(a.size == 0 for a in arrays):
        raise ValueError("empty input")
    return names.pop()


def _grid(n):
    return (n + BLOCK - 1) // BLOCK


def _like(x, shape):
    """An output array where the kernel can write it: a device array on a GPU, NumPy in the simulator."""
    if not simulated():
        return cuda.device_array(shape, dtype=x.dtype)
    return np.empty(shape, dtype=x.dtype)


def dot(a, b, variant):
    """``a, b``: 2-D (rows, k) NumPy or device arrays."""
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"a and b must be 2-D of one shape, got {a.shape} and {b.shape}")
    k, _, _ = _kernels(variant, _dtype(a, b))
    out = _like(a, a.shape[0])
    k[_grid(a.shape[0]), BLOCK](a, b, out)
    return out


def horner(coeffs, x, variant):
    _, k, _ = _kernels(variant, _dtype(coeffs, x))
    out = _like(x, x.shape[0])
    k[_grid(x.shape[0]), BLOCK](coeffs, x, out)
    return out


def axpy(alpha, x, y, variant):
    """``alpha``: a 1-element array of x's dtype."""
    if x.shape != y.shape or alpha.shape != (1,):
        raise ValueError("x and y must have one shape and alpha exactly one element")
    _, _, k = _kernels(variant, _dtype(alpha, x, y))
    out = _like(x, x.shape[0])
    k[_grid(x.shape[0]), BLOCK](alpha, x, y, out)
    return out


PROGRAMS = {"dot": dot, "horner": horner, "axpy": axpy}
