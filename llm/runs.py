"""One run = one model computed under one RunConfig on one prompt, with a tap on every op.

`Run.forward(tap)` gives the prompt's float32 logits [T, vocab]. The prompt is row 0 of the batch,
at positions `region` (left or right padding); position ids follow the attention mask, so the prompt
sees positions 0..T-1 in any batch. Taps (all in this file):

- RunTap(run): the run's own computation (kernel replacements, planted roundings, faults inside ops
  from llm.faults; the run's faults outside the op map are forward hooks installed by Run.forward).
- record=dict: also store each op's output at the prompt (cast to `record_dtype`, on the device).
- patch=set of sites, ref=dict: put the reference's output (cast to this run's dtype) in place of
  this run's at those sites (causal attribution).
- local=list: at every site, compare this run's op output with the reference's, then put the
  reference's in (so every op sees the reference's inputs): per-op local error in one forward;
  with own=dict also keep each op's output fed the reference's inputs (its own error = that - reference).
- correct=set of sites, own=dict, ref=dict: add the op's own error taken out (reference - own, in
  float32, rounded once to this run's dtype) to its output at those sites: the run with those ops
  computed as the reference computes them (to first order), everything else as is.
- inject=set of sites, own=dict, ref=dict (a tap of the REFERENCE run, `ref` recorded in its own
  dtype): the op's own error (own - ref, in float32) added to its output, held in the reference's
  dtype: the reference with exactly those ops' own errors put in, everything else computed as the
  reference computes it. With one site this is the variant op's output on the reference's inputs;
  with several (a layer, a class) the errors add up (a later op does not overwrite an earlier one's).
"""
from __future__ import annotations

import torch

from llm.faults import InnerFault, plan, untapped_hooks
from llm.opmap import OP_CLASS, install, plain_tap
from llm.runconfig import RunConfig, round_tensor

__all__ = ["Run", "RunTap", "NonFiniteError", "first_nonfinite", "ulp_distance_max"]

from probes.errors import DriftscopeError, UsageError


class NonFiniteError(DriftscopeError):
    pass


def _map(fn, x, *rest):
    if isinstance(x, tuple):
        return tuple(fn(a, *(r[i] for r in rest)) for i, a in enumerate(x))
    return fn(x, *rest)


_INT_VIEW = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16,
             torch.float64: torch.int64}


def _ordered(x):
    i = x.contiguous().view(_INT_VIEW[x.dtype]).to(torch.int64)
    bits = torch.finfo(x.dtype).bits
    mag = i & ((1 << (bits - 1)) - 1)
    return torch.where(i < 0, -mag, mag)


def ulp_distance_max(a, b):
    """max |ulp distance| between same-dtype tensors a and b (0-d int64 tensor, on the device)."""
    return (_ordered(a) - _ordered(b)).abs().max()


def local_metrics(out, ref):
    """0-d tensors: max ulp (in out's dtype), max |d| / max |ref|, cosine, of out vs ref (cast)."""
    outs = out if isinstance(out, tuple) else (out,)
    refs = ref if isinstance(ref, tuple) else (ref,)
    ulp = torch.stack([ulp_distance_max(o, r.to(o.dtype)) for o, r in zip(outs, refs)]).max()
    o = torch.cat([x.reshape(-1).double() for x in outs])
    r = torch.cat([x.reshape(-1).double() for x in refs])
    rel = (o - r).abs().max() / r.abs().max().clamp_min(1e-300)
    cos = (o @ r) / (o.norm() * r.norm()).clamp_min(1e-300)
    return ulp, rel, cos


class RunTap:
    def __init__(self, run, *, record=None, record_dtype=None, patch=None, ref=None, local=None,
                 own=None, correct=None, inject=None):
        self.run = run
        self.cfg = run.cfg
        self.record, self.record_dtype = record, record_dtype or run.dtype
        self.patch, self.ref, self.local = patch, ref, local
        self.own, self.correct, self.inject = own, correct, inject
        self.rules = run.rules

    def __call__(self, layer, op, fn, *inputs):
        site = (layer, op)
        rep, fmt, inner = self.rules[site]
        if inner is not None:
            out = inner(rep, fn, *inputs)
        else:
            out = rep(fn, *inputs) if rep is not None else fn(*inputs)
        if fmt is not None:
            out = _map(lambda t: round_tensor(t, fmt), out)
        run = self.run
        if self.record is not None:    # op outputs are fresh tensors nobody writes to: a view suffices
            keep = (lambda t: run.select(t)) if run.full else (lambda t: run.select(t).clone())
            self.record[site] = _map(lambda t: keep(t) if t.dtype == self.record_dtype
                                     else run.select(t).to(self.record_dtype), out)
        if self.local is not None:
            ref = self.ref[site]
            mine = _map(run.select, out)
            self.local.append((site,) + local_metrics(mine, ref))
            if self.own is not None:          # this op fed the reference's inputs (see correct=, inject=)
                self.own[site] = mine if run.full else _map(torch.clone, mine)
            out = _map(run.put, out, ref)
        elif self.patch is not None and site in self.patch:
            out = _map(run.put, out, self.ref[site])
        elif self.correct is not None and site in self.correct:
            out = _map(lambda t, r, m: run.add(t, r.float() - m.float()), out, self.ref[site], self.own[site])
        elif self.inject is not None and site in self.inject:
            out = _map(lambda t, r, m: run.add(t, m.to(r.device).float() - r.float()), out, self.ref[site],
                       self.own[site])
        return out


class Run:
    def __init__(self, loaded, cfg: RunConfig, prompt_ids: list[int]):
        self.loaded, self.cfg = loaded, cfg
        self.model = loaded.model
        self.opmap = install(self.model)
        self.dtype = cfg.torch_dtype
        self.device = cfg.device
        self.n_layers = self.opmap.n_layers
        self.layer_ops = self.opmap.layer_ops
        self.sites = self.opmap.sites()
        self.router = cfg.router_spec()             # MoE routing rule (None: the model's own top-k)
        if self.router is not None and not self.opmap.moe:
            raise UsageError(f"run config {cfg.text!r}: router={cfg.router}: model {loaded.name} has no experts "
                             "(router= is for mixture-of-experts models: tiny-mixtral, mixtral-8x7b-random)")
        self.routing_log = None                     # a list: every experts op appends (layer, Routing) to it
        # {site: {step: format}}; an option selecting nothing raises
        self.faults = plan(cfg, self.n_layers, self.layer_ops)
        self.rules = {}
        tp = getattr(cfg, "tp", 1)
        if tp > 1:
            from llm.tp import check_tp
            check_tp(self.model.config, tp)
        for site in self.sites:
            rep = cfg.replacement(OP_CLASS[site[1]])
            if tp > 1:                                 # tensor parallelism, emulated (llm.tp)
                from llm.tp import replacement as tp_replacement
                rep = tp_replacement(site[1], tp, cfg.tp_reduce) or rep
            inner = InnerFault(self.faults[site]) if site in self.faults else None
            self.rules[site] = (rep, cfg.rounding_for(self.opmap.label(site)), inner)
        self.set_prompt(prompt_ids)

    # batch ----------------------------------------------------------------------------------
    def set_prompt(self, prompt_ids):
        cfg = self.cfg
        T = len(prompt_ids)
        rows = [list(prompt_ids)]
        if cfg.batch > 1:
            g = torch.Generator().manual_seed(cfg.seed)
            vocab = self.model.config.vocab_size
            lo, hi = max(1, T // 2), max(2, (3 * T) // 2)
            for _ in range(cfg.batch - 1):
                n = int(torch.randint(lo, hi + 1, (1,), generator=g))
                rows.append(torch.randint(3, vocab, (n,), generator=g).tolist())
        width = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            a = width - len(r) if cfg.padding == "left" else 0
            ids[i, a:a + len(r)] = torch.tensor(r)
            mask[i, a:a + len(r)] = 1
        a = width - T if cfg.padding == "left" else 0
        self.region = (0, a, a + T)
        self.full = len(rows) == 1
        self.input_ids = ids.to(self.device)
        self.attention_mask = mask.to(self.device)
        self.position_ids = (mask.cumsum(-1) - 1).clamp_min(0).to(self.device)
        self.T = T

    def select(self, t):
        row, a, b = self.region
        return t[row, a:b]

    def put(self, t, ref):
        if self.full:
            return ref.to(t.dtype).unsqueeze(0)
        row, a, b = self.region
        t = t.clone()
        t[row, a:b] = ref.to(t.dtype)
        return t

    def add(self, t, delta):
        """t with `delta` added at the prompt (in float32, rounded once to t's dtype)."""
        if self.full:
            return (t.float() + delta.float().unsqueeze(0)).to(t.dtype)
        row, a, b = self.region
        t = t.clone()
        t[row, a:b] = (t[row, a:b].float() + delta.float()).to(t.dtype)
        return t

    # forward --------------------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, tap=None, *, last_only=False):
        """float32 logits of the prompt [T, vocab] (or [vocab] of its last position)."""
        self.model.config._attn_implementation = self.cfg.attn
        self.opmap.tap = tap if tap is not None else RunTap(self)
        om = self.opmap
        om.router, om.routing_log = self.router, self.routing_log
        om.token_mask = None if self.full else self.attention_mask.bool()      # padding claims no expert slot
        hooks = untapped_hooks(self.model, self.cfg)
        tf32 = None
        if self.cfg.tf32 != "default" and str(self.device).startswith("cuda"):   # tf32=on|off (llm.mechkernels)
            from llm.mechkernels import tf32_context
            tf32 = tf32_context(self.cfg.tf32 == "on").__enter__()
        try:
            kw = {"logits_to_keep": 1} if (last_only and self.cfg.padding == "left") else {}
            out = self.model(input_ids=self.input_ids, attention_mask=None if self.full else self.attention_mask,
                             position_ids=self.position_ids, use_cache=False, **kw).logits
        finally:
            if tf32 is not None:
                tf32.__exit__(None, None, None)
            self.opmap.tap = plain_tap
            om.router = om.routing_log = om.token_mask = None
            for h in hooks:
                h.remove()
        if last_only:
            return out[0, -1].float() if kw else out[0, self.region[2] - 1].float()
        row, a, b = self.region
        return out[row, a:b].float()

    def record(self, record_dtype=None):
        cache = {}
        logits = self.forward(RunTap(self, record=cache, record_dtype=record_dtype))
        return logits, cache


def first_nonfinite(cache: dict, sites):
    """The first site (in execution order) whose recorded output has a NaN or Inf, else None."""
    flags = torch.stack([torch.stack([~torch.isfinite(t).all() for t in
                                      (cache[s] if isinstance(cache[s], tuple) else (cache[s],))]).any()
                         for s in sites]).cpu()
    bad = torch.nonzero(flags).flatten()
    return sites[int(bad[0])] if len(bad) else None
