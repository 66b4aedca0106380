"""How the accumulator probe runs a matmul: ``backend.matmul(A, B, fmt) -> C`` with A (M, K) and
B (K, N) float64 arrays holding values of ``fmt`` and C (M, N) float64 holding the float32 results.

- ``cublas``: torch on a CUDA device. float16/bfloat16 through ``torch.mm(a, b, torch.float32)``
  (the fp32-output overload: the tensor core's fp32 accumulator comes back unrounded), with the
  reduced-precision-reduction flags off; tf32 = fp32 inputs with ``allow_tf32=True``; float32 with
  it off (SGEMM on CUDA cores); fp8 through ``torch._scaled_mm`` (unit scales, fp32 output, second
  operand column-major, sizes multiple of 16; sm_89+), ``use_fast_accum=False``.
- ``cublas_fast``: fp8 with ``use_fast_accum=True`` (no periodic promotion to CUDA-core fp32).
- ``triton``: one ``tl.dot`` kernel with an fp32 accumulator (``triton_dot.py``).
- ``simulated``: ``numerics.matmul`` with a given ``MatmulModel`` per format (a "device" whose
  parameters are known: the CPU tests recover them).
- ``torch_cpu``: torch's CPU matmul on fp32 copies of the values (fp8: ``_scaled_mm`` on the CPU).

Shapes (M x K x N): designs 64 x 64 x 64, promotion designs 256 x 512 x 256, fit sample and
validation 317 x 256 x 317 (for 100,000 samples). cuBLAS chooses its kernel per shape: on the H100
(run 1) bf16 and fp32 at 317 x 256 x 317 ran split-K (``splitKreduce_kernel``; 4 slices of 64 by
the fit), tf32 at 64 x 64 x 64 too, so the designs' model and the validation shape's model can
differ; ``fit.py`` finds the latter and the report keeps both (``design_model``, ``model``).
"""
from __future__ import annotations

import numpy as np

from numerics.formats import get_format
from numerics.matmul import MatmulModel, check_representable, operand_formats
from numerics.matmul_fast import matmul_bits
from probes import probe
from probes.convert import torch_dtype

MIXED_FP8 = "float8_e4m3fn_x_e5m2"        # A e4m3, B e5m2 (cuBLASLt's sm_90 fp8 GEMMs allow it)
FP8 = ("float8_e4m3fn", "float8_e5m2", MIXED_FP8)


def _pad16(x, axis):
    n = x.shape[axis]
    extra = (-n) % 16
    if not extra:
        return x
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, extra)
    return np.pad(x, pad)


class Backend(probe.Backend):
    formats = ()

    def unavailable(self, case):
        """None if it can run the case's format on its device, else the reason."""
        if case.format not in self.formats:
            return f"{self.name} does not run {case.format}"
        return super().unavailable(case)

    def matmul(self, A, B, fmt):
        raise NotImplementedError

    @staticmethod
    def checked(A, B, fmt):
        """A, B as float64 (M, K), (K, N) holding values of ``fmt``: overflow, NaN/inf, values
        the format does not hold, and shape errors are refused (never saturated or rounded)."""
        A = np.asarray(A, dtype=np.float64)
        B = np.asarray(B, dtype=np.float64)
        if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[0] or 0 in A.shape + B.shape:
            raise ValueError(f"need nonempty A (M, K) and B (K, N), got {A.shape} and {B.shape}")
        fa, fb = operand_formats(fmt)
        check_fits(A, fa, "A")
        check_fits(B, fb, "B")
        return check_representable(A, fa, "A"), check_representable(B, fb, "B")

    def describe(self, fmt):
        return self.name


class Simulated(Backend):
    """numerics.matmul with a given MatmulModel per format: a "device" whose parameters are known."""
    name = "simulated"
    formats = ("float16", "bfloat16", "tf32", "float8_e4m3fn", "float8_e5m2", "float32", MIXED_FP8)

    def __init__(self, models=None):
        self.models = dict(models or {})

    def model_for(self, fmt):
        if fmt in self.models:
            return self.models[fmt]
        return MatmulModel(input_format=fmt, block_size=16 if fmt != "float32" else 1,
                           extra_bits=3 if fmt != "float32" else None,
                           rounding="toward_zero" if fmt != "float32" else "nearest_even")

    def matmul(self, A, B, fmt):
        return matmul_bits(A, B, self.model_for(fmt))

    def describe(self, fmt):
        return f"simulated ({self.model_for(fmt).describe()})"


class TorchCPU(Backend):
    name = "torch_cpu"
    formats = ("float16", "bfloat16", "tf32", "float32") + FP8

    def matmul(self, A, B, fmt):
        import torch
        A, B = self.checked(A, B, fmt)
        if fmt in FP8:
            fa, fb = operand_formats(fmt)
            a = torch.from_numpy(np.ascontiguousarray(_pad16(_pad16(A, 0), 1))).float().to(torch_dtype(fa))
            b = torch.from_numpy(np.ascontiguousarray(_pad16(_pad16(B, 0), 1)).T.copy()).float().to(torch_dtype(fb)).t()
            one = torch.tensor(1.0)
            c = torch._scaled_mm(a, b, one, one, out_dtype=torch.float32)
            return c.numpy().astype(np.float64)[:A.shape[0], :B.shape[1]]
        a = torch.from_numpy(A.astype(np.float32))
        b = torch.from_numpy(B.astype(np.float32))
        return torch.mm(a, b).numpy().astype(np.float64)


class Cublas(Backend):
    name = "cublas"
    formats = ("float16", "bfloat16", "tf32", "float32") + FP8
    fast_accum = False

    def unavailable(self, case):
        device, fmt = case.device, case.format
        if device == "cpu":
            return "needs a CUDA GPU"
        why = super().unavailable(case)
        if why:
            return why
        if fmt in FP8:
            import torch
            cc = torch.cuda.get_device_capability(device)
            if cc < (8, 9):
                return f"{fmt} matmul needs compute capability >= 8.9 (this GPU: {cc[0]}.{cc[1]})"
        if fmt == "float8_e5m2":
            # measured on the H100 (torch 2.11, cuBLASLt 13.1): torch._scaled_mm raises
            # "Multiplication of two Float8_e5m2 matrices is not supported"
            return ("cuBLASLt has no e5m2 x e5m2 fp8 GEMM (torch._scaled_mm refuses it: 'Multiplication "
                    "of two Float8_e5m2 matrices is not supported'); cuBLAS fp8 needs an e4m3 operand")
        return None

    def __init__(self, device="cuda"):
        self.device = device

    def matmul(self, A, B, fmt):
        import torch
        A, B = self.checked(A, B, fmt)
        dev = self.device
        m = torch.backends.cuda.matmul
        old = {}
        try:
            for flag, value in (("allow_fp16_reduced_precision_reduction", False),
                                ("allow_bf16_reduced_precision_reduction", False)):
                old[flag] = getattr(m, flag)
                setattr(m, flag, value)
            _set_tf32(m, fmt == "tf32", old)
            if fmt in FP8:
                Ap, Bp = _pad16(_pad16(A, 0), 1), _pad16(_pad16(B, 0), 1)
                fa, fb = operand_formats(fmt)
                a = torch.from_numpy(np.ascontiguousarray(Ap)).to(dev).to(torch.float32).to(torch_dtype(fa))
                # column-major second operand: the transpose of a row-major (N, K) tensor
                b = torch.from_numpy(np.ascontiguousarray(Bp.T)).to(dev).to(torch.float32).to(torch_dtype(fb)).t()
                one = torch.ones((), device=dev, dtype=torch.float32)
                c = torch._scaled_mm(a, b, one, one, out_dtype=torch.float32,
                                     use_fast_accum=self.fast_accum)
                out = c[:A.shape[0], :B.shape[1]]
            elif fmt in ("float16", "bfloat16"):
                a = torch.from_numpy(A).to(dev).to(torch.float32).to(torch_dtype(fmt))
                b = torch.from_numpy(B).to(dev).to(torch.float32).to(torch_dtype(fmt))
                out = torch.mm(a, b, torch.float32)
            else:
                a = torch.from_numpy(A.astype(np.float32)).to(dev)
                b = torch.from_numpy(B.astype(np.float32)).to(dev)
                out = torch.mm(a, b)
            torch.cuda.synchronize(dev)
            return out.cpu().numpy().astype(np.float64)
        finally:
            for flag, value in old.items():
                setattr(m, flag, value)


def _set_tf32(m, on, old):
    """TF32 for fp32 matmuls on/off through torch's legacy flag, else its fp32_precision API
    (torch refuses to mix the two in one process)."""
    try:
        old["allow_tf32"] = m.allow_tf32
        m.allow_tf32 = on
    except (RuntimeError, AttributeError):
        old.pop("allow_tf32", None)
        old["fp32_precision"] = m.fp32_precision
        m.fp32_precision = "tf32" if on else "ieee"


class CublasFast(Cublas):
    name = "cublas_fast"
    formats = FP8
    fast_accum = True


class Triton(Backend):
    name = "triton"
    formats = ("float16", "bfloat16", "tf32", "float32", "float8_e4m3fn", "float8_e5m2")

    def __init__(self, device="cuda"):
        self.device = device

    requires = ("triton",)

    def unavailable(self, case):
        device, fmt = case.device, case.format
        why = super().unavailable(case)
        if why:
            return why
        if device != "cpu" and fmt in FP8:
            import torch
            cc = torch.cuda.get_device_capability(device)
            if cc < (8, 9):
                return f"{fmt} tl.dot needs compute capability >= 8.9 (this GPU: {cc[0]}.{cc[1]})"
        if device == "cpu" and fmt in FP8:
            return "the Triton interpreter has no fp8 tl.dot"
        if device == "cpu" and fmt == "bfloat16":
            return "the Triton 3.6 interpreter's bf16 tl.dot gives garbage (NumPy has no bf16)"
        return None

    def matmul(self, A, B, fmt):
        from probes.accumulator.triton_dot import triton_matmul
        A, B = self.checked(A, B, fmt)
        return triton_matmul(A, B, fmt, self.device)


def make_backends(names, device, simulated_models=None):
    out = []
    for n in names:
        if n == "simulated":
            out.append(Simulated(simulated_models))
        elif n == "torch_cpu":
            out.append(TorchCPU())
        elif n == "cublas":
            out.append(Cublas(device))
        elif n == "cublas_fast":
            out.append(CublasFast(device))
        elif n == "triton":
            out.append(Triton(device))
        else:
            raise ValueError(f"unknown backend {n!r}")
    return out


BACKENDS = ("cublas", "cublas_fast", "triton", "simulated", "torch_cpu")
FORMATS = ("float16", "bfloat16", "tf32", "float32", "float8_e4m3fn", "float8_e5m2", MIXED_FP8)


def check_fits(A, fmt, what):
    """Refuse values that overflow ``fmt`` instead of letting a cast saturate them."""
    f = get_format(fmt)
    big = np.abs(A) > f.max_finite
    if np.any(big):
        raise ValueError(f"{what}: {int(big.sum())} values exceed {fmt}'s largest finite "
                         f"{f.max_finite} (e.g. {A[big].ravel()[0]!r}); not saturating them")
