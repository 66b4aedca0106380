"""Batch-invariant row reductions in Triton: mean over dims (aten::mean.dim), softmax and log-softmax
(aten::_softmax / aten::_log_softmax).

Why: torch's reductions pick their split of a row (threads, blocks, split reductions) from the tensor's
whole shape, so a token's RMSNorm or softmax is summed in another order once the batch holds more rows.
Here the order of a row depends on its length n alone.

The kernels: one program per row of a contiguous [rows, n] view (the reduced dims moved last, copied if
needed). The row is read in chunks of BLOCK = numerics.orders.lane_block(n) lanes; lane j accumulates
elements j, j + BLOCK, j + 2 BLOCK ... in float32 in index order, then the BLOCK lanes are reduced by the
explicit halving tree of probes.reduction.triton_sum (never tl.sum, whose order is Triton's choice):
numerics.orders.lane_tree_sum. The mean divides by n (IEEE division, tl.div_rn). Softmax makes three
sweeps: the row max (lanes, then tl.max: max is exact), the sum of exp(x - max) in the same lane+tree
order, then the outputs exp(x - max) / sum, or (x - max) - log(sum) for log-softmax.

The wrappers (`row_mean`, `softmax`, `log_softmax`) check their inputs (probes.ext.KernelInputError
naming the argument), reshape, launch and reshape back.

The reference check: numerics.rowops models each kernel bit for bit; in Triton's interpreter (CPU) the
tests compare bits, on a GPU (whose exp/log differ from NumPy's) invariance, closeness to torch, and the
mean's bits (adds and one division only: the GPU gives the model's bits too).
"""
from __future__ import annotations

import triton
import triton.language as tl

from numerics.orders import lane_block
from probes.ext import KernelInputError
from probes.invariant.common import INTERPRETED, cast_rne, check_device, check_tensor, prepare
from probes.reduction.triton_sum import halving_tree

__all__ = ["row_mean", "softmax", "log_softmax", "row_mean_kernel", "softmax_kernel", "kernel_meta"]


@triton.jit
def _lane_sum(row_ptr, n, BLOCK: tl.constexpr, LOG2_BLOCK: tl.constexpr):
    lanes = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, n, BLOCK):
        offs = start + lanes
        acc += tl.load(row_ptr + offs, mask=offs < n, other=0.0).to(tl.float32)  # past the end: + 0
    return halving_tree(acc, BLOCK, LOG2_BLOCK)  # [1]


@triton.jit
def row_mean_kernel(x_ptr, out_ptr, n, n_float, BLOCK: tl.constexpr, LOG2_BLOCK: tl.constexpr,
                    INTERP: tl.constexpr):
    """out[row] = lane_tree_sum(x[row]) / n, one program per row of the contiguous [rows, n] x."""
    row = tl.program_id(0).to(tl.int64)
    total = _lane_sum(x_ptr + row * n, n, BLOCK, LOG2_BLOCK)
    mean = tl.div_rn(total, tl.full([1], n_float, tl.float32))
    tl.store(out_ptr + row + tl.arange(0, 1), cast_rne(mean, out_ptr.dtype.element_ty, INTERP))


@triton.jit
def softmax_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr, LOG2_BLOCK: tl.constexpr, LOG: tl.constexpr,
                   INTERP: tl.constexpr):
    """Softmax (LOG: log-softmax) of each row of the contiguous [rows, n] x: max, sum, write."""
    row = tl.program_id(0).to(tl.int64)
    src = x_ptr + row * n
    dst = out_ptr + row * n
    lanes = tl.arange(0, BLOCK)
    lane_max = tl.full([BLOCK], float("-inf"), tl.float32)
    for start in range(0, n, BLOCK):
        offs = start + lanes
        lane_max = tl.maximum(lane_max, tl.load(src + offs, mask=offs < n, other=float("-inf")).to(tl.float32))
    row_max = tl.max(lane_max, 0)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, n, BLOCK):
        offs = start + lanes
        inside = offs < n
        z = tl.load(src + offs, mask=inside, other=0.0).to(tl.float32) - row_max
        acc += tl.where(inside, tl.exp(z), 0.0)
    total = halving_tree(acc, BLOCK, LOG2_BLOCK)  # [1]
    if LOG:
        log_total = tl.log(total)
    for start in range(0, n, BLOCK):
        offs = start + lanes
        inside = offs < n
        z = tl.load(src + offs, mask=inside, other=0.0).to(tl.float32) - row_max
        if LOG:
            y = z - log_total
        else:
            y = tl.div_rn(tl.exp(z), total)
        tl.store(dst + offs, cast_rne(y, dst.dtype.element_ty, INTERP), mask=inside)


def kernel_meta(n):
    """The constexprs and warps of the row kernels for rows of n elements (a function of n only)."""
    block = lane_block(n)
    return dict(BLOCK=block, LOG2_BLOCK=block.bit_length() - 1, INTERP=INTERPRETED,
                num_warps=4 if block >= 512 else 1)


def _check_input(x):
    check_tensor("x", x)
    check_device("x", x)


def _norm_dim(name, d, ndim):
    import operator
    try:
        d = operator.index(d)
    except TypeError:
        raise KernelInputError(f"{name}: must be an int, got {type(d).__name__}") from None
    top = max(ndim, 1)                       # a 0-d tensor takes dim 0 / -1, as torch does
    if not -top <= d < top:
        raise KernelInputError(f"{name}: {d} is out of range for a {ndim}-D tensor")
    return d % top


def _reduce_dims(dims, ndim):
    """dims as a sorted tuple; None or () means every dim (aten::mean.dim's empty list)."""
    if dims is None:
        return tuple(range(ndim))
    if not isinstance(dims, (list, tuple)):
        dims = (dims,)
    norm = [_norm_dim("dims", d, ndim) for d in dims]
    if len(set(norm)) != len(norm):
        raise KernelInputError(f"dims: {list(dims)} names a dim twice")
    return tuple(sorted(norm)) if norm else tuple(range(ndim))


def row_mean(x, dims=None, keepdim=False, dtype=None):
    """torch.mean(x, dims, keepdim, dtype=dtype) with a batch-invariant order: every output element is
    the mean of its own elements, summed as numerics.orders.lane_tree_sum (float32), divided by their
    count. `dtype` (bf16/fp16/fp32) is the output dtype; as in torch, x is converted to it first (only
    where that rounds: a float32 `dtype` reads x as it is). An empty reduction is refused."""
    import torch

    _check_input(x)
    if dtype is not None and dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise KernelInputError(f"dtype: must be None, bfloat16, float16 or float32, got {dtype}")
    red = _reduce_dims(dims, x.dim())
    if dtype is not None and dtype not in (x.dtype, torch.float32):
        x = x.to(dtype)
    out_dtype = x.dtype if dtype is None else dtype
    keep = [d for d in range(x.dim()) if d not in red]
    n = 1
    for d in red:
        n *= x.shape[d]
    if n == 0:
        raise KernelInputError(f"x: empty reduction (dims {list(red)} of shape {tuple(x.shape)} hold no element)")
    kept_shape = [x.shape[d] for d in keep]
    rows = x.permute(tuple(keep) + red).reshape(-1, n).contiguous()
    out = torch.empty(rows.shape[0], dtype=out_dtype, device=x.device)
    if rows.shape[0]:
        prepare()
        row_mean_kernel[(rows.shape[0],)](rows, out, n, float(n), **kernel_meta(n))
    if keepdim:
        return out.reshape([1 if d in red else x.shape[d] for d in range(x.dim())])
    return out.reshape(kept_shape)


def _softmax(x, dim, half_to_float, log):
    import torch

    _check_input(x)
    d = _norm_dim("dim", dim, x.dim())
    if half_to_float and x.dtype == torch.float32:
        raise KernelInputError("half_to_float: needs a float16 or bfloat16 x, got float32")
    out_dtype = torch.float32 if half_to_float else x.dtype
    moved = x.reshape(1) if x.dim() == 0 else x.movedim(d, -1)
    rows = moved.contiguous()
    n = rows.shape[-1]
    out = torch.empty(rows.shape, dtype=out_dtype, device=x.device)
    if out.numel():
        prepare()
        softmax_kernel[(out.numel() // n,)](rows, out, n, LOG=log, **kernel_meta(n))
    if x.dim() == 0:
        return out.reshape(())
    return out.movedim(-1, d).contiguous()


def softmax(x, dim, half_to_float=False):
    """aten::_softmax(x, dim, half_to_float): softmax along `dim`, each row in the order of
    numerics.rowops.softmax. half_to_float (x float16/bfloat16) gives a float32 result."""
    return _softmax(x, dim, half_to_float, False)


def log_softmax(x, dim, half_to_float=False):
    """aten::_log_softmax(x, dim, half_to_float): (x - max) - log(sum exp(x - max)) along `dim`."""
    return _softmax(x, dim, half_to_float, True)
