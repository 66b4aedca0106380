"""The reduction probe's backends and their strategies.

A backend knows whether it can run here (`unavailable`), its default launch shape per device
(`defaults`), when a strategy cannot run a case (`skip`), how to launch one run writing into slot `i`
of a results tensor (`prepare`), and, for fixed orders, the `numerics/` emulation of exactly that order
(`model`). Inputs and results are torch tensors on the probe's device; each backend converts them
without copying (DLPack / __cuda_array_interface__ / NumPy views)."""
import os
from dataclasses import dataclass

import numpy as np

from numerics import orders

SEQUENTIAL_GPU_LIMIT = 1 << 13     # one GPU thread walks the input (~0.5 us a load): keep runs short
SCATTER_GPU_LIMIT = 1 << 22        # one atomicAdd per element into one cell serialises on the GPU
SCATTER16_GPU_LIMIT = 1 << 13      # 16-bit atomicAdd there is a CAS loop: 13.7 s a run at 2^20 (H100)
INTERPRETED_RUNS = 2               # Triton's interpreter and Numba's simulator are slow and sequential
INTERPRETED_MAX_N = 1 << 14


@dataclass
class Case:
    """One input pushed through the strategies: dtype and accumulation dtype names, size, device."""
    device: str
    dtype: str
    acc: str
    n: int
    x: object          # torch tensor on `device`
    x_host: np.ndarray  # the same values on the host (NumPy / ml_dtypes dtype)

    @property
    def accumulate_arg(self):
        return "float32" if self.acc == "float32" else "input"


def torch_dtype(name):
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


class Backend:
    name = ""
    strategies = ()
    ordered = ()          # strategies with a fixed order and a numerics model

    def unavailable(self, device):
        return None

    def defaults(self, device):
        return {}

    def skip(self, strategy, case, params):
        if self.interpreted(case.device) and case.n > INTERPRETED_MAX_N:
            return f"interpreted on a CPU: run only for n <= {INTERPRETED_MAX_N}"
        return None

    def interpreted(self, device):
        """True where the kernels run in an interpreter or simulator (runs capped, no warm-up)."""
        return False

    def prepare(self, strategy, case, params, results):
        raise NotImplementedError

    def model(self, strategy, case, params):
        return None


class CudaExt(Backend):
    """The compiled extension (csrc/): CUDA kernels on a GPU, the C++ reference of the same orders on a
    CPU (same grid and block, so a CPU report and a GPU report compare bit for bit)."""
    name = "cuda_ext"
    strategies = ("fixed", "atomic", "sequential")
    ordered = ("fixed", "sequential")

    def unavailable(self, device):
        try:
            from probes import ext
        except ImportError as exc:
            return f"probes.ext cannot be imported: {exc}"
        if not ext.available():
            return "the compiled extension probes._C is not built (run `pip install -e .`)"
        if device != "cpu" and not ext.build_info()["built_with_cuda"]:
            return "the extension was built without CUDA (no nvcc at build time)"
        return None

    def defaults(self, device):
        return {"grid": 1024, "block": 256, "final_block": 256}

    def skip(self, strategy, case, params):
        if strategy == "sequential" and case.device != "cpu" and case.n > SEQUENTIAL_GPU_LIMIT:
            return f"one GPU thread; run only for n <= {SEQUENTIAL_GPU_LIMIT}"
        return None

    def prepare(self, strategy, case, params, results):
        import torch

        from probes import ext

        acc = case.accumulate_arg
        if strategy == "fixed":
            workspace = torch.empty(params["grid"], dtype=results.dtype, device=results.device)
            return lambda i: ext.fixed_order_sum(case.x, out=results[i:i + 1], workspace=workspace,
                                                 accumulate=acc, **params)
        if strategy == "atomic":
            return lambda i: ext.atomic_sum(case.x, out=results[i:i + 1], accumulate=acc,
                                            grid=params["grid"], block=params["block"])
        return lambda i: ext.sequential_sum(case.x, out=results[i:i + 1], accumulate=acc)

    def model(self, strategy, case, params):
        if strategy == "sequential":
            return orders.sequential_sum(case.x_host, case.acc)
        return orders.two_pass_tree_sum(case.x_host, acc=case.acc, chunk=orders.chunk_for(case.x_host.dtype),
                                        warp=32, **params)


class CuPy(CudaExt):
    """The same CUDA source as the extension, compiled at run time by CuPy (NVRTC)."""
    name = "cupy"
    strategies = ("fixed", "atomic")
    ordered = ("fixed",)

    def unavailable(self, device):
        if device == "cpu":
            return "CuPy needs a GPU"
        try:
            import cupy  # noqa: F401
        except ImportError:
            return "cupy is not installed"
        from probes import ext

        if not ext.available():
            return "the kernel source comes from the extension probes._C, which is not built"
        return None

    def prepare(self, strategy, case, params, results):
        from probes.reduction import cupy_sum

        return cupy_sum.prepare(strategy, case, params, results)


class Triton(Backend):
    """Triton kernels (probes/reduction/triton_sum.py); its interpreter on a CPU."""
    name = "triton"
    strategies = ("fixed", "atomic")
    ordered = ("fixed",)

    def unavailable(self, device):
        try:
            import triton  # noqa: F401
        except ImportError:
            return "triton is not installed"
        if device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
            return "on a CPU Triton runs only in its interpreter (set TRITON_INTERPRET=1 before start)"
        return None

    def defaults(self, device):
        if device == "cpu":
            return {"grid": 8, "block": 64}
        return {"grid": 1024, "block": 1024}

    def interpreted(self, device):
        return device == "cpu"

    def skip(self, strategy, case, params):
        if case.acc == "bfloat16" and case.device == "cpu":
            # Its float32 -> bfloat16 cast truncates and it has no bfloat16 atomic_add (Triton 3.6).
            return "Triton's interpreter has no correctly rounded bfloat16 arithmetic"
        return super().skip(strategy, case, params)

    def prepare(self, strategy, case, params, results):
        import torch

        from probes.reduction import triton_sum

        if strategy == "fixed":
            workspace = torch.empty(params["grid"], dtype=results.dtype, device=results.device)
            return lambda i: triton_sum.fixed_order_sum(case.x, results[i:i + 1], workspace,
                                                        acc=case.acc, **params)
        return lambda i: triton_sum.atomic_sum(case.x, results[i:i + 1], acc=case.acc, **params)

    def model(self, strategy, case, params):
        # One program = one block of `block` lanes reduced by a single halving tree (warp = block);
        # pass 2 is the same kernel over the partials with the same block.
        return orders.two_pass_tree_sum(case.x_host, acc=case.acc, grid=params["grid"], block=params["block"],
                                        final_block=params["block"], chunk=1, warp=params["block"])


class Numba(Backend):
    """Numba CUDA kernels (probes/reduction/numba_sum.py); its CUDA simulator on a CPU."""
    name = "numba"
    strategies = ("fixed", "atomic")
    ordered = ("fixed",)

    def unavailable(self, device):
        try:
            from numba import cuda
        except ImportError:
            return "numba-cuda is not installed"
        if device == "cpu":
            if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
                return "on a CPU Numba runs only in its simulator (set NUMBA_ENABLE_CUDASIM=1 before start)"
        elif not cuda.is_available():
            return "numba.cuda sees no GPU"
        return None

    def defaults(self, device):
        if device == "cpu":
            return {"grid": 2, "block": 32, "final_block": 32}  # the simulator: ~0.3 s per block
        return {"grid": 1024, "block": 256, "final_block": 256}

    def interpreted(self, device):
        return device == "cpu"

    def skip(self, strategy, case, params):
        if "bfloat16" in (case.dtype, case.acc):
            return "Numba has no bfloat16 arrays"
        if strategy == "atomic" and case.acc == "float16" and case.device != "cpu":
            return "numba.cuda.atomic.add has no float16 overload"
        return super().skip(strategy, case, params)

    def prepare(self, strategy, case, params, results):
        import torch

        from probes.reduction import numba_sum

        def view(t):
            if case.device == "cpu":
                return t.numpy()
            from numba import cuda

            return cuda.as_cuda_array(t)

        x, res = view(case.x), view(results)
        if strategy == "fixed":
            workspace = view(torch.empty(params["grid"], dtype=results.dtype, device=results.device))
            return lambda i: numba_sum.fixed_order_sum(x, res[i:i + 1], workspace, acc=case.acc, **params)
        return lambda i: numba_sum.atomic_sum(x, res[i:i + 1], acc=case.acc, grid=params["grid"],
                                              block=params["block"])

    def model(self, strategy, case, params):
        return orders.two_pass_tree_sum(case.x_host, acc=case.acc, chunk=1, warp=32, **params)


class Torch(Backend):
    """What users already call: torch.sum, and index_add_ / scatter_add_ into one cell."""
    name = "torch"
    strategies = ("sum", "index_add", "scatter_add")

    def skip(self, strategy, case, params):
        if strategy != "sum" and case.device != "cpu":
            limit = SCATTER_GPU_LIMIT if case.acc == "float32" else SCATTER16_GPU_LIMIT
            if case.n > limit:
                return f"one {case.acc} atomicAdd per element into one cell; run only for n <= {limit}"
        return None

    def prepare(self, strategy, case, params, results):
        import torch

        from probes.reduction import torch_sum

        if strategy == "sum":
            return lambda i: torch_sum.torch_sum(case.x, results[i:i + 1], results.dtype)
        x_acc = case.x.to(results.dtype)
        index = torch.zeros(case.n, dtype=torch.long, device=results.device)
        fn = torch_sum.index_add_sum if strategy == "index_add" else torch_sum.scatter_add_sum
        return lambda i: fn(x_acc, index, results[i:i + 1])


BACKENDS = {b.name: b for b in (CudaExt(), Triton(), CuPy(), Numba(), Torch())}
