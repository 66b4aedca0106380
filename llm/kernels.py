"""The probes' kernels as run-configuration variants (issue 7, item 3).

- `linear=batch_invariant`: every linear op (the 7 per decoder layer and lm_head) computed by
  probes.gemm.triton_matmul.batch_invariant_matmul(x2d, W) (F.linear layout, W [N, K]; fixed K order,
  a K split only where the shape's table fixes one for every M, float32 accumulation: row i of the output
  never depends on the other rows or on M), plus the bias if any. bfloat16 / float16 only. On the CPU it
  runs in Triton's interpreter (TRITON_INTERPRET=1 set before triton is imported, as tests/conftest.py does
  without a GPU). The kernel's per-(N, K, M-bucket) configs come from the tables shipped for the GPU
  (probes/gemm/choices), or from GEMM_TRITON_CHOICES when set.
- `weights=int4:FORMULA:COMPUTE:gGROUP` (e.g. int4:fma:float16:g128): every decoder linear weight
  quantised group-wise to asymmetric int4 (groups of GROUP weights along a row, their range [min, max]
  widened to hold 0: float16 scale s = (max - min) / 15, integer zero point z = round(-min / s) in 0..15
  stored as float16, q = round(w / s + z) clipped to 0..15), packed and dequantised on the CPU by
  numerics.dequant.dequant_int4 (FORMULA sub_mul | mul_sub | fma, scale math COMPUTE float16 | float32),
  the one bit-exact model of those formulas, and rounded once to the run's dtype. On a GPU the
  dequantisation is the dequant probe's CUDA kernel (probes.dequant.kernels.dequant_int4, tested bit for
  bit against that model). The quantiser is numerics.dequant.quantize_int4, run per weight in float64 on the
  weights' device (quantize_int4_groups; bit for bit the same).
- `weights=q4_0|q4_1[:KERNEL]`, `weights=fp8:SCALING[:FORMAT][:VIA][:KERNEL]` (issue 20): every decoder linear
  weight quantised by numerics.dequant's quantiser (quantize_q4_0 / quantize_q4_1: ggml's reference, blocks of
  32 along a row; quantize_fp8: float32 scales per tensor / row / 128x128 block) and dequantised by the
  dequant probe's KERNEL: numerics (the model), cuda_ext (probes.dequant.kernels: CUDA on a GPU, the C++
  reference on the CPU), triton (probes.dequant.triton_dequant; the interpreter on the CPU), torch
  (probes.dequant.torch_dequant). Q4 gives float32, fp8 bfloat16; cast once to the weights' dtype.

Imported lazily by llm.runconfig (triton is imported only when a batch-invariant linear runs).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from probes.errors import UsageError

__all__ = ["batch_invariant_linear", "parse_int4_spec", "int4_kernel", "int4_canonical", "quantize_int4_groups",
           "quantize_weights_int4_", "DEQUANT_KERNELS", "is_dequant_spec", "parse_dequant_spec", "dequant_weight",
           "quantize_weights_dequant_", "BI_DTYPES"]

BI_DTYPES = (torch.bfloat16, torch.float16)


def _interpreter_config():
    """On the CPU (Triton's interpreter): the pointer kernel with 64-wide tiles, one config for every M
    (so batch invariant as the kernel's ANCHOR is). The probe's 16-wide interpreter tiles mean ~20x more
    interpreted tile iterations: a batch-3 forward of the tiny model took 36 s with them, 1.8 s with these.
    (The interpreter's fp32 -> bf16 output cast truncates; on the GPU it rounds to nearest even.)"""
    from probes.gemm.triton_matmul import cfg
    return cfg("ptr", 64, 64, 64, group_m=2, stages=1, warps=1)


def batch_invariant_linear(module, x):
    """F.linear(x, module.weight, module.bias) through the batch-invariant Triton matmul."""
    if x.dtype not in BI_DTYPES:
        raise UsageError(f"linear=batch_invariant supports dtype bfloat16 or float16, not "
                         f"{str(x.dtype).replace('torch.', '')}")
    from probes.gemm.triton_matmul import batch_invariant_matmul
    w = module.weight
    if w.dtype != x.dtype:
        raise UsageError(f"linear=batch_invariant: weight is {w.dtype}, input is {x.dtype}")
    k = x.shape[-1]
    config = None                                   # GPU: the kernel's own choice for (N, K, M bucket)
    if x.device.type == "cpu":
        config = _interpreter_config()
    y = batch_invariant_matmul(x.reshape(-1, k).contiguous(), w.contiguous(), config=config)
    y = y.reshape(*x.shape[:-1], w.shape[0])
    if module.bias is not None:
        y = y + module.bias
    return y


# ---- int4 weights ---------------------------------------------------------------------------------

def parse_int4_spec(spec: str):
    """'int4:FORMULA:COMPUTE:gGROUP[:KERNEL]' -> (formula, compute, group); a UsageError naming what is wrong.
    The KERNEL part (the dequant probe's kernel, `int4_kernel`) is checked there."""
    from numerics.dequant import COMPUTE, FORMULAS, GROUP_SIZES
    parts = spec.split(":")
    form = "int4:FORMULA:COMPUTE:gGROUP[:KERNEL] (e.g. int4:fma:float16:g128, int4:fma:float16:g128:triton)"
    if len(parts) not in (4, 5) or parts[0] != "int4":
        raise UsageError(f"weights={spec}: not {form}")
    _, formula, compute, g = parts[:4]
    if formula not in FORMULAS:
        raise UsageError(f"weights={spec}: formula {formula!r} not one of {', '.join(FORMULAS)}")
    if compute not in COMPUTE:
        raise UsageError(f"weights={spec}: scale math {compute!r} not one of {', '.join(COMPUTE)}")
    sizes = ", ".join(f"g{s}" for s in GROUP_SIZES)
    if not g.startswith("g") or not g[1:].isdigit() or int(g[1:]) not in GROUP_SIZES:
        raise UsageError(f"weights={spec}: group {g!r} not one of {sizes}")
    if len(parts) == 5 and parts[4] not in DEQUANT_KERNELS + INT4_MATMUL_KERNELS:
        raise UsageError(f"weights={spec}: kernel {parts[4]!r} not one of "
                         f"{', '.join(DEQUANT_KERNELS + INT4_MATMUL_KERNELS)}")
    return formula, compute, int(g[1:])


def int4_kernel(spec: str, device: str) -> str:
    """The dequant kernel of 'int4:...[:KERNEL]' on `device`: KERNEL, or default_dequant_kernel(device) (numerics
    on a CPU, the CUDA extension on a GPU); a UsageError if the device cannot run it, naming what can."""
    parse_int4_spec(spec)
    parts = spec.split(":")
    kernel = parts[4] if len(parts) == 5 else default_dequant_kernel(device)
    why = _kernel_unavailable(kernel, device)
    if why:
        ok = [k for k in DEQUANT_KERNELS if not _kernel_unavailable(k, device)]
        raise UsageError(f"weights={spec}: kernel {kernel} cannot run on device={device}: {why} "
                         f"(available there: {', '.join(ok)})")
    return kernel


def int4_canonical(spec: str, device: str) -> str:
    """'int4:FORMULA:COMPUTE:gGROUP:KERNEL' with the kernel that runs on `device` named."""
    return ":".join(spec.split(":")[:4] + [int4_kernel(spec, device)])


def quantize_int4_groups(w, group_size):
    """float (N, K) torch tensor (any float dtype, any device) -> (packed (N, K/2) uint8, scales (N, K/g) float16,
    zeros (N, K/g) float16), torch tensors on w's device: numerics.dequant.quantize_int4's quantiser (its
    definition; tests check the two bit for bit) with the per-weight arithmetic in float64 on w's device. Only
    the per-group scale rule (numerics.dequant.int4_scales, 1/g of the weights) runs in NumPy: on a GPU the
    7B shape's 7e9 weights no longer pass through the host (issue 20: that took minutes a quantisation)."""
    from numerics.dequant import int4_scales
    from probes.convert import to_torch
    if not isinstance(w, torch.Tensor):
        w = torch.from_numpy(np.asarray(w))
    if w.dim() != 2:
        raise UsageError(f"weights=int4: need a 2-D (N, K) weight, got shape {tuple(w.shape)}")
    n, k = w.shape
    if k % group_size:
        raise UsageError(f"weights=int4: group size {group_size} does not divide the row length {k}")
    g = w.to(torch.float64).reshape(n, k // group_size, group_size)
    lo = g.amin(dim=2).clamp(max=0.0).cpu().numpy()
    hi = g.amax(dim=2).clamp(min=0.0).cpu().numpy()
    s, z = (to_torch(a, w.device) for a in int4_scales(lo, hi))
    q = torch.clamp(g / s.to(torch.float64)[..., None] + z.to(torch.float64)[..., None], 0, 15)
    q = torch.round(q).to(torch.uint8).reshape(n, k)          # half to even, as numerics' quantize_int
    return q[:, 0::2] | (q[:, 1::2] << 4), s, z


@torch.no_grad()
def quantize_weights_int4_(model, spec: str) -> None:
    """Every decoder linear weight of `model` -> int4 (see the module docstring), dequantised with the
    formula of `spec` by the dequant probe's KERNEL (`int4_kernel`: numerics.dequant.dequant_int4 on a CPU by
    default, the CUDA extension on a GPU; triton, torch or cuda_ext when named) into the weights' dtype, in place."""
    from numerics.dequant import dequant_int4
    from probes.convert import to_torch
    formula, compute, group = parse_int4_spec(spec)
    kernel = int4_kernel(spec, str(next(model.parameters()).device))
    names = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
    for mod in decoder_linears(model):
        w = mod.weight.data
        out = names.get(w.dtype)
        if out is None:
            raise UsageError(f"weights={spec}: weights of dtype {w.dtype} not supported")
        matmul = kernel in INT4_MATMUL_KERNELS
        if matmul:
            check_int4_matmul(spec, w, group)
        kept = []
        for r0 in range(0, w.shape[0], 1024):       # bounded float64 temporaries
            q = quantize_int4_groups(w[r0:r0 + 1024], group)
            if kernel == "numerics":
                packed, s, z = (t.cpu().numpy() for t in q)
                w[r0:r0 + 1024] = to_torch(dequant_int4(packed, s, z, group_size=group, formula=formula,
                                                        compute=compute, out=out), w.device)
                continue
            # the dequant probe's kernel on the weights' device (issue 20); the same formula bit for bit. fused /
            # tiles: the int4 matmul reads the packed weights kept here, the weight holds the same tiles (Triton's)
            if matmul:
                kept.append(q)
            w[r0:r0 + 1024] = _dequant_module("triton" if matmul else kernel).dequant_int4(
                *q, group_size=group, formula=formula, compute=compute, out=out)
        if matmul:
            mod._int4_matmul = Int4Matmul(kernel, *(torch.cat(t) for t in zip(*kept)), group, formula, compute)


# ---- fused dequant-GEMM: the dequant probe's Triton matmul over the packed int4 weights (issue 20) --------

#: weights=int4:...:fused | :tiles. fused: probes.dequant.triton_fused.fused_int4_matmul, every decoder linear
#: dequantised tile by tile inside the matmul; tiles: the same kernel and tiles reading the dequantised bfloat16
#: weight (matmul_bf16). The two see the same weight bits; on a GPU the fused load path can give the dot another
#: K order (the probe's finding). Triton: the GPU, or the interpreter on the CPU. bfloat16 runs only.
INT4_MATMUL_KERNELS = ("fused", "tiles")


@dataclasses.dataclass
class Int4Matmul:
    kernel: str
    packed: torch.Tensor          # (N, K/2) uint8
    scales: torch.Tensor          # (N, K/g) float16
    zeros: torch.Tensor           # (N, K/g) float16
    group: int
    formula: str
    compute: str

    @property
    def bk(self):
        """The kernel's K tile: 64 where K and the group allow it, else 32 (fixed by the shape, never by M)."""
        k = 2 * self.packed.shape[1]
        return 64 if k % 64 == 0 and self.group % 64 == 0 else 32


def check_int4_matmul(spec, w, group):
    if w.dtype != torch.bfloat16:
        raise UsageError(f"weights={spec}: the fused/tiles int4 matmul takes bfloat16 activations and weights, this "
                         f"run's weights are {w.dtype} (give dtype=bfloat16)")
    if w.shape[1] % 32 or group % 32:
        raise UsageError(f"weights={spec}: the int4 matmul needs K ({w.shape[1]}) and the group ({group}) to be "
                         "multiples of 32")


def int4_matmul_linear(module, x):
    """The linear replacement of weights=int4:...:fused|tiles: Y = X W^T (+ bias) by the dequant probe's Triton
    kernel, float32 accumulation, rounded once to x's dtype. A linear without int4 weights (lm_head: only the
    decoder linears are quantised, as in every int4 run) is F.linear."""
    from probes.dequant.triton_fused import fused_int4_matmul, matmul_bf16
    q = getattr(module, "_int4_matmul", None)
    if q is None:
        return torch.nn.functional.linear(x, module.weight, module.bias)
    if x.dtype != torch.bfloat16:
        raise UsageError(f"weights=int4:...:{q.kernel}: the int4 matmul takes bfloat16 activations, not {x.dtype}")
    k = x.shape[-1]
    x2 = x.reshape(-1, k).contiguous()
    if q.kernel == "fused":
        y = fused_int4_matmul(x2, q.packed, q.scales, q.zeros, group_size=q.group, formula=q.formula,
                              compute=q.compute, bk=q.bk)
    else:
        y = matmul_bf16(x2, module.weight.contiguous(), bk=q.bk)
    y = y.to(x.dtype).reshape(*x.shape[:-1], y.shape[-1])
    if module.bias is not None:
        y = y + module.bias
    return y


# ---- GGUF Q4_0 / Q4_1 and scaled FP8 weights through the dequant probe's kernels (issue 20) ----------

DEQUANT_KERNELS = ("numerics", "cuda_ext", "triton", "torch")
FP8_SCALINGS = ("tensor", "channel", "block")
FP8_FORMATS = {"e4m3fn": "float8_e4m3fn", "e5m2": "float8_e5m2"}
FP8_VIAS = ("float32", "bfloat16")
Q4_FORMS = {"q4_0": "Q4_0", "q4_1": "Q4_1"}
DEQUANT_FORMS = ("q4_0[:KERNEL]", "q4_1[:KERNEL]", "fp8:SCALING[:FORMAT][:VIA][:KERNEL]")


def is_dequant_spec(spec: str) -> bool:
    """weights= values handled here (fp8 alone is llm.runconfig's per-row torch rounding)."""
    head = spec.split(":")[0]
    return head in Q4_FORMS or (head == "fp8" and ":" in spec)


def default_dequant_kernel(device: str) -> str:
    return "cuda_ext" if str(device).startswith("cuda") else "numerics"


def _kernel_unavailable(kernel, device):
    """Why the dequant probe's `kernel` cannot run on `device` ('' = it can)."""
    import os
    import sys
    gpu = str(device).startswith("cuda")
    if kernel == "cuda_ext":
        from probes import ext
        if not ext.available():
            return "probes._C (the dequant probe's CUDA / C++ kernels) is not built"
        if gpu and not ext.built_with_cuda():
            return "probes._C was built without CUDA"
    if kernel in ("triton",) + INT4_MATMUL_KERNELS:
        try:
            import triton  # noqa: F401
        except ImportError:
            return "triton is not installed"
        mod = sys.modules.get("probes.dequant.triton_dequant")
        interp = getattr(mod, "INTERPRETED", None) if mod else os.environ.get("TRITON_INTERPRET") == "1"
        if not gpu and not interp:
            return ("on the CPU the Triton kernels run in Triton's interpreter: set TRITON_INTERPRET=1 before "
                    "triton is imported")
        if gpu and interp:
            return "probes.dequant.triton_dequant was imported under TRITON_INTERPRET=1 (the interpreter, not the GPU)"
    return ""


def parse_dequant_spec(spec: str, device: str = "cpu"):
    """'q4_0[:KERNEL]' | 'q4_1[:KERNEL]' | 'fp8:SCALING[:FORMAT][:VIA][:KERNEL]' -> a dict
    {form: Q4_0|Q4_1|fp8, scaling, fmt, via, kernel, canonical}; KERNEL defaults to
    default_dequant_kernel(device); FORMAT to e4m3fn, VIA to float32. A UsageError names the bad part,
    the choices, and a kernel the device cannot run."""
    parts = spec.split(":")
    head, rest = parts[0], parts[1:]
    kinds = {"kernel": DEQUANT_KERNELS}
    if head in Q4_FORMS:
        got = {"form": Q4_FORMS[head], "scaling": None, "fmt": None, "via": None}
    elif head == "fp8":
        kinds.update(scaling=FP8_SCALINGS, fmt=tuple(FP8_FORMATS), via=FP8_VIAS)
        got = {"form": "fp8"}
    else:
        raise UsageError(f"weights={spec}: not one of {', '.join(DEQUANT_FORMS)}")
    for p in rest:
        kind = next((k for k, vals in kinds.items() if p in vals), None)
        if kind is None or kind in got:
            allowed = "; ".join(f"{k} {'|'.join(v)}" for k, v in kinds.items())
            why = "given twice" if kind else "unknown"
            raise UsageError(f"weights={spec}: {p!r} {why} (parts after {head}: {allowed})")
        got[kind] = p
    if head == "fp8":
        if "scaling" not in got:
            raise UsageError(f"weights={spec}: fp8 needs a scaling, one of {', '.join(FP8_SCALINGS)} "
                             f"(e.g. fp8:block; weights=fp8 alone is the per-row torch rounding)")
        got.setdefault("fmt", "e4m3fn")
        got.setdefault("via", "float32")
    got.setdefault("kernel", default_dequant_kernel(device))
    why = _kernel_unavailable(got["kernel"], device)
    if why:
        ok = [k for k in DEQUANT_KERNELS if not _kernel_unavailable(k, device)]
        raise UsageError(f"weights={spec}: kernel {got['kernel']} cannot run on device={device}: {why} "
                         f"(available there: {', '.join(ok)})")
    if head == "fp8":
        got["canonical"] = f"fp8:{got['scaling']}:{got['fmt']}:{got['via']}:{got['kernel']}"
    else:
        got["canonical"] = f"{head}:{got['kernel']}"
    return got


def _f8_torch(q, fmt):
    t = torch.from_numpy(np.ascontiguousarray(q).view(np.uint8))
    return t.view(torch.float8_e4m3fn if fmt == "float8_e4m3fn" else torch.float8_e5m2)


def dequant_weight(w: torch.Tensor, spec) -> torch.Tensor:
    """The 2-D weight `w` quantised by the format's quantiser (numerics.dequant.quantize_q4_0 / _q4_1 /
    quantize_fp8, on float32 values) and dequantised by the dequant probe's KERNEL on w's device: Q4 gives
    float32, fp8 bfloat16 (the probe's outputs), returned in that dtype (the caller casts to the run's)."""
    from numerics import dequant as dq
    p = parse_dequant_spec(spec, str(w.device)) if isinstance(spec, str) else spec
    kernel, dev = p["kernel"], w.device
    n, k = w.shape
    wf = w.detach().float().cpu().numpy()
    if p["form"] in ("Q4_0", "Q4_1"):
        if k % dq.QK:
            raise UsageError(f"weights={p['canonical']}: row length {k} is not a multiple of {dq.QK} (Q4 blocks)")
        blocks = (dq.quantize_q4_0 if p["form"] == "Q4_0" else dq.quantize_q4_1)(wf.reshape(-1))
        if kernel == "numerics":
            d = (dq.dequant_q4_0 if p["form"] == "Q4_0" else dq.dequant_q4_1)(blocks)
            return torch.from_numpy(np.ascontiguousarray(d, np.float32)).reshape(n, k).to(dev)
        bt = torch.from_numpy(blocks).to(dev)
        mod = _dequant_module(kernel)
        return mod.dequant_q4(bt, p["form"]).reshape(n, k)
    fmt = FP8_FORMATS[p["fmt"]]
    try:
        q, s = dq.quantize_fp8(wf, fmt, p["scaling"])
    except ValueError as exc:
        raise UsageError(f"weights={p['canonical']}: {exc}") from None
    if kernel == "numerics":
        d = np.ascontiguousarray(dq.dequant_fp8(q, s, p["scaling"], via=p["via"]))
        return torch.from_numpy(d.view(np.int16)).view(torch.bfloat16).to(dev)
    qt, st = _f8_torch(q, fmt).to(dev), torch.from_numpy(np.ascontiguousarray(s, np.float32)).to(dev)
    return _dequant_module(kernel).dequant_fp8(qt, st, p["scaling"], via=p["via"])


def _dequant_module(kernel):
    if kernel == "cuda_ext":
        from probes.dequant import kernels as mod
    elif kernel == "triton":
        from probes.dequant import triton_dequant as mod
    elif kernel == "torch":
        from probes.dequant import torch_dequant as mod
    else:
        raise UsageError(f"dequant kernel {kernel!r} not one of {', '.join(DEQUANT_KERNELS)}")
    return mod


def decoder_linears(model):
    for layer in model.model.layers:
        yield from (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                    layer.self_attn.o_proj, layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj)


@torch.no_grad()
def quantize_weights_dequant_(model, spec: str) -> None:
    """Every decoder linear weight of `model` -> dequant_weight(w, spec), cast once to the weights' dtype
    (Q4: float32 -> dtype; fp8: bfloat16 -> dtype, exact for float32 and bfloat16), in place."""
    p = parse_dequant_spec(spec, str(next(model.parameters()).device))
    for mod in decoder_linears(model):
        w = mod.weight.data
        w.copy_(dequant_weight(w, p).to(w.dtype))
