"""Python face of the C++/CUDA extension ``probes._C`` (sources in ``csrc/``).

The reductions follow ``docs/reduction-orders.md`` exactly; where they run is decided by ``x``: a CPU
array (NumPy, torch CPU) goes to the C++ CPU reference, a CUDA array (torch CUDA, CuPy, Numba device
array, anything with ``__dlpack__`` / ``__cuda_array_interface__``) to the CUDA kernels, on the array's
device and on the current stream of its library. The CPU reference uses the same chunk (16 // itemsize),
grid, block, warp (32) and final_block as the kernels, so both give the same bits.

    from probes import ext
    out = ext.fixed_order_sum(x, grid=1024, block=256, final_block=256, accumulate="float32")

``out`` is a 1-element array of the accumulation dtype (float32, or x's dtype with
``accumulate="input"``), from the same library as ``x``. An empty ``x`` raises ``KernelInputError``
("empty input"): an empty reduction in a probe is always a mistake.

The extension is imported lazily; ``available()`` says whether it is built, ``load()`` raises
``ExtensionUnavailable`` with the build command otherwise.

This module is the one Python face of ``probes._C``: no other module imports the extension. The probes'
own wrappers (``probes/fma/kernels.py``, ``probes/dequant/kernels.py``, ``probes/gemm/cublaslt.py``) go
through ``call(name, ...)``, which turns the extension's errors into ``KernelInputError`` /
``KernelError`` / ``NoGPUError``, and pass ``stream_of(x)``, the current stream of x's library on x's
device. ``load()`` gives the raw module (its plain ValueError / TypeError / RuntimeError), for tests.
"""
from __future__ import annotations

import glob
import importlib
import importlib.util
import os

import numpy as np

from .errors import DriftscopeError, NoGPUError

__all__ = [
    "ExtensionUnavailable", "KernelInputError", "KernelError", "available", "load", "call", "stream_of",
    "built_with_cuda", "build_info", "gemm_build_info", "library_candidates", "device_properties",
    "kernel_source", "kernel_name", "fixed_order_sum", "atomic_sum", "sequential_sum", "DTYPES", "ACCUMULATE",
]

BUILD_HINT = ("build it from the driftscope checkout with `pip install --no-build-isolation --no-deps -e .` "
              "(needs cmake >= 3.26, pybind11 and a C++17 compiler; nvcc on PATH for the CUDA kernels, "
              "DRIFTSCOPE_NO_CUDA=1 for the CPU reference only)")

#: Input dtypes of the reductions and their kernel-name tags.
DTYPES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}
#: Values of ``accumulate``: float32, or the input dtype.
ACCUMULATE = ("float32", "input")


class ExtensionUnavailable(DriftscopeError):
    """probes._C is not built (or cannot be imported)."""


class KernelInputError(DriftscopeError, ValueError):
    """The extension refused its arguments (dtype, shape, device, sizes, grid/block ...)."""


class KernelError(DriftscopeError, RuntimeError):
    """A CUDA call or kernel launch failed; the message carries the CUDA error."""


_module = None


def load():
    """The ``probes._C`` module; raises ExtensionUnavailable (with how to build it) when missing."""
    global _module
    if _module is None:
        try:
            _module = importlib.import_module("probes._C")
        except ImportError as e:
            raise ExtensionUnavailable(f"the C++/CUDA extension probes._C cannot be imported ({e}); "
                                       f"{BUILD_HINT}") from None
    return _module


def available() -> bool:
    try:
        load()
    except ExtensionUnavailable:
        return False
    return True


def call(name: str, *args, **kwargs):
    """``probes._C.<name>(*args, **kwargs)`` with the extension's errors as driftscope errors: its
    NoGPUError as ``NoGPUError``, ValueError / TypeError (bad arguments, named in the message) as
    ``KernelInputError``, any other RuntimeError (a failed CUDA call) as ``KernelError``."""
    C = load()
    fn = getattr(C, name, None)
    if fn is None:
        raise ExtensionUnavailable(f"probes._C has no {name!r}: the built extension is older than this "
                                   f"checkout; rebuild it ({BUILD_HINT})")
    try:
        return fn(*args, **kwargs)
    except C.NoGPUError as e:
        raise NoGPUError(str(e)) from None
    except (ValueError, TypeError) as e:
        raise KernelInputError(str(e)) from None
    except RuntimeError as e:
        raise KernelError(str(e)) from None


def stream_of(x) -> int:
    """The ``cudaStream_t`` handle (an int) that work on ``x`` goes to: the current stream of x's library
    (torch, CuPy) on x's device; 0 (the legacy default stream, Numba's default) otherwise, and for CPU
    arrays, which ignore it."""
    lib = _library(x)
    if lib == "torch" and x.is_cuda:
        import torch
        return int(torch.cuda.current_stream(x.device).cuda_stream)
    if lib == "cupy":
        import cupy
        with x.device:
            return int(cupy.cuda.get_current_stream().ptr)
    return 0


# ---- build / device information -------------------------------------------------------------------

def built_with_cuda() -> bool:
    """Whether the CUDA kernels were compiled into the extension (nvcc at build time)."""
    return bool(load().built_with_cuda())


def gemm_build_info() -> dict:
    """Whether the GEMM probe's GemmPlan (cuBLASLt) was built in: available, reason, include_dir."""
    return dict(load().gemm_build_info())


def library_candidates(pattern: str) -> list[str]:
    """Paths of ``pattern`` (e.g. "libcublasLt.so*") in the library dirs that torch and the nvidia-*
    pip packages ship, found without importing them."""
    dirs = []
    spec = importlib.util.find_spec("torch")
    if spec is not None and spec.origin:
        dirs.append(os.path.join(os.path.dirname(spec.origin), "lib"))
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        spec = None
    for base in (spec.submodule_search_locations or []) if spec is not None else []:
        dirs.extend(sorted(glob.glob(os.path.join(base, "*", "lib"))))   # nvidia/cublas/lib, nvidia/cu13/lib
    found = []
    for d in dirs:
        # Highest soname first (libcublasLt.so.13 before .so.12), the unversioned name last.
        found.extend(sorted(glob.glob(os.path.join(d, pattern)), key=lambda p: (p.count("."), p), reverse=True))
    return found


def _version_string(v):
    if v is None:
        return None
    return f"{v // 10000}.{v // 100 % 100}.{v % 100}"


def _cuda_version_string(v):
    if not v:
        return None
    return f"{v // 1000}.{v % 1000 // 10}"


def build_info() -> dict:
    """What the extension was built with and what it finds at run time."""
    C = load()
    runtime = C.cuda_runtime_version()
    driver = C.cuda_driver_version()
    cublas = C.cublas_version(library_candidates("libcublas.so*"))
    cublaslt = C.cublaslt_version(library_candidates("libcublasLt.so*"))
    return {
        "module": C.__file__,
        "built_with_cuda": C.built_with_cuda(),
        "cuda_archs": C.compiled_cuda_archs(),
        "cuda_runtime_version": runtime,
        "cuda_runtime": _cuda_version_string(runtime),
        "cuda_driver_version": driver,
        "cuda_driver": _cuda_version_string(driver),
        "cublas_version": cublas,
        "cublas": _version_string(cublas),
        "cublaslt_version": cublaslt,
        "cublaslt": _version_string(cublaslt),
        "gpu_count": C.cuda_device_count(),
    }


def device_properties(index: int = 0) -> dict:
    """cudaDeviceProp of one GPU (name, cc, SMs, L2, memory, bus width, shared memory, uuid ...)."""
    return call("device_properties", int(index))


def kernel_source(name: str = "reduction") -> str:
    """The CUDA source the extension was built from (self-contained, for cupy.RawModule / NVRTC).
    ``"reduction"`` holds every kernel; also "common", "fixed_order_sum", "atomic_sum", "sequential_sum"."""
    return call("kernel_source", name)


def kernel_name(kind: str, dtype: str, accumulate: str = "float32") -> str:
    """extern "C" name of a kernel: ``kernel_name("fixed_order_sum_pass1", "float16", "float32")`` is
    ``fixed_order_sum_pass1_f16_f32``; kind "fixed_order_sum_pass2" takes the accumulator only."""
    if dtype not in DTYPES:
        raise KernelInputError(f"dtype: {dtype!r} is not supported (allowed: {', '.join(DTYPES)})")
    acc = _acc_name(dtype, accumulate)
    if kind == "fixed_order_sum_pass2":
        return f"{kind}_{DTYPES[acc]}"
    if kind not in ("fixed_order_sum_pass1", "atomic_sum", "sequential_sum"):
        raise KernelInputError(f"kind: unknown kernel {kind!r}")
    return f"{kind}_{DTYPES[dtype]}_{DTYPES[acc]}"


# ---- arrays of the caller's library ----------------------------------------------------------------

def _library(x) -> str:
    top = type(x).__module__.split(".")[0]
    if top in ("torch", "cupy", "numba", "numba_cuda"):
        return "numba" if top.startswith("numba") else top
    if isinstance(x, np.ndarray):
        return "numpy"
    return "other"


def _dtype_name(x, lib: str):
    dt = getattr(x, "dtype", None)
    if dt is None:
        return None
    name = str(dt)
    if lib == "torch":
        name = name.replace("torch.", "")
    return name


def _on_gpu(x, lib: str) -> bool:
    if lib == "torch":
        return bool(x.is_cuda)
    if lib in ("cupy", "numba"):
        return True
    if hasattr(x, "__dlpack_device__"):
        try:
            return int(x.__dlpack_device__()[0]) in (2, 13)   # kDLCUDA, kDLCUDAManaged
        except Exception:
            pass
    return hasattr(x, "__cuda_array_interface__")


def _acc_name(dtype, accumulate: str) -> str:
    if accumulate not in ACCUMULATE:
        raise KernelInputError(f"accumulate: must be 'float32' or 'input', got {accumulate!r}")
    if accumulate == "float32" or dtype not in DTYPES:
        return "float32"     # for an unsupported x dtype the extension names the problem with x
    return dtype


def _empty(x, lib: str, n: int, dtype: str, what: str):
    if lib == "torch":
        import torch
        return torch.empty(n, dtype=getattr(torch, dtype), device=x.device)
    if lib == "cupy":
        import cupy
        with x.device:
            return cupy.empty(n, dtype=dtype)
    if lib == "numba":
        from numba import cuda
        return cuda.device_array(n, dtype=np.dtype(dtype))
    if lib == "numpy" or not _on_gpu(x, lib):
        if dtype == "bfloat16":
            import ml_dtypes
            return np.empty(n, dtype=ml_dtypes.bfloat16)
        return np.empty(n, dtype=dtype)
    raise KernelInputError(f"{what}: cannot allocate it for a {type(x).__name__}; pass {what}= explicitly")


def _gpu_pointer(x, lib: str):
    if lib == "torch":
        return x.data_ptr()
    if lib == "cupy":
        return x.data.ptr
    cai = getattr(x, "__cuda_array_interface__", None)
    return cai["data"][0] if cai else None


def _aligned(x, lib: str):
    """x itself when its device pointer is 16-byte aligned, else an aligned contiguous copy."""
    ptr = _gpu_pointer(x, lib)
    if ptr is None or ptr % 16 == 0 or getattr(x, "size", 1) == 0:
        return x
    if lib == "torch":
        return x.clone(memory_format=__import__("torch").contiguous_format)
    if lib == "cupy":
        return x.copy()
    if lib == "numba":
        from numba import cuda
        y = cuda.device_array(x.shape, dtype=x.dtype)
        y.copy_to_device(x)
        return y
    return x     # the extension says what is wrong


def _prepare(x, accumulate: str, fn_name: str):
    """(x, library, acc dtype name, stream) after the GPU checks."""
    C = load()
    lib = _library(x)
    gpu = _on_gpu(x, lib)
    if gpu:
        if not C.built_with_cuda():
            raise NoGPUError(f"{fn_name}: x is a CUDA array but probes._C was built without CUDA; "
                             f"rebuild with nvcc on PATH ({BUILD_HINT})")
        if C.cuda_device_count() == 0:
            raise NoGPUError(f"{fn_name}: x is a CUDA array but no CUDA GPU is usable by probes._C")
        x = _aligned(x, lib)
    acc = _acc_name(_dtype_name(x, lib), accumulate)
    return x, lib, acc, (stream_of(x) if gpu else 0)


# ---- reductions ------------------------------------------------------------------------------------

def fixed_order_sum(x, *, grid: int = 1024, block: int = 256, final_block: int = 256,
                    accumulate: str = "float32", out=None, workspace=None):
    """Two-pass tree sum of ``two_pass_tree_sum(x, grid, block, final_block, chunk=16//itemsize,
    warp=32)``. ``workspace`` (>= grid elements of the acc dtype) receives the block partials."""
    x, lib, acc, stream = _prepare(x, accumulate, "fixed_order_sum")
    if out is None:
        out = _empty(x, lib, 1, acc, "out")
    if workspace is None:
        if not isinstance(grid, (int, np.integer)) or not 1 <= grid <= 2**31 - 1:
            raise KernelInputError(f"grid: must be in [1, 2**31 - 1], got {grid!r}")
        workspace = _empty(x, lib, int(grid), acc, "workspace")
    call("fixed_order_sum", x, out, workspace, grid, block, final_block, accumulate, stream)
    return out


def atomic_sum(x, *, grid: int = 1024, block: int = 256, accumulate: str = "float32", out=None):
    """Pass 1 of the tree sum, then each block's partial added atomically into out[0] (zeroed first):
    the arrival order, and so the result, is up to the hardware (CPU: std::thread scheduling).
    On the GPU float32 atomics flush subnormal operands/results to zero (atom.add.f32)."""
    x, lib, acc, stream = _prepare(x, accumulate, "atomic_sum")
    if out is None:
        out = _empty(x, lib, 1, acc, "out")
    call("atomic_sum", x, out, grid, block, accumulate, stream)
    return out


def sequential_sum(x, *, accumulate: str = "float32", out=None):
    """``s = +0; for v in x: s = s + v`` (one GPU thread, or one C++ loop)."""
    x, lib, acc, stream = _prepare(x, accumulate, "sequential_sum")
    if out is None:
        out = _empty(x, lib, 1, acc, "out")
    call("sequential_sum", x, out, accumulate, stream)
    return out
