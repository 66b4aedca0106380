"""The FMA probe's backends: how each one runs a program, which variants it has, and which exact model
(``numerics.fma_programs``: "fma" or "mul_add") each variant is predicted to equal on a GPU and on the
CPU path (C++ reference, Triton interpreter, Numba simulator). Inputs and outputs are NumPy arrays of
the format's dtype (ml_dtypes.bfloat16 for bfloat16)."""
from __future__ import annotations

import numpy as np

from probes import probe
from probes.convert import to_numpy, to_torch


class Backend(probe.Backend):
    variants: tuple = ()
    gpu_predictions: dict = {}
    cpu_predictions: dict = {}
    doc = ""

    def formats(self, device):
        return ("float32", "float16", "bfloat16")

    def unavailable(self, case):
        """Installed (`requires`), then this backend's own conditions (`cannot`), then its formats."""
        return (super().unavailable(case) or self.cannot(case)
                or (None if case.format in self.formats(case.device)
                    else f"{self.name} has no {case.format} on {case.device}"))

    def cannot(self, case):
        """Why this backend cannot run the case's format and variant here, beyond its formats, or None."""
        return None

    def predicted(self, variant, device):
        return (self.cpu_predictions if device == "cpu" else self.gpu_predictions)[variant]

    def run(self, program, inputs, variant, device):
        raise NotImplementedError


class ExtBackend(Backend):
    name = "ext"
    doc = "probes._C: CUDA kernels (csrc/fma/*.cu) on a GPU, the C++ reference (csrc/fma/cpu_*.cpp) on the CPU"
    variants = ("fma", "mul_add", "plain_contract", "plain_nocontract")
    gpu_predictions = {"fma": "fma", "mul_add": "mul_add", "plain_contract": "fma", "plain_nocontract": "mul_add"}
    cpu_predictions = gpu_predictions

    def cannot(self, case):
        from probes import ext
        if not ext.available():
            return "probes._C is not built"
        if case.device != "cpu" and not ext.built_with_cuda():
            return "probes._C was built without CUDA"
        if case.device == "cpu" and case.variant.startswith("plain") and case.format != "float32":
            return "the plain C++ builds are float32 only (a CPU has no 16-bit arithmetic to contract)"
        if case.device == "cpu" and case.variant == "plain_contract":
            from probes.fma import kernels
            if not kernels.cpu_has_fma():
                return "this CPU has no FMA instructions"
        return None

    def run(self, program, inputs, variant, device):
        from probes.fma import kernels
        fn = kernels.PROGRAMS[program]
        args = [inputs[k] for k in ARGS[program]]
        if device == "cpu":
            return np.asarray(fn(*args, variant))
        import torch
        out = fn(*[to_torch(a, device) for a in args], variant)
        torch.cuda.synchronize(device)
        return to_numpy(out)


class TritonBackend(Backend):
    name = "triton"
    doc = "Triton: tl.fma, a*b+c with enable_fp_fusion=True / False (interpreter on the CPU)"
    variants = ("fma", "plain_contract", "plain_nocontract")
    requires = ("torch", "triton")
    gpu_predictions = {"fma": "fma", "plain_contract": "fma", "plain_nocontract": "mul_add"}
    # The interpreter evaluates tl.fma as NumPy x * y + z and has no compiler to fuse anything.
    cpu_predictions = {"fma": "mul_add", "plain_contract": "mul_add", "plain_nocontract": "mul_add"}

    def formats(self, device):
        return ("float32", "float16") if device == "cpu" else ("float32", "float16", "bfloat16")

    def cannot(self, case):
        if case.device == "cpu" and case.format == "bfloat16":
            return "the Triton interpreter stores bfloat16 as uint16 and truncates conversions; GPU only"
        return None

    def run(self, program, inputs, variant, device):
        from probes.fma import triton_fma
        out = triton_fma.PROGRAMS[program](*[to_torch(inputs[k], device) for k in ARGS[program]], variant)
        return to_numpy(out)


class NumbaBackend(Backend):
    name = "numba"
    doc = "Numba CUDA: cuda.fma / cuda.fp16.hfma, a*b+c with fastmath=True / False (simulator on the CPU)"
    variants = ("fma", "plain_fastmath", "plain_default")
    requires = ("probes.fma.numba_fma",)
    # NVVM's default -fma=1 contracts even without fastmath (numba-cuda passes no -fma option).
    gpu_predictions = {"fma": "fma", "plain_fastmath": "fma", "plain_default": "fma"}
    # The simulator runs NumPy scalar arithmetic; its cuda.fma / hfma are a * b + c.
    cpu_predictions = {"fma": "mul_add", "plain_fastmath": "mul_add", "plain_default": "mul_add"}

    def formats(self, device):
        return ("float32", "float16")

    def cannot(self, case):
        if case.format == "bfloat16":
            return "Numba has no bfloat16 arrays"
        return None

    def run(self, program, inputs, variant, device):
        from probes.fma import numba_fma
        args = [np.ascontiguousarray(inputs[k]) for k in ARGS[program]]
        if device == "cpu":
            return np.asarray(numba_fma.PROGRAMS[program](*args, variant))
        from numba import cuda
        with cuda.gpus[int(device.split(":")[1]) if ":" in device else 0]:
            out = numba_fma.PROGRAMS[program](*[cuda.to_device(a) for a in args], variant)
            return out.copy_to_host()


#: argument names of each program, in call order (alpha is a 1-element array).
ARGS = {"dot": ("a", "b"), "horner": ("coeffs", "x"), "axpy": ("alpha", "x", "y")}

BACKENDS = {b.name: b for b in (ExtBackend(), TritonBackend(), NumbaBackend())}
#: Every backend's variants, in order (the variant axis; each backend builds its own).
VARIANTS = tuple(dict.fromkeys(v for b in BACKENDS.values() for v in b.variants))
