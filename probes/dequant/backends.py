"""The probe's backends: each turns the same NumPy inputs into NumPy outputs on the probe's device.
`numerics` is the model; `cuda_ext` is csrc/dequant (CUDA kernels on a GPU, the C++ reference on a CPU);
`triton` (its interpreter on a CPU); `torch` (plain torch ops)."""
import numpy as np

from numerics import dequant as dq

from probes.convert import to_numpy, to_torch

BACKENDS = ("numerics", "cuda_ext", "triton", "torch")


def _t(a, device):
    return None if a is None else to_torch(a, device)


def unavailable(name, device):
    if name == "cuda_ext":
        from probes import ext

        if not ext.available():
            return "probes._C is not built"
        if device != "cpu" and not ext.load().built_with_cuda():
            return "probes._C was built without CUDA"
    if name == "triton":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "triton is not installed"
    return None


def int4(name, device, packed, scales, zeros, *, group_size, formula, compute, out):
    kw = dict(group_size=group_size, formula=formula, compute=compute, out=out)
    if name == "numerics":
        return dq.dequant_int4(packed, scales, zeros, **kw)
    args = (_t(packed, device), _t(scales, device), _t(zeros, device))
    if name == "cuda_ext":
        from . import kernels

        return to_numpy(kernels.dequant_int4(*args, **kw))
    if name == "torch":
        from . import torch_dequant

        return to_numpy(torch_dequant.dequant_int4(*args, **kw))
    from . import triton_dequant as td

    return to_numpy(td.dequant_int4(*args, **kw))


def q4(name, device, blocks, qtype):
    if name == "numerics":
        return dq.dequant_q4_0(blocks) if qtype == "Q4_0" else dq.dequant_q4_1(blocks)
    b = to_torch(np.ascontiguousarray(blocks), device)
    if name == "cuda_ext":
        from . import kernels

        return to_numpy(kernels.dequant_q4(b, qtype))
    if name == "torch":
        from . import torch_dequant

        return to_numpy(torch_dequant.dequant_q4(b, qtype))
    from . import triton_dequant as td

    return to_numpy(td.dequant_q4(b, qtype))


def fp8(name, device, q, scales, scaling, via):
    if name == "numerics":
        return dq.dequant_fp8(q, scales, scaling, via=via)
    Q, S = to_torch(q, device), to_torch(scales, device)
    if name == "cuda_ext":
        from . import kernels

        return to_numpy(kernels.dequant_fp8(Q, S, scaling, via=via))
    if name == "torch":
        from . import torch_dequant

        return to_numpy(torch_dequant.dequant_fp8(Q, S, scaling, via=via))
    from . import triton_dequant as td

    return to_numpy(td.dequant_fp8(Q, S, scaling, via=via))
