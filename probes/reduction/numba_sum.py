"""Numba CUDA kernels for the reduction probe: a fixed-order tree sum and a cuda.atomic.add sum.

Thread `t` of `grid` blocks of `block` threads adds elements `t, t + T, ...` (`T = grid * block`) to one
running sum: the order of docs/reduction-orders.md with `chunk = 1`. The block tree goes through shared
memory in exactly the pairing of a warp shuffle-down tree (offsets 16, 8, 4, 2, 1 inside each warp of
32, then the same over the warp sums padded with zeros), because Numba's CUDA simulator, which runs
these kernels on a CPU, has no warp shuffles. In the numerics model: `two_pass_tree_sum(..., chunk=1,
warp=32)`.

Accumulators: float32 (any input Numba has, i.e. float32 and float16), or float16 for float16 input.
Numba has no bfloat16 arrays.
"""
from functools import lru_cache

import numpy as np

if not hasattr(np, "row_stack"):
    # numba 0.68 refers to np.row_stack (an alias of vstack removed in NumPy 2.5) when it compiles its
    # first kernel; the GPU machine has NumPy 2.5.
    np.row_stack = np.vstack

from numba import cuda  # noqa: E402
from numba.types import float16, float32  # noqa: E402

MAX_BLOCK = 1024
WARP = 32
ACC_TYPES = {"float32": float32, "float16": float16}


@lru_cache(maxsize=None)
def _kernels(acc_name):
    acc_t = ACC_TYPES[acc_name]

    @cuda.jit(device=True)
    def halving_steps(buf, tid):
        # buf holds one value per thread; each warp of 32 reduces its slice into its lane 0.
        lane = tid % WARP
        offset = WARP // 2
        while offset > 0:
            if lane < offset:
                buf[tid] = buf[tid] + buf[tid + offset]
            cuda.syncthreads()
            offset //= 2

    @cuda.jit(device=True)
    def block_tree(value, tid, nthreads):
        buf = cuda.shared.array(MAX_BLOCK, dtype=acc_t)
        warp_sums = cuda.shared.array(WARP, dtype=acc_t)
        buf[tid] = value
        cuda.syncthreads()
        halving_steps(buf, tid)
        if tid < WARP:
            warp_sums[tid] = buf[tid * WARP] if tid < nthreads // WARP else acc_t(0)
        cuda.syncthreads()
        if tid < WARP:
            buf[tid] = warp_sums[tid]
        cuda.syncthreads()
        halving_steps(buf, tid)
        return buf[0]

    @cuda.jit(device=True)
    def thread_sum(x, start, stride, n):
        total = acc_t(0)
        i = start
        while i < n:
            total = total + acc_t(x[i])
            i += stride
        return total

    @cuda.jit(device=True)
    def block_partial(x, n):
        # Pass 1, shared by both strategies: this thread's running sum, then the block tree.
        stride = cuda.gridDim.x * cuda.blockDim.x
        return block_tree(thread_sum(x, cuda.grid(1), stride, n), cuda.threadIdx.x, cuda.blockDim.x)

    @cuda.jit
    def partials_kernel(x, partials, n):
        partial = block_partial(x, n)
        if cuda.threadIdx.x == 0:
            partials[cuda.blockIdx.x] = partial

    @cuda.jit
    def atomic_kernel(x, out, n):
        partial = block_partial(x, n)
        if cuda.threadIdx.x == 0:
            cuda.atomic.add(out, 0, partial)

    @cuda.jit
    def zero_kernel(out):
        out[0] = acc_t(0)

    return partials_kernel, atomic_kernel, zero_kernel


def _check(x, out, block):
    if x.ndim != 1 or x.shape[0] == 0:
        raise ValueError("x must be a non-empty 1-D array")
    if out.shape != (1,):
        raise ValueError("out must hold exactly one element")
    if block % WARP or not WARP <= block <= MAX_BLOCK:
        raise ValueError(f"block must be a multiple of {WARP} in [{WARP}, {MAX_BLOCK}] (got {block})")


def fixed_order_sum(x, out, workspace, *, grid, block, final_block, acc="float32"):
    """Two-pass fixed-order sum of the Numba device array (or, in the simulator, NumPy array) `x`."""
    _check(x, out, block)
    _check(workspace, out, final_block)
    if workspace.shape[0] < grid:
        raise ValueError(f"workspace holds {workspace.shape[0]} elements; grid={grid} needs {grid}")
    partials_kernel, _, _ = _kernels(acc)
    partials_kernel[grid, block](x, workspace, x.shape[0])
    partials_kernel[1, final_block](workspace, out, grid)
    return out


def atomic_sum(x, out, *, grid, block, acc="float32"):
    """Block partials of the same pass 1 added into `out` with cuda.atomic.add (out is zeroed first)."""
    _check(x, out, block)
    _, atomic_kernel, zero_kernel = _kernels(acc)
    zero_kernel[1, 1](out)
    atomic_kernel[grid, block](x, out, x.shape[0])
    return out
