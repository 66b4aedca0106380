"""CuPy backend of the reduction probe: the extension's own CUDA source (csrc/reduction/*.cuh, embedded
in probes._C at build time) compiled at run time by NVRTC through cupy.RawModule: one source, two
compilers, and the test that both give the same bits."""
from functools import lru_cache

import numpy as np

SUFFIX = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}


@lru_cache(maxsize=None)
def module():
    import cupy

    from probes import ext

    return cupy.RawModule(code=ext.kernel_source("reduction"), options=("--std=c++17",))


def _ptr(tensor, offset=0):
    return np.uint64(tensor.data_ptr() + offset * tensor.element_size())


def prepare(strategy, inp, params, results):
    """Launch function for run i writing into results[i]; x and results are torch CUDA tensors, which
    CuPy addresses by pointer (CuPy has no bfloat16 arrays). Kernels go to CuPy's current stream, the
    default stream that torch also uses here."""
    x = inp.x
    if x.data_ptr() % 16:
        raise ValueError("x's data pointer is not 16-byte aligned; the kernels load 16 bytes at a time")
    grid, block = params["grid"], params["block"]
    n = np.int64(inp.n)
    name = f"{SUFFIX[inp.dtype]}_{SUFFIX[inp.acc]}"
    if strategy == "fixed":
        import torch

        pass1 = module().get_function(f"fixed_order_sum_pass1_{name}")
        pass2 = module().get_function(f"fixed_order_sum_pass2_{SUFFIX[inp.acc]}")
        workspace = torch.empty(grid, dtype=results.dtype, device=results.device)

        def launch(i):
            pass1((grid,), (block,), (_ptr(x), n, _ptr(workspace)))
            pass2((1,), (params["final_block"],), (_ptr(workspace), np.int64(grid), _ptr(results, i)))
        return launch
    atomic = module().get_function(f"atomic_sum_{name}")

    def launch(i):
        results[i].zero_()
        atomic((grid,), (block,), (_ptr(x), n, _ptr(results, i)))
    return launch
