"""Triton kernels of the FMA probe: ``tl.fma`` against the plain ``a * b + c``.

Triton contracts ``a * b + c`` into an FMA by default. Its CUDA backend has a compile option,
``enable_fp_fusion`` (``CUDAOptions.enable_fp_fusion``, default True; also accepted as a launch keyword
``kernel[grid](..., enable_fp_fusion=False)``): when False, LLVM gets no fusion licence and ptxas runs
with ``--fmad=false`` (triton/backends/nvidia/compiler.py, Triton 3.6). So the SAME kernel text is
compiled twice by launching it with the option on and off. Variants:

* ``fma``: ``tl.fma(a, b, c)``                                -> fma on a GPU
* ``plain_contract``: ``a * b + c``, ``enable_fp_fusion=True``   -> fma on a GPU
* ``plain_nocontract``: the same, ``enable_fp_fusion=False``     -> mul_add

Under TRITON_INTERPRET=1 the kernels run as NumPy: ``tl.fma`` is ``x * y + z`` there and the fusion
option means nothing, so every variant computes mul_add (float32, float16). bfloat16 is refused in the
interpreter (it stores bf16 as uint16 and truncates conversions); on a GPU all three formats run.

dot: program ``p`` owns rows ``p*BLOCK ..``; one lane per row runs ``acc = op(a[r, j], b[r, j], acc)`` for
``j = 0 .. K-1`` (K constexpr). horner and axpy: one lane per element.
"""
import os

import triton
import triton.language as tl

VARIANTS = ("fma", "plain_contract", "plain_nocontract")
BLOCK = 128


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@triton.jit
def _op(a, b, c, USE_FMA: tl.constexpr):
    if USE_FMA:
        r = tl.fma(a, b, c)
    else:
        r = a * b + c
    return r


@triton.jit
def dot_kernel(a_ptr, b_ptr, out_ptr, rows, K: tl.constexpr, BLOCK: tl.constexpr, USE_FMA: tl.constexpr):
    r = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = r < rows
    acc = tl.zeros([BLOCK], dtype=out_ptr.dtype.element_ty)
    for j in range(K):
        a = tl.load(a_ptr + r * K + j, mask=mask, other=0.0)
        b = tl.load(b_ptr + r * K + j, mask=mask, other=0.0)
        acc = _op(a, b, acc, USE_FMA)
    tl.store(out_ptr + r, acc, mask=mask)


@triton.jit
def horner_kernel(c_ptr, x_ptr, out_ptr, n, NCOEFFS: tl.constexpr, BLOCK: tl.constexpr, USE_FMA: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    x = tl.load(x_ptr + i, mask=mask, other=0.0)
    acc = tl.zeros([BLOCK], dtype=out_ptr.dtype.element_ty) + tl.load(c_ptr)
    for j in range(1, NCOEFFS):
        acc = _op(acc, x, tl.zeros([BLOCK], dtype=out_ptr.dtype.element_ty) + tl.load(c_ptr + j), USE_FMA)
    tl.store(out_ptr + i, acc, mask=mask)


@triton.jit
def axpy_kernel(alpha_ptr, x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr, USE_FMA: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    alpha = tl.zeros([BLOCK], dtype=out_ptr.dtype.element_ty) + tl.load(alpha_ptr)
    x = tl.load(x_ptr + i, mask=mask, other=0.0)
    y = tl.load(y_ptr + i, mask=mask, other=0.0)
    tl.store(out_ptr + i, _op(alpha, x, y, USE_FMA), mask=mask)


def _options(variant):
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
    opts = {"USE_FMA": variant == "fma"}
    if not interpreted():  # a compile option of the CUDA backend; the interpreter has no compiler
        opts["enable_fp_fusion"] = variant != "plain_nocontract"
    return opts


def _check(*tensors):
    import torch
    for t in tensors:
        if t.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise TypeError(f"dtype {t.dtype} is not float32, float16 or bfloat16")
        if t.dtype != tensors[0].dtype or t.device != tensors[0].device:
            raise ValueError("all tensors must have one dtype and one device")
        if not t.is_contiguous() or t.numel() == 0:
            raise ValueError("tensors must be contiguous and non-empty")
    if interpreted() and tensors[0].dtype == torch.bfloat16:
        raise ValueError("bfloat16 is not modelled by the Triton interpreter (it truncates bf16 conversions)")


def dot(a, b, variant):
    """Rows of the 2-D torch tensors ``a, b``; returns a tensor of ``rows``."""
    import torch
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"a and b must be 2-D of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    _check(a, b)
    out = torch.empty(a.shape[0], dtype=a.dtype, device=a.device)
    dot_kernel[(triton.cdiv(a.shape[0], BLOCK),)](a, b, out, a.shape[0], K=a.shape[1], BLOCK=BLOCK, **_options(variant))
    return out


def horner(coeffs, x, variant):
    import torch
    _check(coeffs, x)
    out = torch.empty_like(x)
    horner_kernel[(triton.cdiv(x.numel(), BLOCK),)](coeffs, x, out, x.numel(), NCOEFFS=coeffs.numel(), BLOCK=BLOCK,
                                                    **_options(variant))
    return out


def axpy(alpha, x, y, variant):
    """``alpha``: a 1-element tensor of x's dtype and device."""
    import torch
    _check(alpha, x, y)
    if x.shape != y.shape or alpha.numel() != 1:
        raise ValueError("x and y must have one shape and alpha exactly one element")
    out = torch.empty_like(x)
    axpy_kernel[(triton.cdiv(x.numel(), BLOCK),)](alpha, x, y, out, x.numel(), BLOCK=BLOCK, **_options(variant))
    return out


PROGRAMS = {"dot": dot, "horner": horner, "axpy": axpy}
