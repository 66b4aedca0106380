"""The probe's backends: each turns the same NumPy inputs into NumPy outputs on the probe's device.
`numerics` is the model; `cuda_ext` is csrc/dequant (CUDA kernels on a GPU, the C++ reference on a CPU);
`triton` (its interpreter on a CPU); `torch` (plain torch ops). Each has the three dequantisers: int4
group-wise (`int4`), GGUF Q4_0 / Q4_1 blocks (`q4`) and FP8 with scales (`fp8`)."""
import numpy as np

from numerics import dequant as dq
from probes import probe
from probes.convert import to_numpy, to_torch


def _t(a, device):
    return None if a is None else to_torch(a, device)


class Numerics(probe.Backend):
    """The exact model (numerics.dequant): the reference the others are checked against."""
    name = "numerics"

    def int4(self, device, packed, scales, zeros, **kw):
        return dq.dequant_int4(packed, scales, zeros, **kw)

    def q4(self, device, blocks, qtype):
        return dq.dequant_q4_0(blocks) if qtype == "Q4_0" else dq.dequant_q4_1(blocks)

    def fp8(self, device, q, scales, scaling, via):
        return dq.dequant_fp8(q, scales, scaling, via=via)


class TorchModule(probe.Backend):
    """A backend whose module takes torch tensors on the device: `kernels()` gives the module."""

    def kernels(self):
        raise NotImplementedError

    def int4(self, device, packed, scales, zeros, **kw):
        return to_numpy(self.kernels().dequant_int4(_t(packed, device), _t(scales, device), _t(zeros, device), **kw))

    def q4(self, device, blocks, qtype):
        return to_numpy(self.kernels().dequant_q4(to_torch(np.ascontiguousarray(blocks), device), qtype))

    def fp8(self, device, q, scales, scaling, via):
        return to_numpy(self.kernels().dequant_fp8(to_torch(q, device), to_torch(scales, device), scaling, via=via))


class CudaExt(TorchModule):
    """csrc/dequant through probes.dequant.kernels: CUDA on a GPU, the C++ reference on a CPU."""
    name = "cuda_ext"

    def unavailable(self, case):
        from probes import ext

        if not ext.available():
            return "probes._C is not built"
        if case.device != "cpu" and not ext.built_with_cuda():
            return "probes._C was built without CUDA"
        return super().unavailable(case)

    def kernels(self):
        from . import kernels

        return kernels


class Triton(TorchModule):
    """The Triton kernels of triton_dequant.py (the interpreter on a CPU)."""
    name = "triton"
    requires = ("triton",)

    def kernels(self):
        from . import triton_dequant

        return triton_dequant


class Torch(TorchModule):
    """Plain torch ops (torch_dequant.py): what a model's Python code does."""
    name = "torch"

    def kernels(self):
        from . import torch_dequant

        return torch_dequant


BACKENDS = {b.name: b for b in (Numerics(), CudaExt(), Triton(), Torch())}
