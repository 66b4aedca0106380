"""Shared test set-up: `gpu`-marked tests run only where a CUDA GPU is usable."""
import functools
import os

import pytest

# Tests of Triton and Numba kernels on the CPU go through their interpreter / simulator. These must be
# set before triton or numba is first imported, so they are set here, once, for the whole session.
# A GPU session (DRIFTSCOPE_TEST_GPU=1) leaves them off so the same kernels run on the device.
if os.environ.get("DRIFTSCOPE_TEST_GPU") != "1":
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")


@functools.lru_cache(maxsize=None)
def gpu_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if gpu_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none usable here)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
