"""The probes' mechanisms as run-configuration variants (issue 20): reduction order, FMA contraction,
TF32, the cuBLASLt algorithm and GPU dequantisation, each built on the probes' own kernels.

- `norm=fixed|atomic[:SEED]` (llm.runconfig): the RMSNorm's row sum of squares through the reduction
  probe's kernels (probes.ext; on the CPU the extension's C++ reference of the same order):
  - fixed: `ext.fixed_order_sum` per row with ROW_GRID blocks of ROW_BLOCK threads and a final block of
    ROW_FINAL threads; exact model `numerics.orders.two_pass_tree_sum(row, acc="float32", grid=ROW_GRID,
    block=ROW_BLOCK, final_block=ROW_FINAL, chunk=4)`.
  - atomic: on a GPU `ext.atomic_sum` per row (the blocks' partials added by atomicAdd in the order
    they arrive: not reproducible run to run). On the CPU the arrival is EMULATED: pass 1 of the same
    kernel gives the ROW_GRID block partials (its workspace), added from +0 in a seeded random order
    (a permutation of the blocks per row, numpy.random.default_rng((SEED, n, row))), so a CPU run
    is one fixed draw of what atomics could do, reproducible; exact model
    `numerics.orders.atomic_tree_sum(row, arrival, acc="float32", grid=..., block=..., chunk=4)`.
  The norm is transformers' RMSNorm op for op (float32 squares, mean = sum / n in float32, rsqrt,
  weight * h.to(dtype)); with the order "torch" (`rms_norm_rows(..., order="torch")`) it is the
  model's own norm bit for bit.
- `softmax=torch|fixed|atomic[:SEED]` (attn=eager only): transformers' eager attention op for op with
  the softmax's row sums of exp(s - max) through the same kernels (probabilities e / sum in float32,
  rounded to the dtype); `torch`: torch.softmax, the eager default.
- `fma=on|off` (default: the model's own, unfused on the CPU): the rotary rotation x*cos +
  rotate_half(x)*sin through the FMA probe's `dot` program of the extension (probes.fma.kernels.dot;
  k = 2: acc = op(rotate_half(x), sin, +0) = round(rotate_half(x)*sin), then op(x, cos, acc)); on
  = `fma` (one rounding: fma(x, cos, round(rotate_half(x)*sin))), off = `mul_add` (two roundings, what
  torch's unfused ops compute). Exact model: numerics.fma_programs.dot(a, b, fmt, variant).
  `fma=on|off` applies to every covered op, `fma=on:OPS` / `off:OPS` to some (OPS '+'-joined of rotary,
  norm, mlp):
  - norm (`norm_fma_steps`): RMSNorm's one multiply-add, the mean plus epsilon, as the dot program
    op(s, float32(1/n), eps) (s the row sum of squares in the norm= order): on = round(s*(1/n) + eps),
    off = round(round(s*(1/n)) + eps) = torch's round(s/n) + eps where n is a power of two; its scalings
    h*rsqrt and weight*h, products alone, through the dot program with k = 1.
  - mlp (`act_mul_fma`): act(gate) * up through the dot program with k = 1. A product alone has no add
    to contract: on and off are the same bits (tested), the default's too (up to the sign of a -0
    product: the program starts from +0).
  The residual adds are plain adds (no product to fuse), so no contraction applies to them.
- `tf32=on|off` (float32 runs on a GPU): torch.backends.cuda.matmul.allow_tf32 during the forward.
- `linear=cublaslt:RANK[:mM]` (GPU only): every linear op through the cuBLASLt heuristic's pick of
  rank RANK (0 = its default) for the op's (M, N, K) (probes.gemm.cublaslt.plan_for, the GEMM probe's
  GemmPlan), or with `:mM` the pick made for another M (what a batch change does to a linear) run at
  this M. An algorithm the heuristic did not return, or one that fails at this shape, is a UsageError
  naming the option and the picks it returned.
- `weights=int4:...` on a GPU: dequantised by probes.dequant.kernels.dequant_int4 (the extension's
  CUDA kernel) instead of numerics.dequant (llm.kernels.quantize_weights_int4_).
- `weights=q4_0|q4_1[:KERNEL]`, `weights=fp8:SCALING[:FORMAT][:VIA][:KERNEL]`: quantised by numerics.dequant,
  dequantised by the dequant probe's KERNEL (llm.kernels.dequant_weight, quantize_weights_dequant_).
"""
from __future__ import annotations

import zlib

import numpy as np
import torch

from probes.errors import UsageError

__all__ = ["ROW_GRID", "ROW_BLOCK", "ROW_FINAL", "ROW_ORDERS", "row_sums", "rms_norm_rows", "eager_softmax",
           "rotary_fma", "FMA_CHOICES", "FMA_OPS", "parse_fma", "fma_products", "norm_fma_steps",
           "act_mul_fma", "parse_row_order", "arrival_order", "CublasLtLinear", "parse_cublaslt",
           "tf32_context", "Fp8Linear", "parse_fp8mm", "quantize_fp8_tensor"]

ROW_GRID, ROW_BLOCK, ROW_FINAL = 8, 32, 32
ROW_ORDERS = ("torch", "fixed", "atomic")
FMA_CHOICES = ("default", "on", "off")
FMA_OPS = ("rotary", "norm", "mlp")


def parse_row_order(spec, value, key):
    """'fixed' | 'atomic' | 'atomic:SEED' | 'torch' -> (order, seed); a UsageError naming `key`."""
    order, _, seed = value.partition(":")
    if order not in ROW_ORDERS or (seed and order != "atomic"):
        raise UsageError(f"run config {spec!r}: {key}={value} not one of torch, fixed, atomic, atomic:SEED")
    try:
        return order, int(seed) if seed else 0
    except ValueError:
        raise UsageError(f"run config {spec!r}: {key}={value}: SEED must be an integer") from None


def arrival_order(seed: int, n: int, row: int, grid: int = ROW_GRID):
    """The emulated atomics' arrival order of the `grid` block partials of row `row` (length n)."""
    return np.random.default_rng((int(seed) & 0xFFFFFFFF, int(n), int(row))).permutation(grid)


def row_sums(x2d: torch.Tensor, order: str, seed: int = 0) -> torch.Tensor:
    """float32 row sums of the float32 [rows, n] tensor `x2d` in `order` (fixed | atomic), one
    reduction-probe kernel call per row (see the module docstring)."""
    from probes import ext
    if x2d.dtype != torch.float32 or x2d.dim() != 2:
        raise UsageError(f"row_sums: needs a 2-D float32 tensor, got {tuple(x2d.shape)} {x2d.dtype}")
    x2d = x2d.contiguous()
    rows, n = x2d.shape
    out = torch.empty(rows, dtype=torch.float32, device=x2d.device)
    ws = torch.empty(rows, ROW_GRID, dtype=torch.float32, device=x2d.device)
    gpu = x2d.is_cuda
    for r in range(rows):
        if order == "fixed" or (order == "atomic" and not gpu):
            ext.fixed_order_sum(x2d[r], grid=ROW_GRID, block=ROW_BLOCK, final_block=ROW_FINAL,
                                accumulate="float32", out=out[r:r + 1], workspace=ws[r])
        elif order == "atomic":
            ext.atomic_sum(x2d[r], grid=ROW_GRID, block=ROW_BLOCK, accumulate="float32", out=out[r:r + 1])
        else:
            raise UsageError(f"row order {order!r} not one of fixed, atomic")
    if order == "atomic" and not gpu:          # emulated arrival: the partials added in a seeded order
        perm = torch.from_numpy(np.stack([arrival_order(seed, n, r) for r in range(rows)]))
        p = ws.gather(1, perm.to(ws.device))
        s = torch.zeros(rows, dtype=torch.float32)
        for j in range(ROW_GRID):
            s = s + p[:, j]
        out = s
    return out


def _norm_module(fn):
    return getattr(fn, "__self__", fn)


def rms_norm_rows(fn, x, order: str, seed: int = 0, fma: str | None = None):
    """transformers' llama/mistral RMSNorm op for op, its sum of squares in `order` (torch: the model's
    own `h.pow(2).mean(-1)`). fma = 'fma' | 'mul_add': the mean-plus-epsilon and the two scalings through
    the FMA probe's dot program (norm_fma_steps); None: torch's ops."""
    module = _norm_module(fn)
    dtype = x.dtype
    h = x.to(torch.float32)
    sq = h.pow(2)
    if order == "torch":
        s = sq.sum(-1, keepdim=True) if fma else None
        variance = None if fma else sq.mean(-1, keepdim=True)
    else:
        n = sq.shape[-1]
        s = row_sums(sq.reshape(-1, n), order, seed).reshape(*sq.shape[:-1], 1)
        variance = None if fma else s / n
    if fma:
        return norm_fma_steps(h, s, module.variance_epsilon, module.weight, fma)
    h = h * torch.rsqrt(variance + module.variance_epsilon)
    return module.weight * h.to(dtype)


def norm_op(order, seed=0, fma=None):
    """A `norm=` replacement (llm.runconfig.register_op signature: fn(module, x))."""
    def rep(fn, x):
        return rms_norm_rows(fn, x, order, seed, fma)
    rep.__name__ = f"rms_norm_{order}" + (f"_{fma}" if fma else "")
    return rep


def softmax_rows(scores, order: str, seed: int = 0):
    """float32 softmax along the last axis with the row sums in `order` (torch: torch.softmax)."""
    if order == "torch":
        return torch.nn.functional.softmax(scores, dim=-1, dtype=torch.float32)
    s32 = scores.float()
    e = torch.exp(s32 - s32.amax(-1, keepdim=True))
    n = e.shape[-1]
    total = row_sums(e.reshape(-1, n), order, seed).reshape(*e.shape[:-1], 1)
    return e / total


def eager_softmax(order: str, seed: int = 0):
    """transformers' eager attention (llama's eager_attention_forward, op for op) with its softmax from
    softmax_rows(order): an attention interface for the attn_core op."""
    from transformers.models.llama.modeling_llama import repeat_kv

    def attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        key_states = repeat_kv(key, module.num_key_value_groups)
        value_states = repeat_kv(value, module.num_key_value_groups)
        scores = torch.matmul(query, key_states.transpose(2, 3)) * scaling
        if attention_mask is not None:
            scores = scores + attention_mask
        p = softmax_rows(scores, order, seed).to(query.dtype)
        out = torch.matmul(p, value_states).transpose(1, 2).contiguous()
        return out, p

    return attention


def softmax_op(order, seed=0):
    """An attn_core replacement: fn(q, k, v) with the eager attention of `order`."""
    def rep(fn, q, k, v):
        return fn(q, k, v, attention=eager_softmax(order, seed))
    rep.__name__ = f"softmax_{order}"
    return rep


# ---- FMA contraction: the rotary rotation through the FMA probe's dot program --------------------------

def _rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rotary_pairs(x, cos, sin):
    """(a, b) [elements, 2] for the dot program: row i = (rotate_half(x)_i, x_i) . (sin_i, cos_i), x in
    [B, H, T, D], cos/sin [B, 1, T, D]."""
    rh = _rotate_half(x)
    c, s = cos.expand_as(x), sin.expand_as(x)
    a = torch.stack((rh, x), dim=-1).reshape(-1, 2).contiguous()
    b = torch.stack((s, c), dim=-1).reshape(-1, 2).contiguous()
    return a, b


def rotary_fma(variant: str):
    """A rotary replacement: x*cos + rotate_half(x)*sin as probes.fma.kernels.dot of variant `fma`
    (contracted) or `mul_add` (not), inputs in [B, T, H, D] (views) as llm.opmap.rotary takes them."""
    from probes.fma import kernels as fma_kernels

    def one(x, c, s):
        a, b = rotary_pairs(x, c, s)
        out = torch.empty(a.shape[0], dtype=x.dtype, device=x.device)
        fma_kernels.dot(a, b, variant, out=out)
        return out.view(x.shape)

    def rep(fn, q, k, cos, sin):
        qh, kh = q.transpose(1, 2), k.transpose(1, 2)
        c, s = cos.unsqueeze(1), sin.unsqueeze(1)
        return one(qh, c, s).transpose(1, 2), one(kh, c, s).transpose(1, 2)

    rep.__name__ = f"rotary_{variant}"
    return rep


# ---- FMA contraction in the norm and the MLP (fma=on:norm, fma=on:mlp) ----------------------------------

def parse_fma(spec, value):
    """'default' | 'on' | 'off' | 'on:OPS' | 'off:OPS' (OPS: '+'-joined of FMA_OPS) -> (mode, ops);
    on / off alone = every op of FMA_OPS. A UsageError names the option and the choices."""
    mode, colon, ops = value.partition(":")
    form = f"default, on, off, on:OPS or off:OPS (OPS: {'+'.join(FMA_OPS)} or a part of it)"
    if mode not in FMA_CHOICES or (colon and mode == "default") or (colon and not ops):
        raise UsageError(f"run config {spec!r}: fma={value} not one of {form}")
    if mode == "default":
        return mode, ()
    chosen = tuple(ops.split("+")) if colon else FMA_OPS
    bad = [o for o in chosen if o not in FMA_OPS]
    if bad or len(set(chosen)) != len(chosen):
        raise UsageError(f"run config {spec!r}: fma={value}: {'+'.join(bad) or 'an op given twice'} "
                         f"(the ops: {', '.join(FMA_OPS)})")
    return mode, tuple(o for o in FMA_OPS if o in chosen)


def _dot(pairs_a, pairs_b, variant, dtype):
    """probes.fma.kernels.dot over rows of [elements, k] pairs, out in `dtype`."""
    from probes.fma import kernels as fma_kernels
    a, b = pairs_a.contiguous(), pairs_b.contiguous()
    out = torch.empty(a.shape[0], dtype=dtype, device=a.device)
    fma_kernels.dot(a, b, variant, out=out)
    return out


def fma_products(a, b, variant):
    """a * b element-wise (broadcast) as the dot program with k = 1: op(a, b, +0), one rounding in both
    variants (a product alone has no add to contract: fma and mul_add give the same bits; +0 start: a
    product that is -0 comes out +0)."""
    a, b = torch.broadcast_tensors(a, b)
    return _dot(a.reshape(-1, 1), b.reshape(-1, 1), variant, a.dtype).view(a.shape)


def _f32(v):
    return float(torch.tensor(v, dtype=torch.float32))


def norm_fma_steps(h, s, eps, weight, variant):
    """RMSNorm's elementwise steps through the FMA probe's dot program, h float32 [..., n], s its float32
    row sums of squares [..., 1]:
      ve = op(s, float32(1/n), op(eps, 1, +0)): the mean plus epsilon, k = 2 -- the one multiply-add of
           the norm: fma = round(s*(1/n) + eps), mul_add = round(round(s*(1/n)) + eps) (= torch's
           round(s/n) + eps where n is a power of two, 1/n exact);
      r = torch.rsqrt(ve); h = op(h, r, +0) (float32); out = op(weight, h.to(dtype), +0) (dtype): the two
           scalings, products alone (fma_products)."""
    n = h.shape[-1]
    rows = s.reshape(-1)
    a = torch.stack((torch.full_like(rows, _f32(eps)), rows), dim=-1)
    b = torch.stack((torch.ones_like(rows), torch.full_like(rows, _f32(1.0 / n))), dim=-1)
    ve = _dot(a, b, variant, torch.float32).view(s.shape)
    hn = fma_products(h, torch.rsqrt(ve), variant)
    hd = hn.to(weight.dtype)
    return fma_products(weight, hd, variant)


def act_mul_fma(variant):
    """An act_mul replacement: act(gate) (the model's own activation) times up through fma_products."""
    def rep(fn, g, u):
        return fma_products(fn.act(g), u, variant)
    rep.__name__ = f"act_mul_{variant}"
    return rep


# ---- TF32 ---------------------------------------------------------------------------------------------

class tf32_context:
    """torch.backends.cuda.matmul.allow_tf32 (and cuDNN's) set to `on` for a forward, restored after."""

    def __init__(self, on: bool):
        self.on = on

    def __enter__(self):
        self.old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = self.on
        torch.backends.cudnn.allow_tf32 = self.on
        return self

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.old
        return False


# ---- cuBLASLt algorithm -------------------------------------------------------------------------------

def parse_cublaslt(spec, value):
    """'cublaslt:RANK' | 'cublaslt:RANK:mM' -> (rank, m or None)."""
    parts = value.split(":")
    form = "cublaslt:RANK or cublaslt:RANK:mM (RANK: the heuristic's pick, 0 = its default; mM: the pick for M rows)"
    try:
        rank = int(parts[1])
        m = None
        if len(parts) == 3:
            if not parts[2].startswith("m"):
                raise ValueError
            m = int(parts[2][1:])
        elif len(parts) != 2:
            raise ValueError
    except (ValueError, IndexError):
        raise UsageError(f"run config {spec!r}: linear={value} is not {form}") from None
    if rank < 0 or (m is not None and m < 1):
        raise UsageError(f"run config {spec!r}: linear={value}: RANK must be >= 0 and M >= 1")
    return rank, m


_TORCH_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


class CublasLtLinear:
    """linear=cublaslt:RANK[:mM]: F.linear(x, W) + bias through the cuBLASLt algorithm the heuristic ranks
    RANK for (M, N, K) (M = the pick's M if given, else the op's), run by the GEMM probe's GemmPlan."""

    HEURISTIC_COUNT = 16
    WORKSPACE = 32 << 20

    def __init__(self, option: str, rank: int, m_pick=None, tf32: bool = False, workspace: int | None = None,
                 no_split: bool = False, label: str | None = None):
        self.option, self.rank, self.m_pick, self.tf32 = option, rank, m_pick, tf32
        self.label = label or f"linear={option}"
        self.workspace = self.WORKSPACE if workspace is None else workspace
        self.no_split = no_split        # take the heuristic's first pick with split-K 1 (llm.determinism)
        self._plans, self._algos, self._ws = {}, {}, {}

    def _plan(self, m, n, k, dtype, dev):
        from probes.gemm.cublaslt import plan_for
        key = (m, n, k, dtype, dev)
        if key not in self._plans:
            compute = "32f_fast_tf32" if (self.tf32 and dtype == "float32") else "32f"
            self._plans[key] = plan_for(m, n, k, dtype, compute, dev)
        return self._plans[key]

    def algo(self, m, n, k, dtype, dev):
        mp = self.m_pick or m
        key = (mp, n, k, dtype, dev)
        if key not in self._algos:
            heur = self._plan(mp, n, k, dtype, dev).heuristic(self.HEURISTIC_COUNT, self.workspace)
            picks = heur["picks"]
            if self.no_split:
                picks = [p for p in picks if p["splitk"] == 1]
            if self.rank >= len(picks):
                raise UsageError(f"{self.label}: the cuBLASLt heuristic returned {len(picks)} pick(s) for "
                                 f"M={mp} N={n} K={k} {dtype} (ranks 0..{len(picks) - 1}; status "
                                 f"{heur['status']}{', split-K 1 only' if self.no_split else ''}), no rank {self.rank}")
            self._algos[key] = picks[self.rank]
        return self._algos[key]

    def __call__(self, module, x):
        k = x.shape[-1]
        y = self.matmul(x.reshape(-1, k), module.weight)
        y = y.reshape(*x.shape[:-1], y.shape[-1])
        if module.bias is not None:
            y = y + module.bias
        return y

    def matmul(self, x2, w):
        """x2 (M, K) @ w (N, K)^T through the pick, in x2's dtype."""
        from probes import ext
        from probes.errors import NoGPUError
        if not x2.is_cuda:
            raise NoGPUError(f"{self.label} runs cuBLASLt: it needs CUDA tensors, not {x2.device}")
        dtype = _TORCH_NAMES.get(x2.dtype)
        if dtype is None or w.dtype != x2.dtype:
            raise UsageError(f"{self.label}: input {x2.dtype}, weight {w.dtype}: one of float32, "
                             "bfloat16, float16 for both")
        x2 = x2.contiguous()
        k = x2.shape[1]
        m, n = x2.shape[0], w.shape[0]
        dev = x2.device.index or 0
        pick = self.algo(m, n, k, dtype, dev)
        plan = self._plan(m, n, k, dtype, dev)
        ws = self._ws.get(x2.device)
        if ws is None:
            ws = self._ws[x2.device] = torch.empty(max(self.workspace, 1), dtype=torch.uint8, device=x2.device)
        y = torch.empty((m, n), dtype=x2.dtype, device=x2.device)
        wc = w.contiguous()
        status = plan.run(pick["algo"], x2.data_ptr(), wc.data_ptr(), y.data_ptr(), ws.data_ptr(),
                          self.workspace, ext.stream_of(x2))
        if status != "CUBLAS_STATUS_SUCCESS":
            from probes.gemm.cublaslt import describe
            raise UsageError(f"{self.label}: the pick {describe(pick)} (made for M={self.m_pick or m}) "
                             f"fails at M={m} N={n} K={k}: {status}")
        return y


# ---- FP8 GEMMs: fast accumulation on or off ---------------------------------------------------------------

FP8MM_CHOICES = ("accurate", "fast")


def parse_fp8mm(spec, value):
    """'fp8mm:accurate' | 'fp8mm:fast' -> use_fast_accum (bool)."""
    choice = value.partition(":")[2]
    if choice not in FP8MM_CHOICES:
        raise UsageError(f"run config {spec!r}: linear={value} is not fp8mm:accurate or fp8mm:fast (an FP8 GEMM "
                         "with cuBLASLt's fast accumulation off or on)")
    return choice == "fast"


def quantize_fp8_tensor(t: torch.Tensor):
    """numerics.dequant.quantize_fp8(t, 'float8_e4m3fn', 'tensor') in torch, on t's device: s = float32(amax /
    448) (1 where amax is 0), q = e4m3fn(float32(t / s)). The same bits as the numerics model (CPU test)."""
    amax = t.detach().abs().amax().double()
    s = (amax / 448.0).float()
    s = torch.where(s == 0, torch.ones_like(s), s)
    x = (t.double() / s.double()).float()
    if not torch.isfinite(x).all() or x.abs().amax() > 464:       # 464 would round past e4m3fn's 448
        raise UsageError("linear=fp8mm: a value overflows e4m3fn after scaling (refusing to clamp)")
    return x.to(torch.float8_e4m3fn), s


class Fp8Linear:
    """linear=fp8mm:accurate|fast (GPU, sm_89 or newer): every linear as an FP8 GEMM, torch._scaled_mm with per-tensor
    scales (cuBLASLt): the weight quantised to e4m3fn once (quantize_fp8_tensor, cached), the activations per call,
    the output in the model's dtype. `fast` turns on cuBLASLt's fast accumulation (CUBLASLT_MATMUL_DESC_FAST_ACCUM:
    Hopper's fp8 tensor cores then accumulate in fewer bits, the accumulator probe's subject); `accurate` leaves it
    off. The mechanism row fp8-fast-accum switches only that."""

    def __init__(self, option: str, fast: bool):
        self.option, self.fast = option, fast
        self._w = {}
        self._devices_ok = set()        # devices whose compute capability was checked (once, not every call)

    def __call__(self, module, x):
        from probes.errors import NoGPUError
        if not x.is_cuda:
            raise NoGPUError(f"linear={self.option} runs an FP8 GEMM (cuBLASLt): it needs CUDA tensors, not {x.device}")
        if x.device not in self._devices_ok:
            cap = torch.cuda.get_device_capability(x.device)
            if cap < (8, 9):
                raise UsageError(f"linear={self.option}: FP8 GEMMs need compute capability 8.9 or newer, this GPU is "
                                 f"sm_{cap[0]}{cap[1]}")
            self._devices_ok.add(x.device)
        w = module.weight
        k, n = x.shape[-1], w.shape[0]
        if k % 16 or n % 16:
            raise UsageError(f"linear={self.option}: FP8 GEMMs need K and N multiples of 16, this linear is "
                             f"N={n} K={k}")
        key = (w.data_ptr(), w._version, w.device)
        if key not in self._w:
            self._w[key] = quantize_fp8_tensor(w)
        wq, ws = self._w[key]
        x2 = x.reshape(-1, k)
        xq, xs = quantize_fp8_tensor(x2)
        y = torch._scaled_mm(xq, wq.t(), scale_a=xs, scale_b=ws, out_dtype=x.dtype, use_fast_accum=self.fast)
        y = y.reshape(*x.shape[:-1], n)
        if module.bias is not None:
            y = y + module.bias
        return y
