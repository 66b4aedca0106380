"""Shared test set-up: `gpu`-marked tests run only where a CUDA GPU is usable."""
import functools
import os

import pytest


@functools.lru_cache(maxsize=None)
def gpu_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


# Without a GPU, tests of Triton and Numba kernels go through Triton's interpreter and Numba's CUDA
# simulator. Both read these variables when first imported, so they are set here, before any test
# module imports them. With a GPU the same tests run the kernels on the device.
if not gpu_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")


def pytest_collection_modifyitems(config, items):
    if gpu_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none usable here)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
