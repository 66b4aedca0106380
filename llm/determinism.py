"""Deterministic mode: batch-invariant kernels under every PyTorch model, switched on through torch.library.

    with llm.deterministic() as mode:          # or --deterministic / --modes deterministic on the llm CLIs
        out = model.generate(...)              # or transformers' continuous-batching engine, or any model
    mode.summary()["deterministic"]            # False if anything the mode does not cover ran (with warnings)

Why: a served request's logits change with the batch it is computed in (llm.serve measures it): a linear
with more rows picks another cuBLAS kernel, a reduction another split, the packed attention of continuous
batching reduces over a longer row. Batch invariance - row i's result depends on row i's data only - makes
the same request give the same bits in every batch, so every copy of a prompt gives one completion.

How: as thinking-machines-lab's batch_invariant_ops does, `torch.library.Library("aten", "IMPL")` registers
new CPU and CUDA kernels for the aten ops below, for as long as the mode is on (the registrations are
destroyed on exit, which restores the shipped kernels). The model is not touched; the mode works in any
thread (the engine's generation thread included), under no_grad and inference_mode.

| aten op | kernel | order |
|---|---|---|
| mm, addmm (F.linear) | matmul='auto' (the default): on CUDA tensors cuBLASLt with split-K off (1 KiB workspace, the heuristic's first split-K-1 pick; when probes._C has cuBLASLt), else probes.gemm batch_invariant_matmul (bf16 / fp16); 'cublaslt' or 'triton' forces one route | fixed K order per element, no split-K |
| mean.dim (RMSNorm) | probes.invariant row_mean | per row: lanes, then halving tree |
| _softmax, _log_softmax | probes.invariant softmax / log_softmax | per row, as mean |
| scaled_dot_product_attention | probes.invariant attention (attention='tiled': its tiled split kernel, a program's rows sharing key blocks) | per query row: its own key interval, key blocks aligned to its start, fixed KV split, splits combined in order |

Attention covers what transformers' `sdpa` and `paged|sdpa` (continuous batching, all requests packed with
a block-diagonal causal mask) pass: a mask whose allowed keys form one interval per query row. It never falls
back silently: a case no kernel covers (float32 or float64 matmul, a mask that is not one interval per row,
dropout) is computed by the shipped arithmetic, warns (DeterminismWarning, naming the op and the case) and
marks the mode's summary `deterministic: False`. Ops the mode does not replace at all (bmm, layer_norm,
sum, cumsum, index_add, ...) are found by `audit`: one call under a TorchDispatchMode that lists the aten
ops it ran (llm.serve audits the first engine steps).
"""
from __future__ import annotations

import collections
import contextlib
import functools
import threading
import warnings

import torch

from probes.errors import UsageError
from probes.ext import KernelInputError

__all__ = ["deterministic", "mode_context", "cublaslt_available", "MATMULS", "ATTENTIONS", "MODE_NAMES", "audit",
           "DeterministicMode", "DeterminismWarning", "COVERED_OPS", "REDUCING_OPS", "active_mode"]

COVERED_OPS = ("mm", "addmm", "mean.dim", "_softmax", "_log_softmax", "scaled_dot_product_attention")

#: aten ops whose result can depend on a reduction order (or on atomics), by overload packet name; the audit
#: flags those that ran and are not covered. Exact ops (max, argmax, topk, sort, gather) are not listed.
REDUCING_OPS = frozenset({
    "bmm", "baddbmm", "addbmm", "mv", "addmv", "dot", "vdot", "matmul", "linear", "einsum", "tensordot",
    "sum", "nansum", "prod", "mean", "var", "std", "var_mean", "std_mean", "norm", "linalg_vector_norm",
    "native_layer_norm", "native_group_norm", "native_batch_norm", "_fused_rms_norm", "rms_norm",
    "cumsum", "cumprod", "logsumexp", "logcumsumexp", "softmax", "log_softmax", "_softmax", "_log_softmax",
    "mm", "addmm", "_addmm_activation", "scaled_dot_product_attention",
    "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu",
    "_flash_attention_forward", "_efficient_attention_forward", "convolution", "embedding_bag",
    "index_add", "scatter_add", "scatter_reduce", "index_put", "_index_put_impl_",
})

_MATMUL_DTYPES = (torch.bfloat16, torch.float16)
#: the deterministic mode's matmul kernels (deterministic(matmul=...)) and the mode names llm's CLIs take
MATMULS = ("auto", "triton", "cublaslt")
ATTENTIONS = ("rows", "tiled")
MODE_NAMES = ("deterministic", "deterministic-triton", "deterministic-cublaslt", "deterministic-tiled",
              "deterministic-triton-tiled", "deterministic-cublaslt-tiled")
LT_WORKSPACE = 1024     # bytes: too small for any split-K reduction buffer


class DeterminismWarning(UserWarning):
    """An op or case the deterministic mode does not cover ran: the run is not deterministic."""


class DeterministicMode:
    """Counts what the mode's kernels computed and what they did not cover."""

    def __init__(self, matmul: str = "auto", attention: str = "rows"):
        self.matmul, self.attention = matmul, attention
        self.calls = collections.Counter()
        self.matmul_routes = collections.Counter()   # "cublaslt" / "triton" -> the mm calls each computed
        self.uncovered = collections.Counter()      # "op: case" -> count
        self.audited = {}                            # op -> count (from audit)
        self._pending = []                           # device tensors: rows the attention kernel did not cover
        self._lock = threading.Lock()

    def count(self, op):
        self.calls[op] += 1

    def not_covered(self, op: str, case: str):
        key = f"{op}: {case}"
        with self._lock:
            first = key not in self.uncovered
            self.uncovered[key] += 1
        if first:
            warnings.warn(f"deterministic mode does not cover {key}; computed by the shipped kernel, so this run "
                          "is NOT deterministic", DeterminismWarning, stacklevel=3)

    def pending_rows(self, count_tensor, op):
        with self._lock:
            self._pending.append((op, count_tensor))

    def check(self):
        """Read the device-side counts of rows the kernels could not cover (one sync)."""
        with self._lock:
            pending, self._pending = self._pending, []
        bad = collections.Counter()
        for op, t in pending:
            n = int(t.sum().item())
            if n:
                bad[op] += n
        for op, n in bad.items():
            self.not_covered(op, f"{n} attention row(s) whose mask is not one interval of keys with 0 bias")

    @property
    def deterministic(self) -> bool:
        return not self.uncovered

    def summary(self) -> dict:
        self.check()
        return {"name": "deterministic", "matmul": self.matmul, "attention": self.attention,
                "matmul_routes": dict(self.matmul_routes), "deterministic": self.deterministic,
                "calls": dict(self.calls),
                "uncovered": dict(self.uncovered), "audited_uncovered_ops": dict(self.audited)}


_active: DeterministicMode | None = None
_active_lock = threading.Lock()


def active_mode() -> DeterministicMode | None:
    return _active


@functools.lru_cache(maxsize=None)
def _kernels():
    """(the matmul, a namespace of probes.invariant's kernels), imported from their modules by name (the package
    attribute `attention` is the submodule once anything imported probes.invariant.attention); resolved once, not
    on every op call."""
    import types
    from probes.gemm.triton_matmul import batch_invariant_matmul
    from probes.invariant.attention import attention
    from probes.invariant.rows import log_softmax, row_mean, softmax
    return batch_invariant_matmul, types.SimpleNamespace(attention=attention, row_mean=row_mean, softmax=softmax,
                                                         log_softmax=log_softmax)


# ---- the aten kernels ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _lt_no_split():
    """matmul='cublaslt': cuBLASLt with split-K off (a 1 KiB workspace, and the heuristic's first pick with split-K 1:
    vLLM's batch-invariant route on sm_90), one pick per (M, N, K) cached; llm.mechkernels.CublasLtLinear."""
    from llm.mechkernels import CublasLtLinear
    return CublasLtLinear("cublaslt:0", 0, workspace=LT_WORKSPACE, no_split=True,
                          label="deterministic matmul=cublaslt")


@functools.lru_cache(maxsize=None)
def cublaslt_available() -> str:
    """'' if probes._C can run the cuBLASLt route (a CUDA build with its GEMM module), else why not."""
    from probes import ext
    info = ext.gemm_build_info() if ext.available() else {"available": False, "reason": "probes._C is not built"}
    if not info["available"] or not ext.built_with_cuda():
        return info.get("reason") or "probes._C was built without CUDA"
    return ""


def _mm(a, b):
    mode = _active
    mode.count("mm")
    if a.dtype in _MATMUL_DTYPES and b.dtype == a.dtype and a.dim() == 2 and b.dim() == 2 and a.numel() and b.numel():
        route = mode.matmul
        if route == "auto":       # both routes are batch invariant; summary()["matmul_routes"] says which ran
            route = "cublaslt" if a.is_cuda and not cublaslt_available() else "triton"
        if route == "cublaslt":
            if a.is_cuda:
                mode.matmul_routes["cublaslt"] += 1
                return _lt_no_split().matmul(a, b.t())
            mode.not_covered("aten::mm", f"matmul=cublaslt on {a.device} tensors")
            return torch.ops.aten.bmm.default(a.unsqueeze(0), b.unsqueeze(0)).squeeze(0)
        mode.matmul_routes["triton"] += 1
        bim, _ = _kernels()
        return bim(a.contiguous(), b.t().contiguous())
    mode.not_covered("aten::mm", f"{a.dtype} {tuple(a.shape)} @ {b.dtype} {tuple(b.shape)}")
    return torch.ops.aten.bmm.default(a.unsqueeze(0), b.unsqueeze(0)).squeeze(0)   # bmm is not replaced


def _addmm(bias, a, b, *, beta=1, alpha=1):
    y = _mm(a, b)
    if alpha != 1:
        y = y * alpha
    return y + (bias if beta == 1 else bias * beta)


def _mean_dim(x, dim, keepdim=False, *, dtype=None):
    mode = _active
    mode.count("mean.dim")
    _, inv = _kernels()
    if x.dtype in (torch.float32, torch.bfloat16, torch.float16) and x.numel():
        return inv.row_mean(x, dim, keepdim=keepdim, dtype=dtype)
    mode.not_covered("aten::mean.dim", f"{x.dtype} {tuple(x.shape)}")
    y = x.to(dtype or x.dtype).sum(dim=dim if dim else None, keepdim=keepdim)
    n = x.numel() // max(1, y.numel()) if dim else x.numel()
    return y / n


def _softmax(x, dim, half_to_float):
    _active.count("_softmax")
    _, inv = _kernels()
    return inv.softmax(x, dim, half_to_float=half_to_float)


def _log_softmax(x, dim, half_to_float):
    _active.count("_log_softmax")
    _, inv = _kernels()
    return inv.log_softmax(x, dim, half_to_float=half_to_float)


def _sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, *, scale=None, enable_gqa=False):
    mode = _active
    mode.count("scaled_dot_product_attention")
    _, inv = _kernels()
    if dropout_p:
        mode.not_covered("aten::scaled_dot_product_attention", f"dropout_p={dropout_p}")
        return _sdpa_math(q, k, v, attn_mask, dropout_p, is_causal, scale)
    try:
        out, uncovered_rows = inv.attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale,
                                            tiled=mode.attention == "tiled")
    except KernelInputError as exc:
        mode.not_covered("aten::scaled_dot_product_attention", str(exc))
        return _sdpa_math(q, k, v, attn_mask, dropout_p, is_causal, scale)
    mode.pending_rows(uncovered_rows, "aten::scaled_dot_product_attention")
    return out


def _sdpa_math(q, k, v, attn_mask, dropout_p, is_causal, scale):
    """torch's math SDPA, written out (used only for cases the mode reports as not covered)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    rep = q.shape[-3] // k.shape[-3]
    k, v = k.repeat_interleave(rep, dim=-3), v.repeat_interleave(rep, dim=-3)
    s = torch.ops.aten.bmm.default(q.reshape(-1, *q.shape[-2:]), k.reshape(-1, *k.shape[-2:]).transpose(1, 2))
    s = s.reshape(*q.shape[:-1], k.shape[-2]).float() * scale
    if is_causal:
        s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device).tril(s.shape[-1] - s.shape[-2])
                          .logical_not(), float("-inf"))
    if attn_mask is not None:
        s = s.masked_fill(attn_mask.logical_not(), float("-inf")) if attn_mask.dtype == torch.bool else s + attn_mask
    p = torch.softmax(s, -1)
    if dropout_p:
        p = torch.nn.functional.dropout(p, dropout_p)
    o = torch.ops.aten.bmm.default(p.to(v.dtype).reshape(-1, *p.shape[-2:]), v.reshape(-1, *v.shape[-2:]))
    return o.reshape(*q.shape[:-1], v.shape[-1])


_IMPLS = {"mm": _mm, "addmm": _addmm, "mean.dim": _mean_dim, "_softmax": _softmax, "_log_softmax": _log_softmax,
          "scaled_dot_product_attention": _sdpa}


@contextlib.contextmanager
def deterministic(matmul: str = "auto", attention: str = "rows"):
    """Switch the deterministic mode on for the enclosed code (all threads); yields the DeterministicMode whose
    summary() says whether everything that ran was covered. Not re-entrant. `matmul`: 'auto' (the default:
    cuBLASLt with split-K off for CUDA tensors when probes._C has it, probes.gemm's batch_invariant_matmul
    otherwise; summary()["matmul_routes"] counts each), 'cublaslt' (GPU only: measured batch invariant, every row
    over M and inside the engine, and 0.96-1.20x cuBLAS on an H100, docs/results/h100-2026-12-06 and -06b) or
    'triton' (CPU and GPU: 57 of 70 Mistral (shape, M) cells at 0.9x cuBLAS or better on the H100). Each route is
    batch invariant; their bits differ from each other. `attention`: 'rows' (one program per query row, the
    default) or 'tiled' (probes.invariant's tiled split kernel: the rows of one request share each key block; the
    same per-row order; its GPU tests pass on an H100, 1.49x the row kernel's speed on a 128-row prefill)."""
    global _active
    if matmul not in MATMULS:
        raise UsageError(f"deterministic(matmul={matmul!r}): not one of {', '.join(MATMULS)}")
    if attention not in ATTENTIONS:
        raise UsageError(f"deterministic(attention={attention!r}): not one of {', '.join(ATTENTIONS)}")
    if matmul == "cublaslt" and cublaslt_available():
        raise UsageError("deterministic(matmul='cublaslt') runs cuBLASLt through probes._C's GEMM module, "
                         f"which this build lacks ({cublaslt_available()}); matmul='triton' runs here")
    with _active_lock:
        if _active is not None:
            raise UsageError("deterministic mode is already on")
        _kernels()                                    # import errors surface here, not inside a model
        mode = DeterministicMode(matmul, attention)
        lib = torch.library.Library("aten", "IMPL")
        try:
            with warnings.catch_warnings():      # "Overriding a previously registered kernel": that is the point
                warnings.filterwarnings("ignore", message=r"(?s).*previously registered kernel", category=UserWarning)
                for op, fn in _IMPLS.items():
                    for key in ("CPU", "CUDA"):
                        lib.impl(op, fn, key)
        except Exception:
            lib._destroy()
            raise
        _active = mode
    try:
        yield mode
    finally:
        with _active_lock:
            _active = None
            lib._destroy()
        mode.check()


@contextlib.contextmanager
def mode_context(name: str):
    """'default' -> nothing (yields None); 'deterministic[-triton|-cublaslt][-tiled]' -> deterministic() with
    matmul='auto' (or the route named) and attention='rows' (or 'tiled')."""
    if name == "default":
        yield None
    elif name in MODE_NAMES:
        parts = name.split("-")[1:]
        matmul = next((m for m in ("triton", "cublaslt") if m in parts), "auto")
        with deterministic(matmul=matmul, attention="tiled" if "tiled" in parts else "rows") as mode:
            yield mode
    else:
        raise UsageError(f"mode {name!r} is not one of default, {', '.join(MODE_NAMES)}")


# ---- audit ---------------------------------------------------------------------------------------------------------


class _OpRecorder(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name.split("::")[-1]
        overload = func._overloadname
        if _floating(args) and not _exact_product(name, args):
            self.ops[name if overload == "default" else f"{name}.{overload}"] += 1
        return func(*args, **(kwargs or {}))


def _floating(args):
    """Integer and bool reductions are exact in any order (wrapping integer adds are associative): only ops on
    floating-point tensors can depend on an order. (The engine wrapper's logit checksums are int64 sums.)"""
    t = next((a for a in args if isinstance(a, torch.Tensor)), None)
    return t is None or t.is_floating_point()


def _exact_product(name, args):
    """A matrix product over a contraction of length 1 (rotary's inv_freq x positions) adds nothing: exact."""
    if name not in ("mm", "bmm", "addmm", "baddbmm", "matmul"):
        return False
    a = args[1] if name in ("addmm", "baddbmm") else args[0]
    return isinstance(a, torch.Tensor) and a.dim() >= 2 and a.shape[-1] == 1


def audit(fn, *args, **kwargs):
    """Run fn(*args, **kwargs) once while recording the aten ops it calls (in this thread); returns (result,
    {op: count} of the reducing ops that ran and the mode does not replace). With the mode on, they are added
    to its `audited` record and each warns once (DeterminismWarning)."""
    rec = _OpRecorder()
    with rec:
        out = fn(*args, **kwargs)
    covered = set(COVERED_OPS)
    bad = {op: n for op, n in rec.ops.items() if op.split(".")[0] in REDUCING_OPS and op not in covered}
    mode = _active
    if mode is not None:
        for op, n in bad.items():
            mode.audited[op] = mode.audited.get(op, 0) + n
            mode.not_covered(f"aten::{op}", "not replaced by the mode (found by audit)")
    return out, bad
