"""Triton kernels for the reduction probe: a fixed-order two-pass sum and an atomic sum.

Both share pass 1. Program `p` owns `BLOCK` lanes; lane `i` is thread `t = p * BLOCK + i` of the
order in docs/reduction-orders.md with `chunk = 1`: it adds elements `t, t + T, t + 2T, ...`
(`T = GRID * BLOCK`) to one running sum, so the tiles a program visits are `p, p + GRID, ...`.
The `BLOCK` lane sums are then reduced by one explicit halving tree (`v[i] + v[i + h]`), written out
with reshape/split so that Triton's own `tl.sum`, whose order is an implementation detail, never
decides an addition. In the numerics model this is `two_pass_tree_sum(..., chunk=1, warp=BLOCK)`.

- fixed order: pass 1 writes the `GRID` partials; pass 2 is the same kernel run by one program over
  the partials (lane `i` adds partials `i, i + BLOCK, ...`, then the same tree).
- atomic: pass 1 adds each program's partial into `out` with `tl.atomic_add`; the order in which the
  programs arrive decides the result.
"""
import triton
import triton.language as tl

ACC_DTYPES = {"float32": tl.float32, "float16": tl.float16, "bfloat16": tl.bfloat16}


@triton.jit
def halving_tree(v, BLOCK: tl.constexpr, LOG2_BLOCK: tl.constexpr):
    """numerics.orders.halving_tree_reduce of the BLOCK lanes of `v` (BLOCK = 2**LOG2_BLOCK); shape [1].
    Step i pairs lane j with lane j + BLOCK >> (i + 1): the tree of a warp's shuffle-down reduction."""
    for i in tl.static_range(LOG2_BLOCK):
        low, high = tl.split(tl.permute(tl.reshape(v, [2, BLOCK >> (i + 1)]), [1, 0]))
        v = low + high
    return v  # shape [1]


_halving_tree = halving_tree  # the name this module used before it was public


@triton.jit
def halving_tree_rows(v, ROWS: tl.constexpr, BLOCK: tl.constexpr, LOG2_BLOCK: tl.constexpr):
    """The same halving tree along the last axis of a [ROWS, BLOCK] tile, every row on its own: the
    [ROWS] row sums (row r: numerics.orders.halving_tree_reduce(v[r]))."""
    for i in tl.static_range(LOG2_BLOCK):
        low, high = tl.split(tl.permute(tl.reshape(v, [ROWS, 2, BLOCK >> (i + 1)]), [0, 2, 1]))
        v = low + high
    return tl.reshape(v, [ROWS])


# n, GRID and STEPS are never specialized: Triton would otherwise compile a kernel per "== 1" and "% 16 == 0" case of
# each (STEPS is 1 for n <= 2^20, 2 at 2^20+3, 17 at 2^24+1, ...; pass 2 runs with GRID = 1), which made the default
# run compile each (kernel, dtype, accumulator) 3-4 times: 211 of the 248 s of a cold reduction run on an H100
# (2026-12-05) were Triton's. The loop and its order are the same either way (the tests check the bits).
_RUNTIME_INTS = ["n", "GRID", "STEPS"]


@triton.jit
def _program_partial(x_ptr, n, pid, GRID, STEPS, BLOCK: tl.constexpr,
                     LOG2_BLOCK: tl.constexpr, ACC: tl.constexpr):
    lanes = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], dtype=ACC)
    # Every program runs STEPS = cdiv(n_tiles, GRID) steps; tiles past the end are fully masked.
    # (A while loop: Triton 3.6's interpreter cannot take a run-time `range` bound under NumPy >= 2.4.)
    step = 0
    while step < STEPS:
        offsets = (pid + step * GRID) * BLOCK + lanes
        mask = offsets < n
        value = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(ACC)
        acc = tl.where(mask, acc + value, acc)
        step += 1
    return halving_tree(acc, BLOCK, LOG2_BLOCK)


@triton.jit(do_not_specialize=_RUNTIME_INTS)
def fixed_order_partials_kernel(x_ptr, partial_ptr, n, GRID, STEPS, BLOCK: tl.constexpr,
                                LOG2_BLOCK: tl.constexpr, ACC: tl.constexpr):
    pid = tl.program_id(0)
    partial = _program_partial(x_ptr, n, pid, GRID, STEPS, BLOCK, LOG2_BLOCK, ACC)
    tl.store(partial_ptr + pid + tl.arange(0, 1), partial)


@triton.jit(do_not_specialize=_RUNTIME_INTS)
def atomic_sum_kernel(x_ptr, out_ptr, n, GRID, STEPS, BLOCK: tl.constexpr, LOG2_BLOCK: tl.constexpr,
                      ACC: tl.constexpr):
    pid = tl.program_id(0)
    partial = _program_partial(x_ptr, n, pid, GRID, STEPS, BLOCK, LOG2_BLOCK, ACC)
    tl.atomic_add(out_ptr + tl.arange(0, 1), partial)


def _steps(n, grid, block):
    return triton.cdiv(triton.cdiv(n, block), grid)


def _check(x, out, grid, block):
    if x.ndim != 1 or not x.is_contiguous() or x.numel() == 0:
        raise ValueError("x must be a non-empty contiguous 1-D tensor")
    if out.numel() != 1:
        raise ValueError("out must hold exactly one element")
    if grid < 1 or block < 1 or block & (block - 1):
        raise ValueError(f"grid must be >= 1 and block a power of two (got grid={grid}, block={block})")


def fixed_order_sum(x, out, workspace, *, grid, block, acc, num_warps=4):
    """Fixed-order two-pass sum of torch tensor `x` into `out` (1 element); `workspace` holds `grid`
    partials. Both are tensors of dtype `acc` on x's device."""
    _check(x, out, grid, block)
    if workspace.numel() < grid:
        raise ValueError(f"workspace holds {workspace.numel()} elements; grid={grid} needs {grid}")
    log2 = block.bit_length() - 1
    fixed_order_partials_kernel[(grid,)](x, workspace, x.numel(), grid, _steps(x.numel(), grid, block), BLOCK=block,
                                         LOG2_BLOCK=log2, ACC=ACC_DTYPES[acc], num_warps=num_warps)
    fixed_order_partials_kernel[(1,)](workspace, out, grid, 1, _steps(grid, 1, block), BLOCK=block, LOG2_BLOCK=log2,
                                      ACC=ACC_DTYPES[acc], num_warps=num_warps)
    return out


def atomic_sum(x, out, *, grid, block, acc, num_warps=4):
    """Per-program partials of the same pass 1, combined with tl.atomic_add into `out` (zeroed here)."""
    _check(x, out, grid, block)
    out.zero_()
    atomic_sum_kernel[(grid,)](x, out, x.numel(), grid, _steps(x.numel(), grid, block), BLOCK=block, LOG2_BLOCK=block.bit_length() - 1,
                               ACC=ACC_DTYPES[acc], num_warps=num_warps)
    return out
