"""Run configurations: how one run computes the model, parsed from "key=value,..." strings.

    device=cuda,dtype=bfloat16,batch=8,attn=sdpa,padding=left,linear=torch,norm=torch,weights=fp8,
    round=L3.down_proj:float8_e4m3fn+L5.*:bfloat16,seed=0

- device, dtype (float32 | bfloat16 | float16): where and in what the model computes.
- batch=N, padding=left|right, seed: the prompt alone (N=1) or as row 0 among N-1 other prompts of
  seeded random tokens (lengths 1/2..3/2 of the prompt's), padded on `padding`'s side.
- attn=sdpa|eager: the attention implementation (transformers' own).
- linear=NAME, norm=NAME: kernel variants from the op-replacement registry (`register_op`); built in:
  `torch` (the model's own) and `float64` (computed in float64, rounded once to the dtype). Other probes
  (batch-invariant Triton matmul, dequantisation formulas) plug in here by name.
  `batch_invariant`: probes.gemm.triton_matmul.batch_invariant_matmul (bfloat16/float16; llm.kernels).
  `emulate:PROFILE`: every linear with a GPU profile's arithmetic, exactly, on the CPU (llm.emulate;
  PROFILE a shipped name such as h100, t4-like, a10g-like, or a profile file; docs/profiles.md).
- weights=native|fp8|int4:FORMULA:COMPUTE:gGROUP: fp8 = every decoder linear weight rounded to
  float8_e4m3fn with a per-output-row absmax scale (scale = absmax/448 in float32; dequantised as q*scale
  in float32, then rounded to dtype); int4 = group-wise asymmetric int4 dequantised by
  numerics.dequant.dequant_int4 with FORMULA sub_mul|mul_sub|fma in COMPUTE float16|float32, groups of
  GROUP in 32|64|128 (e.g. int4:fma:float16:g128; llm.kernels).
- weights=q4_0[:KERNEL] | q4_1[:KERNEL] | fp8:SCALING[:FORMAT][:VIA][:KERNEL] (issue 20; llm.kernels): every
  decoder linear weight quantised by numerics.dequant's quantiser (GGUF Q4_0 / Q4_1 as ggml's reference;
  fp8 with SCALING tensor|channel|block, FORMAT e4m3fn|e5m2, VIA float32|bfloat16) and dequantised by the
  dequant probe's KERNEL numerics|cuda_ext|triton|torch (default numerics on the CPU, cuda_ext on a GPU;
  triton on the CPU needs Triton's interpreter), cast once to the dtype. Parsed to the canonical form with
  the kernel (q4_1:numerics, fp8:block:e4m3fn:float32:numerics); a kernel the device cannot run is a
  UsageError listing those it can.
Mechanisms (issue 20; llm.mechkernels has the details, python -m llm.mechanisms ranks them):
- norm=fixed|atomic[:SEED]: RMSNorm's row sum of squares through the reduction probe's kernels
  (probes.ext.fixed_order_sum: the two-pass fixed-order tree, 8 blocks of 32 threads; atomic: the blocks'
  partials added by atomics, ext.atomic_sum on a GPU; on the CPU atomics are EMULATED: the same pass 1,
  the partials added in a seeded random arrival order per row, SEED default 0).
- softmax=torch|fixed|atomic[:SEED] (attn=eager only; sdpa fuses the softmax): the eager attention's
  softmax row sums likewise (torch: torch.softmax, the default).
- fma=default|on|off|on:OPS|off:OPS (OPS '+'-joined of rotary, norm, mlp; on/off alone = all three): the
  elementwise ops through the FMA probe's dot program (probes.fma.kernels.dot; CPU: the extension's C++
  reference): on = fused multiply-adds (one rounding), off = two roundings (what torch's own unfused ops
  compute); default = the model's own ops. rotary: x*cos + rotate_half(x)*sin; norm: RMSNorm's mean plus
  epsilon s*(1/n) + eps (s in the norm= order; off = torch's where n is a power of two) and its two
  scalings; mlp: act(gate)*up, a product alone (on = off: nothing to contract). The residual adds are plain
  adds: no contraction applies. Not with norm=float64.
- tf32=default|on|off (float32 runs): TF32 tensor cores for the linears on a GPU (allow_tf32 during
  the forward; with linear=cublaslt the compute type 32f_fast_tf32); tf32=on on the CPU is a UsageError.
- linear=cublaslt:RANK[:mM] (GPU only): every linear through the cuBLASLt heuristic's pick RANK for its
  shape (0 = the default pick), or the pick made for M rows (what a batch change does to a linear).
- weights=int4:FORMULA:COMPUTE:gGROUP:fused|tiles (bfloat16; Triton: the GPU, or its interpreter on the CPU): the
  decoder linears computed by the dequant probe's Triton int4 matmul, dequantising inside the matmul tile by tile
  (fused) or reading the dequantised weight with the same tiles (tiles); llm.kernels.int4_matmul_linear.
- linear=fp8mm:accurate|fast (GPU, sm_89+): every linear as an FP8 GEMM (torch._scaled_mm, cuBLASLt; e4m3fn with
  per-tensor scales as numerics.dequant quantises them), fast accumulation off or on (llm.mechkernels.Fp8Linear).
- weights=int4:...[:KERNEL]: dequantised by the dequant probe's KERNEL numerics|cuda_ext|triton|torch (default
  numerics on the CPU, the CUDA extension (probes.dequant.kernels) on a GPU); a kernel the device cannot run is an
  error.
Errors name the option and what is available; nothing is silently replaced by something else.
- tp=W, tp_reduce=rank|ring|float64: tensor parallelism over W ranks emulated in one process (llm.tp):
  q/k/v/gate/up column-parallel, attention per rank's heads, o_proj/down_proj row-parallel (W partial
  products over slices of K, each rounded to dtype, then summed as an all-reduce would: in rank order,
  the textbook ring's order, or in float64 rounded once). Needs linear=torch.
- router=topk|capacity:FACTOR:drop|capacity:FACTOR:reroute (mixture-of-experts models only; probes.moe.routing):
  topk = the model's own dropless top-k (the default); capacity = a GShard/Switch expert capacity
  ceil(FACTOR * tokens * top_k / n_experts) per expert, computed per batch, overflow dropped to the residual
  or re-routed to the next-best expert with room. On a model without experts: a UsageError when the run
  is prepared.
- round=PATTERN:FORMAT[+...]: round the output of the ops whose label matches PATTERN (fnmatch on
  "L3.down_proj", "final.lm_head") to FORMAT (a numerics.formats name): a planted fault, at a tap site.
Planted faults away from the tap sites (llm.faults has the details; python -m llm.faultstudy runs them):
- inner=PATTERN:STEP:FORMAT[+...]: a step inside the matching ops done in FORMAT: input (any op: its
  inputs rounded), cos_sin (rotary), mean_square (the norms: RMSNorm's variance), scores and
  softmax_sum (attn_core, attn=eager only: q.k^T*scale, the softmax's denominator).
- spread=COUNT:SEED:FORMAT: the inputs of COUNT sites, chosen among all (layer, op) sites by SEED,
  rounded to FORMAT (many small faults over layers).
- embed=FORMAT: the embedding lookup's output rounded (not a tap site).
- rope=FORMAT: the rotary angles position*inv_freq rounded before cos/sin (not a tap site).
An option that selects no op of the model (a PATTERN that matches no label, a STEP the matched ops
do not have, COUNT 0) is a UsageError when the run is prepared (llm.faults.plan), naming the option
and listing the model's op labels.
"""
from __future__ import annotations

import dataclasses
import fnmatch

import torch

from probes.errors import UsageError

__all__ = ["RunConfig", "parse_run", "register_op", "OP_REPLACEMENTS", "round_tensor", "DTYPES",
           "quantize_weights_fp8_"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_TORCH_FORMATS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
                  "float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2}


def _linear_float64(module, x):
    w = module.weight
    y = torch.nn.functional.linear(x.double(), w.double(),
                                   None if module.bias is None else module.bias.double())
    return y.to(x.dtype)


def _norm_float64(module, x):
    if hasattr(module, "module"):
        module = module.module
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", 1e-6))
    h = x.double()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return (module.weight.double() * h).to(x.dtype)


def _linear_batch_invariant(module, x):
    from llm.kernels import batch_invariant_linear      # imports triton only when it runs
    return batch_invariant_linear(module, x)


def _norm_fixed(module, x):
    from llm.mechkernels import rms_norm_rows
    return rms_norm_rows(module, x, "fixed")


def _norm_atomic(module, x):
    from llm.mechkernels import rms_norm_rows
    return rms_norm_rows(module, x, "atomic", 0)


_CUBLASLT_OPS = {}


def _cublaslt_op(option, tf32):
    """One CublasLtLinear per (option, tf32) in a process: its plans and picks are cached."""
    key = (option, tf32)
    if key not in _CUBLASLT_OPS:
        from llm.mechkernels import CublasLtLinear, parse_cublaslt
        rank, m = parse_cublaslt(option, option)
        _CUBLASLT_OPS[key] = CublasLtLinear(option, rank, m, tf32)
    return _CUBLASLT_OPS[key]


_FP8MM_OPS = {}


def _fp8mm_op(option):
    """One Fp8Linear per option in a process: its quantised weights are cached."""
    if option not in _FP8MM_OPS:
        from llm.mechkernels import Fp8Linear, parse_fp8mm
        _FP8MM_OPS[option] = Fp8Linear(option, parse_fp8mm(option, option))
    return _FP8MM_OPS[option]


# kind -> name -> replacement(fn, *inputs) -> output; None = the model's own op.
OP_REPLACEMENTS = {
    "linear": {"torch": None, "float64": _linear_float64, "batch_invariant": _linear_batch_invariant},
    "norm": {"torch": None, "float64": _norm_float64, "fixed": _norm_fixed, "atomic": _norm_atomic},
}


def register_op(kind: str, name: str, fn) -> None:
    """Plug in a kernel variant: `fn(module, *inputs)` replaces every op of class `kind` in a run
    configured with `kind=name` (e.g. register_op("linear", "batch_invariant", bi_linear))."""
    OP_REPLACEMENTS.setdefault(kind, {})[name] = fn


def round_tensor(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """x rounded (nearest-even, once) to format `fmt`, returned in x's dtype."""
    if fmt in _TORCH_FORMATS:
        return x.to(_TORCH_FORMATS[fmt]).to(x.dtype)
    if fmt == "tf32":
        if x.dtype != torch.float32:
            raise UsageError("tf32 rounding needs float32 outputs")
        b = x.view(torch.int32).to(torch.int64)
        lsb = (b >> 13) & 1
        b = ((b + 0xFFF + lsb) >> 13) << 13
        return torch.where(torch.isfinite(x), b.to(torch.int32).view(torch.float32), x)
    from numerics.formats import get_format, round_to_format
    try:
        f = get_format(fmt)
    except Exception:
        raise UsageError(f"unknown format {fmt!r} in round=") from None
    y = round_to_format(x.detach().double().cpu().numpy(), f, "nearest_even")
    return torch.from_numpy(y).to(device=x.device, dtype=x.dtype)


@torch.no_grad()
def quantize_weights_fp8_(model) -> None:
    for layer in model.model.layers:
        for mod in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                    layer.self_attn.o_proj, layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj):
            w = mod.weight.data
            for r0 in range(0, w.shape[0], 1024):       # bounded float32 temporaries
                wf = w[r0:r0 + 1024].float()
                scale = wf.abs().amax(dim=1, keepdim=True) / 448.0
                scale = torch.where(scale > 0, scale, torch.ones_like(scale))
                q = (wf / scale).to(torch.float8_e4m3fn)
                w[r0:r0 + 1024] = (q.float() * scale).to(w.dtype)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    device: str = "cpu"
    dtype: str = "float32"
    batch: int = 1
    padding: str = "left"
    attn: str = "sdpa"
    linear: str = "torch"
    norm: str = "torch"
    softmax: str = "torch"
    fma: str = "default"
    tf32: str = "default"
    weights: str = "native"
    rounds: tuple = ()          # ((pattern, format), ...)
    inner: tuple = ()           # ((pattern, step, format), ...)
    spread: tuple = ()          # (count, seed, format) or ()
    embed: str = ""             # format of the embedding output, "" = untouched
    rope: str = ""              # format of the rotary angles, "" = untouched
    router: str = ""            # MoE routing (probes.moe.routing), "" = not given: the model's own top-k
    seed: int = 0
    tp: int = 1                 # tensor-parallel ranks, emulated (llm.tp)
    tp_reduce: str = "rank"     # the emulated all-reduce's order (llm.tp.REDUCES)
    text: str = ""

    @property
    def torch_dtype(self):
        return DTYPES[self.dtype]

    def model_key(self):
        return (self.device, self.dtype, self.weights)

    def replacement(self, op_class: str):
        from llm import mechkernels as mk
        if op_class == "linear" and self.linear.startswith("cublaslt:"):
            return _cublaslt_op(self.linear, self.tf32 == "on")
        if op_class == "linear" and self.weights.startswith("int4:"):
            from llm.kernels import INT4_MATMUL_KERNELS, int4_matmul_linear
            if self.weights.split(":")[-1] in INT4_MATMUL_KERNELS:
                return int4_matmul_linear
        if op_class == "linear" and self.linear.startswith("fp8mm:"):
            return _fp8mm_op(self.linear)
        if op_class == "linear" and self.linear.startswith("emulate:"):
            from llm.emulate import emulated_linear
            return emulated_linear(self.linear.partition(":")[2])
        if op_class == "norm" and "norm" in self.fma_ops:
            order, _, seed = self.norm.partition(":")
            return mk.norm_op(order, int(seed or 0), fma=self.fma_variant)
        if op_class == "norm" and self.norm.startswith("atomic:"):
            return mk.norm_op("atomic", int(self.norm.partition(":")[2]))
        if op_class in ("linear", "norm"):
            return OP_REPLACEMENTS[op_class][getattr(self, op_class)]
        if op_class == "attention" and self.softmax != "torch":
            order, _, seed = self.softmax.partition(":")
            return mk.softmax_op(order, int(seed or 0))
        if op_class == "rotary" and "rotary" in self.fma_ops:
            return mk.rotary_fma(self.fma_variant)
        if op_class == "activation" and "mlp" in self.fma_ops:
            return mk.act_mul_fma(self.fma_variant)
        return None

    @property
    def fma_ops(self):
        """The ops fma= covers (llm.mechkernels.FMA_OPS), () for fma=default."""
        from llm import mechkernels as mk
        return mk.parse_fma(self.text, self.fma)[1]

    @property
    def fma_variant(self):
        return "fma" if self.fma.startswith("on") else "mul_add"

    def router_spec(self):
        """The probes.moe.routing.RouterSpec of `router=` (None when not given: the model's own top-k)."""
        if not self.router:
            return None
        from probes.moe.routing import parse_router
        return parse_router(self.router, f"run config {self.text!r}")

    def rounding_for(self, label: str):
        for pat, fmt in self.rounds:
            if fnmatch.fnmatchcase(label, pat):
                return fmt
        return None

    def as_dict(self):
        d = dataclasses.asdict(self)
        d["rounds"] = [list(r) for r in self.rounds]
        d["inner"] = [list(r) for r in self.inner]
        d["spread"] = list(self.spread)
        return d

    @classmethod
    def from_dict(cls, d):
        """The RunConfig of `as_dict(...)` (a trace's meta; keys it lacks take their defaults)."""
        d = dict(d)
        for k in ("rounds", "inner"):
            d[k] = tuple(tuple(r) for r in d.get(k, ()))
        d["spread"] = tuple(d.get("spread", ()))
        return cls(**d)


def _check_format(fmt, spec, key):
    try:
        round_tensor(torch.zeros(1, dtype=torch.float32), fmt)
    except UsageError:
        raise UsageError(f"run config {spec!r}: {key}: unknown format {fmt!r}") from None
    return fmt


def _parse_inner(spec, item, attn):
    from llm.faults import EAGER_STEPS, STEPS
    parts = item.split(":")
    if len(parts) != 3 or not all(parts):
        raise UsageError(f"run config {spec!r}: inner={item!r} is not PATTERN:STEP:FORMAT")
    pat, step, fmt = parts
    if step not in STEPS:
        raise UsageError(f"run config {spec!r}: inner={item}: step {step!r} not one of {', '.join(STEPS)}")
    if step in EAGER_STEPS and attn != "eager":
        raise UsageError(f"run config {spec!r}: inner={item}: {step} is a step of eager attention (attn=eager); "
                         f"attn={attn} fuses the softmax")
    return pat, step, _check_format(fmt, spec, "inner=" + item)


def _parse_spread(spec, value):
    parts = value.split(":")
    try:
        count, seed = int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        count = seed = None
    if len(parts) != 3 or count is None or not parts[2]:
        raise UsageError(f"run config {spec!r}: spread={value!r} is not COUNT:SEED:FORMAT (integers, a format)")
    if count < 1:
        raise UsageError(f"run config {spec!r}: spread={value} selects nothing (COUNT must be >= 1)")
    return count, seed, _check_format(parts[2], spec, "spread=" + value)


def parse_run(spec: str, default_device: str = "cpu") -> RunConfig:
    from probes.cli import resolve_device
    fields = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, eq, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not value:
            raise UsageError(f"run config {spec!r}: {part!r} is not key=value")
        if key in fields:
            raise UsageError(f"run config {spec!r}: {key} given twice")
        fields[key] = value
    known = {f.name for f in dataclasses.fields(RunConfig)} - {"rounds", "text"} | {"round"}
    unknown = set(fields) - known
    if unknown:
        raise UsageError(f"run config {spec!r}: unknown key(s) {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(sorted(known))})")
    kw = {"text": spec}
    kw["device"] = resolve_device(fields.get("device", default_device))
    dt = fields.get("dtype", "float32")
    if dt not in DTYPES:
        raise UsageError(f"run config {spec!r}: dtype {dt!r} not one of float32, bfloat16, float16")
    kw["dtype"] = str(DTYPES[dt]).replace("torch.", "")
    for k in ("batch", "seed", "tp"):
        if k in fields:
            try:
                kw[k] = int(fields[k])
            except ValueError:
                raise UsageError(f"run config {spec!r}: {k} must be an integer") from None
    if kw.get("batch", 1) < 1:
        raise UsageError(f"run config {spec!r}: batch must be >= 1")
    if kw.get("tp", 1) < 1:
        raise UsageError(f"run config {spec!r}: tp must be >= 1")
    if fields.get("weights", "").startswith("int4"):
        from llm.kernels import INT4_MATMUL_KERNELS, int4_kernel
        kernel = int4_kernel(fields["weights"], kw["device"])     # a UsageError naming the bad part or the kernel
        if kernel in INT4_MATMUL_KERNELS and fields.get("linear", "torch") != "torch":
            raise UsageError(f"run config {spec!r}: weights={fields['weights']} computes the decoder linears itself "
                             f"(the dequant probe's Triton int4 matmul): not with linear={fields['linear']}")
        kw["weights"] = fields.pop("weights")
    from llm.kernels import is_dequant_spec
    if is_dequant_spec(fields.get("weights", "")):
        from llm.kernels import parse_dequant_spec
        kw["weights"] = parse_dequant_spec(fields.pop("weights"), kw["device"])["canonical"]
    device_is_gpu = kw["device"].startswith("cuda")
    from llm.mechkernels import parse_cublaslt, parse_fp8mm
    for prefix, what, parse in (("cublaslt", "cuBLASLt, a CUDA library", parse_cublaslt),
                                ("fp8mm", "an FP8 GEMM (cuBLASLt)", parse_fp8mm)):   # GPU-only linears
        if fields.get("linear", "").startswith(prefix):
            if not device_is_gpu:
                raise UsageError(f"run config {spec!r}: linear={fields['linear']} runs {what}: not on "
                                 f"device={kw['device']} (available there: "
                                 f"{', '.join(OP_REPLACEMENTS['linear'])}, emulate:PROFILE)")
            parse(spec, fields["linear"])
            kw["linear"] = fields.pop("linear")
    if fields.get("linear", "").startswith("emulate:"):
        from llm.emulate import check_profile_for
        prof = fields["linear"].partition(":")[2]
        if not prof:
            raise UsageError(f"run config {spec!r}: linear=emulate:PROFILE needs a profile name or file")
        check_profile_for(prof, kw["dtype"])         # a UsageError naming what the profile lacks
        kw["linear"] = fields.pop("linear")
    from llm.mechkernels import parse_row_order
    for k in ("norm", "softmax"):
        if fields.get(k, "").startswith("atomic:"):
            parse_row_order(spec, fields[k], k)
            kw[k] = fields.pop(k)
    if "softmax" in fields:
        parse_row_order(spec, fields["softmax"], "softmax")
        kw["softmax"] = fields.pop("softmax")
    if kw.get("softmax", "torch") != "torch" and fields.get("attn", "sdpa") != "eager":
        raise UsageError(f"run config {spec!r}: softmax={kw['softmax']} replaces the eager attention's softmax: "
                         f"needs attn=eager (attn={fields.get('attn', 'sdpa')} fuses it)")
    if "fma" in fields:
        from llm.mechkernels import FMA_OPS, parse_fma
        mode, ops = parse_fma(spec, fields.pop("fma"))
        kw["fma"] = mode if ops in ((), FMA_OPS) else f"{mode}:{'+'.join(ops)}"
        if "norm" in ops and fields.get("norm", "torch") == "float64":
            raise UsageError(f"run config {spec!r}: fma={kw['fma']} computes the norm's steps in float32 through "
                             f"the FMA probe; not with norm=float64 (norm=torch, fixed or atomic)")
    if "tf32" in fields:
        t = fields.pop("tf32")
        if t not in ("default", "on", "off"):
            raise UsageError(f"run config {spec!r}: tf32={t} not one of default, on, off")
        if t != "default" and kw["dtype"] != "float32":
            raise UsageError(f"run config {spec!r}: tf32={t} applies to float32 runs, not dtype={kw['dtype']}")
        if t == "on" and not device_is_gpu:
            raise UsageError(f"run config {spec!r}: tf32=on needs a CUDA GPU's tensor cores, not device="
                             f"{kw['device']} (there: tf32=default or off)")
        kw["tf32"] = t
    choices = {"padding": ("left", "right"), "attn": ("sdpa", "eager"),
               "weights": ("native", "fp8", "int4:FORMULA:COMPUTE:gGROUP[:KERNEL]", "q4_0[:KERNEL]",
                           "q4_1[:KERNEL]",
                           "fp8:SCALING[:FORMAT][:VIA][:KERNEL]"),
               "linear": tuple(OP_REPLACEMENTS["linear"]) + ("emulate:PROFILE", "cublaslt:RANK[:mM] (GPU)",
                                                              "fp8mm:accurate|fast (GPU)"),
               "norm": tuple(OP_REPLACEMENTS["norm"]),
               "tp_reduce": ("rank", "ring", "float64")}
    for k, allowed in choices.items():
        if k in fields:
            if fields[k] not in allowed:
                raise UsageError(f"run config {spec!r}: {k}={fields[k]} not one of {', '.join(allowed)}")
            kw[k] = fields[k]
    if "round" in fields:
        rounds = []
        for item in fields["round"].split("+"):
            pat, colon, fmt = item.rpartition(":")
            if not colon or not pat:
                raise UsageError(f"run config {spec!r}: round={item!r} is not PATTERN:FORMAT")
            _check_format(fmt, spec, "round=" + item)
            rounds.append((pat, fmt))
        kw["rounds"] = tuple(rounds)
    if "inner" in fields and kw.get("softmax", "torch") != "torch":
        from llm.faults import EAGER_STEPS
        if any(f":{st}:" in fields["inner"] for st in EAGER_STEPS):
            raise UsageError(f"run config {spec!r}: inner= attention steps compute torch's softmax; not with "
                             f"softmax={kw['softmax']}")
    if "inner" in fields:
        kw["inner"] = tuple(_parse_inner(spec, item, kw.get("attn", "sdpa")) for item in fields["inner"].split("+"))
    if "spread" in fields:
        kw["spread"] = _parse_spread(spec, fields["spread"])
    for k in ("embed", "rope"):
        if k in fields:
            kw[k] = _check_format(fields[k], spec, f"{k}={fields[k]}")
    if "router" in fields:
        from probes.moe.routing import parse_router
        kw["router"] = parse_router(fields["router"], f"run config {spec!r}").text
    if kw.get("linear") == "batch_invariant" and kw["dtype"] not in ("bfloat16", "float16"):
        raise UsageError(f"run config {spec!r}: linear=batch_invariant supports dtype bfloat16 or float16, "
                         f"not {kw['dtype']}")
    if "tp_reduce" in kw and kw.get("tp", 1) == 1:
        raise UsageError(f"run config {spec!r}: tp_reduce={kw['tp_reduce']} selects nothing without tp=W (W >= 2)")
    if kw.get("tp", 1) > 1 and kw.get("linear", "torch") != "torch":
        raise UsageError(f"run config {spec!r}: tp={kw['tp']} computes the linears itself (llm.tp); "
                         f"it needs linear=torch, not linear={kw['linear']}")
    if kw.get("tp", 1) > 1 and kw.get("softmax", "torch") != "torch":
        raise UsageError(f"run config {spec!r}: tp={kw['tp']} computes attn_core itself (llm.tp); "
                         f"it needs softmax=torch, not softmax={kw['softmax']}")
    return RunConfig(**kw)
