"""The reduction probe's backends and their strategies.

A backend (probes.probe.Backend) knows what it needs installed (`requires`) and why it cannot run a case
(`unavailable`: the device, a dtype, a size), its default launch shape per device (`defaults`), how to launch
one run writing into slot `i` of a results tensor (`prepare`), and, for fixed orders, the `numerics/`
emulation of exactly that order (`model`). Inputs and results are torch tensors on the probe's device; each
backend converts them without copying (DLPack / __cuda_array_interface__ / NumPy views)."""
import os
from dataclasses import dataclass

import numpy as np

from numerics import orders
from probes import probe

SEQUENTIAL_GPU_LIMIT = 1 << 13     # one GPU thread walks the input (~0.5 us a load): keep runs short
SCATTER_GPU_LIMIT = 1 << 22        # one atomicAdd per element into one cell serialises on the GPU
SCATTER16_GPU_LIMIT = 1 << 13      # 16-bit atomicAdd there is a CAS loop: 13.7 s a run at 2^20 (H100)
INTERPRETED_RUNS = 2               # Triton's interpreter and Numba's simulator are slow and sequential
INTERPRETED_MAX_N = 1 << 14


def accumulation(case):
    """The accumulation dtype of a case: float32, or the input's dtype (its accumulate axis: "input")."""
    return "float32" if case.accumulate == "float32" else case.dtype


@dataclass
class Input:
    """One input pushed through the strategies: dtype and accumulation dtype names, size, device, values."""
    device: str
    dtype: str
    acc: str
    n: int
    x: object          # torch tensor on `device`
    x_host: np.ndarray  # the same values on the host (NumPy / ml_dtypes dtype)

    @property
    def accumulate_arg(self):
        return "float32" if self.acc == "float32" else "input"


class Backend(probe.Backend):
    strategies = ()
    ordered = ()          # strategies with a fixed order and a numerics model

    def unavailable(self, case):
        why = super().unavailable(case)
        if not why and self.interpreted(case.device) and case.n > INTERPRETED_MAX_N:
            why = f"interpreted on a CPU: run only for n <= {INTERPRETED_MAX_N}"
        return why

    def defaults(self, device):
        return {}

    def interpreted(self, device):
        """True where the kernels run in an interpreter or simulator (runs capped, no warm-up)."""
        return False

    def prepare(self, strategy, inp, params, results):
        raise NotImplementedError

    def model(self, strategy, inp, params):
        return None


class CudaExt(Backend):
    """The compiled extension (csrc/): CUDA kernels on a GPU, the C++ reference of the same orders on a
    CPU (same grid and block, so a CPU report and a GPU report compare bit for bit)."""
    name = "cuda_ext"
    strategies = ("fixed", "atomic", "sequential")
    ordered = ("fixed", "sequential")

    def unavailable(self, case):
        from probes import ext

        if not ext.available():
            return "the compiled extension probes._C is not built (run `pip install -e .`)"
        if case.device != "cpu" and not ext.build_info()["built_with_cuda"]:
            return "the extension was built without CUDA (no nvcc at build time)"
        if case.strategy == "sequential" and case.device != "cpu" and case.n > SEQUENTIAL_GPU_LIMIT:
            return f"one GPU thread; run only for n <= {SEQUENTIAL_GPU_LIMIT}"
        return super().unavailable(case)

    def defaults(self, device):
        return {"grid": 1024, "block": 256, "final_block": 256}

    def prepare(self, strategy, inp, params, results):
        import torch

        from probes import ext

        acc = inp.accumulate_arg
        if strategy == "fixed":
            workspace = torch.empty(params["grid"], dtype=results.dtype, device=results.device)
            return lambda i: ext.fixed_order_sum(inp.x, out=results[i:i + 1], workspace=workspace,
                                                 accumulate=acc, **params)
        if strategy == "atomic":
            return lambda i: ext.atomic_sum(inp.x, out=results[i:i + 1], accumulate=acc,
                                            grid=params["grid"], block=params["block"])
        return lambda i: ext.sequential_sum(inp.x, out=results[i:i + 1], accumulate=acc)

    def model(self, strategy, inp, params):
        if strategy == "sequential":
            return orders.sequential_sum(inp.x_host, inp.acc)
        return orders.two_pass_tree_sum(inp.x_host, acc=inp.acc, chunk=orders.chunk_for(inp.x_host.dtype),
                                        warp=32, **params)


class CuPy(CudaExt):
    """The same CUDA source as the extension, compiled at run time by CuPy (NVRTC)."""
    name = "cupy"
    strategies = ("fixed", "atomic")
    ordered = ("fixed",)
    requires = ("cupy",)

    def unavailable(self, case):
        if case.device == "cpu":
            return "CuPy needs a GPU"
        why = Backend.unavailable(self, case)
        if why:
            return why
        from probes import ext

        if not ext.available():
            return "the kernel source comes from the extension probes._C, which is not built"
        return None

    def prepare(self, strategy, inp, params, results):
        from probes.reduction import cupy_sum

        return cupy_sum.prepare(strategy, inp, params, results)


class Triton(Backend):
    """Triton kernels (probes/reduction/triton_sum.py); its interpreter on a CPU."""
    name = "triton"
    strategies = ("fixed", "atomic")
    ordered = ("fixed",)
    requires = ("triton",)

    def unavailable(self, case):
        if case.device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
            return "on a CPU Triton runs only in its interpreter (set TRITON_INTERPRET=1 before start)"
        if accumulation(case) == "bfloat16" and case.device == "cpu":
            # Its float32 -> bfloat16 cast truncates and it has no bfloat16 atomic_add (Triton 3.6).
            return "Triton's interpreter has no correctly rounded bfloat16 arithmetic"
        return super().unavailable(case)

    def defaults(self, device):
        if device == "cpu":
            return {"grid": 8, "block": 64}
        return {"grid": 1024, "block": 1024}

    def interpreted(self, device):
        return device == "cpu"

    def prepare(self, strategy, inp, params, results):
        import torch

        from probes.reduction import triton_sum

        if strategy == "fixed":
            workspace = torch.empty(params["grid"], dtype=results.dtype, device=results.device)
            return lambda i: triton_sum.fixed_order_sum(inp.x, results[i:i + 1], workspace,
                                                        acc=inp.acc, **params)
        return lambda i: triton_sum.atomic_sum(inp.x, results[i:i + 1], acc=inp.acc, **params)

    def model(self, strategy, inp, params):
        # One program = one block of `block` lanes reduced by a single halving tree (warp = block);
        # pass 2 is the same kernel over the partials with the same block.
        return orders.two_pass_tree_sum(inp.x_host, acc=inp.acc, grid=params["grid"], block=params["block"],
                                        final_block=params["block"], chunk=1, warp=params["block"])


class Numba(Backend):
    """Numba CUDA kernels (probes/reduction/numba_sum.py); its CUDA simulator on a CPU."""
    name = "numba"
    strategies = ("fixed", "atomic")
    ordered = ("fixed",)
    requires = ("numba.cuda",)

    def unavailable(self, case):
        why = Backend.unavailable(self, case)
        if why:
            return why
        from numba import cuda

        if case.device == "cpu":
            if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
                return "on a CPU Numba runs only in its simulator (set NUMBA_ENABLE_CUDASIM=1 before start)"
        elif not cuda.is_available():
            return "numba.cuda sees no GPU"
        if "bfloat16" in (case.dtype, accumulation(case)):
            return "Numba has no bfloat16 arrays"
        if case.strategy == "atomic" and accumulation(case) == "float16" and case.device != "cpu":
            return "numba.cuda.atomic.add has no float16 overload"
        return super().unavailable(case)

    def defaults(self, device):
        if device == "cpu":
            return {"grid": 2, "block": 32, "final_block": 32}  # the simulator: ~0.3 s per block
        return {"grid": 1024, "block": 256, "final_block": 256}

    def interpreted(self, device):
        return device == "cpu"

    def prepare(self, strategy, inp, params, results):
        import torch

        from probes.reduction import numba_sum

        def view(t):
            if inp.device == "cpu":
                return t.numpy()
            from numba import cuda

            return cuda.as_cuda_array(t)

        x, res = view(inp.x), view(results)
        if strategy == "fixed":
            workspace = view(torch.empty(params["grid"], dtype=results.dtype, device=results.device))
            return lambda i: numba_sum.fixed_order_sum(x, res[i:i + 1], workspace, acc=inp.acc, **params)
        return lambda i: numba_sum.atomic_sum(x, res[i:i + 1], acc=inp.acc, grid=params["grid"],
                                              block=params["block"])

    def model(self, strategy, inp, params):
        return orders.two_pass_tree_sum(inp.x_host, acc=inp.acc, chunk=1, warp=32, **params)


class Torch(Backend):
    """What users already call: torch.sum, and index_add_ / scatter_add_ into one cell."""
    name = "torch"
    strategies = ("sum", "index_add", "scatter_add")

    def unavailable(self, case):
        acc = accumulation(case)
        if case.strategy != "sum" and case.device != "cpu":
            limit = SCATTER_GPU_LIMIT if acc == "float32" else SCATTER16_GPU_LIMIT
            if case.n > limit:
                return f"one {acc} atomicAdd per element into one cell; run only for n <= {limit}"
        return super().unavailable(case)

    def prepare(self, strategy, inp, params, results):
        import torch

        from probes.reduction import torch_sum

        if strategy == "sum":
            return lambda i: torch_sum.torch_sum(inp.x, results[i:i + 1], results.dtype)
        x_acc = inp.x.to(results.dtype)
        index = torch.zeros(inp.n, dtype=torch.long, device=results.device)
        fn = torch_sum.index_add_sum if strategy == "index_add" else torch_sum.scatter_add_sum
        return lambda i: fn(x_acc, index, results[i:i + 1])


BACKENDS = {b.name: b for b in (CudaExt(), Triton(), CuPy(), Numba(), Torch())}
#: Every backend's strategies, in order (the strategy axis; each backend runs its own).
STRATEGIES = tuple(dict.fromkeys(s for b in BACKENDS.values() for s in b.strategies))
