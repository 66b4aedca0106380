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


_CPU_MODES = ("TRITON_INTERPRET", "NUMBA_ENABLE_CUDASIM")


def _cpu_modes_on():
    """What in this process runs Triton interpreted or Numba simulated: the variables, and modules imported
    while they were set (they keep the mode they were imported in)."""
    import sys
    on = [k for k in _CPU_MODES if os.environ.get(k, "0") not in ("", "0")]
    numba_config = getattr(sys.modules.get("numba"), "config", None)
    if getattr(numba_config, "ENABLE_CUDASIM", False):
        on.append("numba imported with its CUDA simulator")
    if getattr(sys.modules.get("probes.gemm.triton_matmul"), "INTERPRETED", False):
        on.append("probes.gemm.triton_matmul imported interpreted")
    return on


@pytest.fixture(autouse=True)
def _gpu_tests_run_on_the_gpu(request):
    """On a GPU machine, a gpu-marked test fails if this process has switched to the CPU modes: an earlier
    in-process `--device cpu` run (probes.cli.select_device) sets them, and a kernel module imported after that
    runs interpreted or simulated, on the GPU's tensors too, so the test would pass without the GPU."""
    if gpu_available() and "gpu" in request.keywords:
        on = _cpu_modes_on()
        if on:
            pytest.fail("this GPU test would not run on the GPU: " + "; ".join(on))
    yield
