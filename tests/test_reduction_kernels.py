"""Triton and Numba reduction kernels against the numerics model of their order, bit for bit.

Without a GPU they run in Triton's interpreter and Numba's CUDA simulator (set up in conftest.py); the
same tests run on the device in a GPU session (tests/test_reduction_gpu.py adds large sizes there). The
Numba tests move data with numba.cuda.to_device / device_array / copy_to_host on both: the simulator has
the same calls, so the CPU run executes the very code of the GPU branch. The Triton tests take DEVICE, so
on a GPU machine this (unmarked) file runs its kernels on the GPU: run the whole suite there, not only
`-m gpu`."""
import numpy as np
import pytest
import torch

from numerics import orders
from probes.convert import to_numpy, to_torch
from probes.reduction.probe import make_input
from conftest import gpu_available

DEVICE = "cuda" if gpu_available() else "cpu"
TORCH = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
CASES = [("float32", "float32"), ("float16", "float32"), ("float16", "float16"),
         ("bfloat16", "float32"), ("bfloat16", "bfloat16")]


def bits(a):
    a = np.asarray(a)
    return a.view({4: np.uint32, 2: np.uint16}[a.dtype.itemsize])


@pytest.mark.parametrize("dtype,acc", CASES)
@pytest.mark.parametrize("n", [1, 7, 100, 1000, 4097])
def test_triton_fixed_order_matches_model(dtype, acc, n):
    from probes.reduction import triton_sum

    if acc == "bfloat16" and DEVICE == "cpu":
        pytest.skip("Triton 3.6's interpreter truncates float32 -> bfloat16 (the GPU session runs this case)")
    grid, block = 4, 32
    x_host = make_input(3, n, dtype)
    x = to_torch(x_host, DEVICE)
    out = torch.zeros(1, dtype=TORCH[acc], device=DEVICE)
    workspace = torch.zeros(grid, dtype=TORCH[acc], device=DEVICE)
    triton_sum.fixed_order_sum(x, out, workspace, grid=grid, block=block, acc=acc)
    model = orders.two_pass_tree_sum(x_host, acc=acc, grid=grid, block=block, final_block=block,
                                     chunk=1, warp=block)
    assert bits(to_numpy(out)) == bits(np.asarray(model).reshape(1))


@pytest.mark.parametrize("dtype,acc", [("float32", "float32"), ("float16", "float32")])
def test_triton_atomic_with_one_program_equals_fixed_partial(dtype, acc):
    # With one program there is one partial: atomic_add onto +0.0 returns it exactly, so it must equal
    # the model's single block partial.
    from probes.reduction import triton_sum

    x_host = make_input(4, 777, dtype)
    x = to_torch(x_host, DEVICE)
    out = torch.full((1,), 5.0, dtype=TORCH[acc], device=DEVICE)  # atomic_sum must zero it
    triton_sum.atomic_sum(x, out, grid=1, block=64, acc=acc)
    partial = orders.block_partials(x_host, acc=acc, grid=1, block=64, chunk=1, warp=64)
    assert bits(to_numpy(out)) == bits(np.asarray(partial).reshape(1))


@pytest.mark.parametrize("dtype,acc", [("float32", "float32"), ("float16", "float32"), ("float16", "float16")])
@pytest.mark.parametrize("n", [1, 33, 1000])
def test_numba_fixed_order_matches_model(dtype, acc, n):
    from numba import cuda

    from probes.reduction import numba_sum

    grid, block, final_block = 2, 64, 32
    x_host = make_input(5, n, dtype)
    x, out, ws = cuda.to_device(x_host), cuda.device_array(1, dtype=acc), cuda.device_array(grid, dtype=acc)
    numba_sum.fixed_order_sum(x, out, ws, grid=grid, block=block, final_block=final_block, acc=acc)
    got = out.copy_to_host()
    model = orders.two_pass_tree_sum(x_host, acc=acc, grid=grid, block=block, final_block=final_block,
                                     chunk=1, warp=32)
    assert bits(got) == bits(np.asarray(model).reshape(1))


def test_numba_atomic_one_block_equals_partial():
    from numba import cuda

    from probes.reduction import numba_sum

    x_host = make_input(6, 300, "float32")
    x, out = cuda.to_device(x_host), cuda.to_device(np.full(1, 7.0, dtype=np.float32))  # atomic_sum must zero it
    numba_sum.atomic_sum(x, out, grid=1, block=64, acc="float32")
    got = out.copy_to_host()
    partial = orders.block_partials(x_host, acc="float32", grid=1, block=64, chunk=1, warp=32)
    assert bits(got) == bits(np.asarray(partial).reshape(1))


def test_kernel_wrappers_reject_bad_shapes():
    from probes.reduction import numba_sum, triton_sum

    x = torch.zeros(0, device=DEVICE)
    with pytest.raises(ValueError, match="non-empty"):
        triton_sum.fixed_order_sum(x, torch.zeros(1), torch.zeros(4), grid=4, block=32, acc="float32")
    with pytest.raises(ValueError, match="power of two"):
        triton_sum.atomic_sum(torch.ones(8, device=DEVICE), torch.zeros(1, device=DEVICE), grid=1, block=48,
                              acc="float32")
    with pytest.raises(ValueError, match="multiple of 32"):
        numba_sum.atomic_sum(np.ones(8, np.float32), np.zeros(1, np.float32), grid=1, block=48)
