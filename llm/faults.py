"""Planted faults that attribution was not built around: inside ops, spread over layers, outside the op map.

`round=PATTERN:FORMAT` (llm.runconfig) rounds an op's OUTPUT exactly at a tap site, the place the
attribution measures. The faults here act elsewhere, so they test whether attribution finds drift
it was not built around (python -m llm.faultstudy runs them; docs/llm.md has the results):

- `inner=PATTERN:STEP:FORMAT`: a step INSIDE the ops whose label matches PATTERN done in FORMAT:
  - `input` (any op): its floating-point inputs rounded before it computes (an activation quantised
    before a GEMM; not the producer's output: `h` feeds q_proj, k_proj and v_proj, and only the
    faulted consumer sees the rounded copy);
  - `cos_sin` (rotary): the cos and sin tables it multiplies by;
  - `mean_square` (input_norm, post_attn_norm, final_norm): the RMSNorm's mean of squares (the
    variance) before rsqrt;
  - `scores` (attn_core, attn=eager): q.k^T * scale before the mask and the softmax;
  - `softmax_sum` (attn_core, attn=eager): the softmax's denominator sum(exp(s - max)): the
    probabilities become p * S / round(S) (S in float32, the product in float64, rounded once), so
    with an exact FORMAT they are torch's softmax bit for bit. (The max is left alone: subtracting a
    rounded max is a shift the softmax cancels, only last-bit effects remain.)
  The attention steps need attn=eager: sdpa fuses the softmax.
- `spread=COUNT:SEED:FORMAT`: `input` rounded to FORMAT at COUNT sites chosen among all of the
  model's (layer, op) sites by torch.randperm under torch.Generator().manual_seed(SEED): many small
  faults spread over layers and op classes.
- `embed=FORMAT`: the embedding lookup's output (untapped; the first tapped ops that read it are
  L0.input_norm and L0.attn_residual's residual input).
- `rope=FORMAT`: the rotary angles position * inv_freq rounded before cos/sin, in the model's rotary
  embedding (untapped, computed once per forward and shared by every layer's rotary op).

With an exact FORMAT (float32 in a float32 run) every fault is the model's own computation, bit
for bit (tests/test_llm_faults.py). Every option that selects nothing is a UsageError naming the
option and listing the model's op labels (`plan`, run when a Run is prepared).
"""
from __future__ import annotations

import fnmatch
import functools

import torch

from llm.opmap import FINAL_OPS, LAYER_OPS, all_sites, site_label
from llm.runconfig import round_tensor
from probes.errors import UsageError

__all__ = ["STEPS", "EAGER_STEPS", "InnerFault", "plan", "spread_sites", "fault_sites", "untapped_hooks",
           "describe_labels", "rms_norm", "eager_attention"]

# step -> the ops it exists in (None: every op)
STEPS = {"input": None, "cos_sin": ("rotary",), "mean_square": ("input_norm", "post_attn_norm", "final_norm"),
         "scores": ("attn_core",), "softmax_sum": ("attn_core",)}
EAGER_STEPS = ("scores", "softmax_sum")


def describe_labels(n_layers: int, layer_ops=LAYER_OPS) -> str:
    """The op labels of a model with `n_layers` decoder layers (of ops `layer_ops`), compactly."""
    return (f"L0..L{n_layers - 1}.{{{', '.join(layer_ops)}}}, "
            f"final.{{{', '.join(FINAL_OPS)}}}")


def _selects_nothing(option: str, n_layers: int, why: str = "matches no op of this model",
                     layer_ops=LAYER_OPS) -> UsageError:
    return UsageError(f"{option} selects nothing: {why} (its op labels: {describe_labels(n_layers, layer_ops)})")


def spread_sites(spread, n_layers: int, layer_ops=LAYER_OPS):
    """The sites `spread=COUNT:SEED:FORMAT` faults, in execution order."""
    count, seed, fmt = spread
    sites = all_sites(n_layers, layer_ops)
    if count > len(sites):
        raise UsageError(f"spread={count}:{seed}:{fmt}: COUNT {count} is more than the model's {len(sites)} "
                         f"op sites ({describe_labels(n_layers, layer_ops)})")
    g = torch.Generator().manual_seed(seed)
    return [sites[i] for i in sorted(torch.randperm(len(sites), generator=g)[:count].tolist())]


def plan(cfg, n_layers: int, layer_ops=LAYER_OPS):
    """{site: {step: format}} of `cfg`'s faults inside ops (inner=, spread=), checked against the op
    map of a model with `n_layers` layers: a UsageError when a round=, inner= or spread= item selects
    no op. The first item that sets a site's step wins (as round= does). `layer_ops`: the ops of the
    model's decoder layers (llm.opmap.MOE_LAYER_OPS for a mixture of experts)."""
    sites = all_sites(n_layers, layer_ops)
    labels = {s: site_label(s, n_layers) for s in sites}
    for pat, fmt in cfg.rounds:
        if not any(fnmatch.fnmatchcase(label, pat) for label in labels.values()):
            raise _selects_nothing(f"round={pat}:{fmt}", n_layers, f"pattern {pat!r} matches no op of this model",
                                   layer_ops)
    out = {}
    for pat, step, fmt in cfg.inner:
        option = f"inner={pat}:{step}:{fmt}"
        matched = [s for s in sites if fnmatch.fnmatchcase(labels[s], pat)]
        if not matched:
            raise _selects_nothing(option, n_layers, f"pattern {pat!r} matches no op of this model", layer_ops)
        ops = STEPS[step]
        hit = [s for s in matched if ops is None or s[1] in ops]
        if not hit:
            raise _selects_nothing(option, n_layers, f"{step} is a step of {', '.join(ops)} only, and {pat!r} "
                                   f"matches {', '.join(labels[s] for s in matched[:6])}"
                                   + (", ..." if len(matched) > 6 else ""), layer_ops)
        if step == "mean_square" and cfg.norm != "torch":
            raise UsageError(f"{option}: mean_square computes the model's own RMSNorm; not with norm={cfg.norm}")
        for s in hit:
            out.setdefault(s, {}).setdefault(step, fmt)
    if cfg.spread:
        for s in spread_sites(cfg.spread, n_layers, layer_ops):
            out.setdefault(s, {}).setdefault("input", cfg.spread[2])
    return out


def fault_sites(cfg, n_layers: int, layer_ops=LAYER_OPS):
    """The tapped sites where `cfg`'s faults act (round=, inner=, spread=) or, for faults outside the
    op map (embed=, rope=), the first tapped ops that read their result: where a correct attribution
    points. Execution order."""
    found = set(plan(cfg, n_layers, layer_ops))
    found |= {s for s in all_sites(n_layers, layer_ops) if cfg.rounding_for(site_label(s, n_layers)) is not None}
    if cfg.embed:
        found |= {(0, "input_norm"), (0, "attn_residual")}
    if cfg.rope:
        found |= {(i, "rotary") for i in range(n_layers)}
    return [s for s in all_sites(n_layers, layer_ops) if s in found]


# ------------------------------------------------------------------------------------------------
# inside ops


def rms_norm(module, x, mean_square: str):
    """The llama/mistral RMSNorm (transformers' forward, op for op) with its mean of squares rounded
    to `mean_square`."""
    dtype = x.dtype
    h = x.to(torch.float32)
    variance = round_tensor(h.pow(2).mean(-1, keepdim=True), mean_square)
    h = h * torch.rsqrt(variance + module.variance_epsilon)
    return module.weight * h.to(dtype)


def eager_attention(steps: dict):
    """transformers' eager attention (llama's eager_attention_forward, op for op) with `scores` and/or
    `softmax_sum` done in the formats `steps` gives: an attention interface for the attn_core op."""
    from transformers.models.llama.modeling_llama import repeat_kv

    def attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        key_states = repeat_kv(key, module.num_key_value_groups)
        value_states = repeat_kv(value, module.num_key_value_groups)
        scores = torch.matmul(query, key_states.transpose(2, 3)) * scaling
        if "scores" in steps:
            scores = round_tensor(scores, steps["scores"])
        if attention_mask is not None:
            scores = scores + attention_mask
        p = torch.nn.functional.softmax(scores, dim=-1, dtype=torch.float32)
        if "softmax_sum" in steps:
            s32 = scores.float()
            total = torch.exp(s32 - s32.amax(-1, keepdim=True)).sum(-1, keepdim=True)
            p = (p.double() * (total.double() / round_tensor(total, steps["softmax_sum"]).double())).float()
        p = p.to(query.dtype)
        out = torch.matmul(p, value_states).transpose(1, 2).contiguous()
        return out, p

    return attention


class InnerFault:
    """One op computed with some of its steps in lower precision ({step: format}, see STEPS).
    Called by llm.runs.RunTap in place of the op: `fault(replacement, fn, *inputs)`."""

    def __init__(self, steps: dict):
        self.steps = dict(steps)

    def __call__(self, rep, fn, *inputs):
        st = self.steps
        if "input" in st:
            inputs = tuple(round_tensor(x, st["input"]) for x in inputs)
        if "cos_sin" in st:                              # rotary(q, k, cos, sin)
            inputs = inputs[:2] + tuple(round_tensor(x, st["cos_sin"]) for x in inputs[2:])
        if "mean_square" in st:                          # layer norms are modules, final_norm a bound forward
            return rms_norm(getattr(fn, "__self__", fn), inputs[0], st["mean_square"])
        if any(s in st for s in EAGER_STEPS):
            return fn(*inputs, attention=eager_attention(st))
        return rep(fn, *inputs) if rep is not None else fn(*inputs)


# ------------------------------------------------------------------------------------------------
# outside the op map


def _round_output(fmt, module, args, output):
    return round_tensor(output, fmt)


def _rope_hook(fmt, module, args, kwargs, output):
    """transformers' rotary embedding forward (default RoPE, op for op) with the angles rounded to `fmt`."""
    x = args[0]
    position_ids = kwargs["position_ids"] if "position_ids" in kwargs else args[1]
    inv = module.inv_freq[None, :, None].expand(position_ids.shape[0], -1, 1).to(dtype=torch.float, device=x.device)
    freqs = (inv @ position_ids[:, None, :].float()).transpose(1, 2)
    emb = torch.cat((round_tensor(freqs, fmt),) * 2, dim=-1)
    cos = emb.cos() * module.attention_scaling
    sin = emb.sin() * module.attention_scaling
    return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)


def untapped_hooks(model, cfg):
    """Forward hooks for `cfg`'s faults outside the op map (embed=, rope=); remove them after the forward."""
    handles = []
    if cfg.embed:
        handles.append(model.model.embed_tokens.register_forward_hook(functools.partial(_round_output, cfg.embed)))
    if cfg.rope:
        handles.append(model.model.rotary_emb.register_forward_hook(functools.partial(_rope_hook, cfg.rope),
                                                                    with_kwargs=True))
    return handles
