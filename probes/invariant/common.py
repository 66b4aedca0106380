"""What probes.invariant's kernels share: the interpreter set-up, input checks that name the argument,
and the dtype maps.

Under TRITON_INTERPRET=1 the kernels run on CPU tensors in Triton's interpreter; importing
probes.gemm.triton_matmul installs its `__index__` fix (run-time loop bounds under NumPy >= 2.4) and
`interpreter_dot_shim` makes `tl.dot` a fixed k-order float32 sum (numerics.attention.k_order_dot)."""
from __future__ import annotations

import triton
import triton.language as tl

from probes.dequant.triton_dequant import round_bf16
from probes.ext import KernelInputError
from probes.gemm.triton_matmul import INTERPRETED, interpreter_dot_shim

__all__ = ["INTERPRETED", "prepare", "check_tensor", "check_device", "dtype_name", "cast_rne"]


@triton.jit
def cast_rne(x, DTYPE: tl.constexpr, INTERP: tl.constexpr):
    """float32 `x` rounded to nearest-even in DTYPE, as the GPU's cast does (Triton 3.6's interpreter
    truncates float32 -> bfloat16: there the rounding is done on the bits, probes.dequant's round_bf16)."""
    if DTYPE == tl.bfloat16:
        return round_bf16(x, INTERP)
    else:
        return x.to(DTYPE)


def _float_dtypes():
    import torch
    return (torch.bfloat16, torch.float16, torch.float32)


def dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def prepare():
    """Called by every wrapper before a launch: the interpreter's dot shim when interpreted."""
    if INTERPRETED:
        interpreter_dot_shim()


def check_tensor(name, t, *, ndim=None, dtypes=None):
    """`t` must be a torch tensor (of `ndim` dims and one of `dtypes`, default the three float dtypes);
    the KernelInputError names `name`."""
    import torch

    if not isinstance(t, torch.Tensor):
        raise KernelInputError(f"{name}: must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise KernelInputError(f"{name}: must be {ndim}-D, got shape {tuple(t.shape)}")
    dtypes = _float_dtypes() if dtypes is None else dtypes
    if t.dtype not in dtypes:
        raise KernelInputError(f"{name}: dtype must be one of {', '.join(dtype_name(d) for d in dtypes)}, "
                               f"got {dtype_name(t.dtype)}")


def check_device(name, t):
    """The kernels run on CUDA tensors, or on CPU tensors in Triton's interpreter (TRITON_INTERPRET=1)."""
    if t.device.type == "cuda" and INTERPRETED:
        raise KernelInputError(f"{name}: a CUDA tensor, but TRITON_INTERPRET=1 (the interpreter runs on CPU "
                               f"tensors)")
    if t.device.type == "cpu" and not INTERPRETED:
        from probes.errors import NoGPUError
        raise NoGPUError(f"{name}: a CPU tensor; probes.invariant runs CPU tensors only in Triton's interpreter "
                         f"(TRITON_INTERPRET=1 set before triton is imported)")
    if t.device.type not in ("cpu", "cuda"):
        raise KernelInputError(f"{name}: device {t.device} is not supported (cuda, or cpu when interpreted)")
