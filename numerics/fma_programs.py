"""Exact models of three multiply-add programs, fused (one rounding) or unfused (two roundings).

The FMA probe (``probes/fma``) runs these programs on every backend and compares the bits with the
models here. Each step of each program is ``op(a, b, c) ~ a*b + c`` in the arithmetic format ``fmt``
(float32, float16 or bfloat16; inputs must be representable in it), with

* ``variant="fma"``: ``numerics.exact.fma``, the exact ``a*b + c`` rounded once (nearest-even);
* ``variant="mul_add"``: ``numerics.exact.mul_add``, ``round(round(a*b) + c)``.

Programs (all vectorised over the independent outputs, sequential over the dependent steps):

* ``dot(a, b)``: ``a, b`` of shape ``(rows, k)``; per row ``acc = 0; acc = op(a[k], b[k], acc)`` for
  ``k = 0, 1, ...`` in order; returns ``(rows,)``. (The first step is exact-product-rounded in both
  variants, so fma and mul_add can first differ at ``k = 1``.)
* ``horner(coeffs, x)``: ``coeffs`` highest degree first, ``acc = coeffs[0]``, then
  ``acc = op(acc, x, coeffs[i])`` for ``i = 1 .. degree``; element-wise over ``x``.
* ``axpy(alpha, x, y)``: ``op(alpha, x, y)`` element-wise (alpha a scalar).

Which variant a compiled build of the *plain expression* ``a * b + c`` is predicted to equal:

=====================================================  ==========
build                                                  variant
=====================================================  ==========
CUDA, ``nvcc --fmad=true`` (the default)               ``fma``
CUDA, ``nvcc --fmad=false``                            ``mul_add``
Triton, ``enable_fp_fusion=True`` (the default)        ``fma``
Triton, ``enable_fp_fusion=False``                     ``mul_add``
Numba CUDA, ``fastmath=True``                          ``fma``
Numba CUDA, ``fastmath=False`` (its default)           ``fma`` (*)
C++ float32, ``-ffp-contract=fast -mfma``              ``fma``
C++ float32, ``-ffp-contract=off``                     ``mul_add``
=====================================================  ==========

(*) fastmath=False does not stop contraction: numba-cuda passes no ``-fma`` option to NVVM, whose
default is ``-fma=1`` (NVIDIA/numba-cuda#118; numba-cuda 0.30 has no ``fma=`` switch), so the plain
expression is predicted to fuse either way. Interpreters do not model fusion at all: the Triton
interpreter's ``tl.fma`` and Numba's simulator ``cuda.fma`` are NumPy ``a * b + c`` (``mul_add``).

Explicit spellings (``__fmaf_rn``/``__hfma``/``tl.fma``/``cuda.fma``/``std::fma`` and
``__fmul_rn``+``__fadd_rn``/``__hmul_rn``+``__hadd_rn``) equal their variant in every build.
:data:`PLAIN_BUILDS` holds the table. Contraction is a compiler licence, not a promise: the GPU tests
check that the plain builds really land on the predicted variant.
"""
from __future__ import annotations

import numpy as np

from .exact import fma, mul_add
from .formats import cast, get_format

__all__ = ["FORMATS", "VARIANTS", "PROGRAMS", "PLAIN_BUILDS", "step", "dot", "horner", "axpy",
           "program", "check_representable"]

FORMATS = ("float32", "float16", "bfloat16")
VARIANTS = ("fma", "mul_add")
PROGRAMS = ("dot", "horner", "axpy")

#: build of the plain expression ``a * b + c`` -> the variant it is predicted to equal.
PLAIN_BUILDS = {
    "cuda --fmad=true": "fma",
    "cuda --fmad=false": "mul_add",
    "triton enable_fp_fusion=True": "fma",
    "triton enable_fp_fusion=False": "mul_add",
    "numba fastmath=True": "fma",
    "numba fastmath=False": "fma",
    "c++ -ffp-contract=fast -mfma": "fma",
    "c++ -ffp-contract=off": "mul_add",
}

_OPS = {"fma": fma, "mul_add": mul_add}


def _fmt(fmt):
    f = get_format(fmt)
    if f.name not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {f.name!r}")
    return f


def _variant(variant):
    if variant not in _OPS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
    return _OPS[variant]


def check_representable(x, fmt, name="x") -> np.ndarray:
    """``x`` as an array of ``fmt.dtype``; ValueError if a value is not exactly representable."""
    f = _fmt(fmt)
    x = np.asarray(x)
    if x.dtype == f.dtype:
        return x
    v = cast(x, f)
    same = (v.astype(np.float64) == x.astype(np.float64)) | (np.isnan(x.astype(np.float64)) & np.isnan(v.astype(np.float64)))
    if not np.all(same):
        i = int(np.flatnonzero(~same.ravel())[0])
        raise ValueError(f"{name}: value {x.ravel()[i]!r} at flat index {i} is not representable in {f.name}")
    return v


def step(a, b, c, fmt, variant) -> np.ndarray:
    """One ``op(a, b, c)`` of the given variant in ``fmt``."""
    return _variant(variant)(a, b, c, _fmt(fmt))


def dot(a, b, fmt, variant) -> np.ndarray:
    """Per row of ``a, b`` (shape ``(rows, k)``): ``acc = op(a[k], b[k], acc)`` from ``acc = +0``."""
    f = _fmt(fmt)
    op = _variant(variant)
    a = check_representable(a, f, "a")
    b = check_representable(b, f, "b")
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"a and b must be 2-D of the same shape, got {a.shape} and {b.shape}")
    acc = np.zeros(a.shape[0], dtype=f.dtype)
    for j in range(a.shape[1]):
        acc = op(a[:, j], b[:, j], acc, f)
    return acc


def horner(coeffs, x, fmt, variant) -> np.ndarray:
    """``p(x)`` by Horner's rule, ``coeffs`` highest degree first: ``acc = op(acc, x, coeffs[i])``."""
    f = _fmt(fmt)
    op = _variant(variant)
    coeffs = check_representable(coeffs, f, "coeffs")
    x = check_representable(x, f, "x")
    if coeffs.ndim != 1 or coeffs.size == 0:
        raise ValueError(f"coeffs must be a non-empty 1-D array, got shape {coeffs.shape}")
    acc = np.full(x.shape, coeffs[0], dtype=f.dtype)
    for c in coeffs[1:]:
        acc = op(acc, x, np.full(x.shape, c, dtype=f.dtype), f)
    return acc


def axpy(alpha, x, y, fmt, variant) -> np.ndarray:
    """``op(alpha, x, y)`` element-wise."""
    f = _fmt(fmt)
    op = _variant(variant)
    alpha = check_representable(np.asarray(alpha), f, "alpha")
    x = check_representable(x, f, "x")
    y = check_representable(y, f, "y")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}")
    return op(np.broadcast_to(alpha, x.shape), x, y, f)


def program(name, inputs: dict, fmt, variant) -> np.ndarray:
    """Dispatch by program name with the inputs as a dict (``a, b`` / ``coeffs, x`` / ``alpha, x, y``)."""
    if name == "dot":
        return dot(inputs["a"], inputs["b"], fmt, variant)
    if name == "horner":
        return horner(inputs["coeffs"], inputs["x"], fmt, variant)
    if name == "axpy":
        return axpy(inputs["alpha"], inputs["x"], inputs["y"], fmt, variant)
    raise ValueError(f"program must be one of {', '.join(PROGRAMS)}, not {name!r}")
