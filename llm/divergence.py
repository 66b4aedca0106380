"""Why two served copies of one prompt diverged: their two batch contexts rebuilt at the first divergent token
and the logit difference attributed to ops (llm.attribute's machinery).

Copies A (a modal completion) and B (a divergent one) have the same tokens up to token d and differ at d. Each
computed token d in an engine step of its own (or the same step, in two rows): other requests packed beside
it, a different number of rows in every linear, a different packed attention. To rebuild those contexts
exactly, the traffic is replayed through the engine (arrivals are by engine step and the scheduler is
deterministic, so the replay makes the same batches; checked: the replayed logits of A and B at token d
must have the checksums the original run recorded). At the step where A computes token d, a StepContext
captures the step's model inputs and the KV cache entries it reads (cloned, before the step runs); likewise
for B. Both are then re-runnable forwards: restore the cache entries, run the model with the op taps
(llm.opmap), take the request's logits row. `EngineStepRun` gives such a context the interface of llm.runs.Run,
so `llm.attribute.attribute_runs(A, B, ...)` measures local errors and causal contributions as usual, the
batch context being the variant.

What the op rows mean here: the probe request's row of each op in that step (its last query token: the one
that produces the logits). Its attention reads keys and values that earlier steps wrote, in their own batch
contexts: that history enters as part of `attn_core`'s own error (its inputs q, k, v of this token are the
reference's, the cache it reads is the variant's). The replay runs after the whole traffic has been served
once; it stops as soon as both contexts are measured.
"""
from __future__ import annotations

import types

import torch

from llm.engine import row_checksums, run_engine
from llm.opmap import install, plain_tap
from llm.runs import Run, RunTap
from probes.errors import DriftscopeError

__all__ = ["StepContext", "EngineStepRun", "attribute_divergence", "ReplayError"]


class ReplayError(DriftscopeError):
    """The replay did not rebuild the original run's computation."""


def _clone(v):
    if isinstance(v, torch.Tensor):
        return v.clone()
    if isinstance(v, dict):
        return {k: _clone(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clone(x) for x in v]
    return v


class StepContext:
    """One engine step's forward, re-runnable: its model kwargs (cloned) and the KV cache entries it reads
    (cloned before the step ran); `forward()` puts those entries back and runs the model again."""

    def __init__(self, model, batch_data, span, logits_row):
        self.model = model
        self.cache = batch_data["cache"]
        self.kwargs = {k: _clone(v) for k, v in batch_data.items() if k != "cache"}
        if getattr(model, "_supports_logits_to_keep", lambda: False)():     # as the engine's ModelRunner does
            self.kwargs["logits_to_keep"] = self.kwargs["logits_indices"]
        self.span = span
        self.logits_row = logits_row
        self.saved = []
        reads = self.kwargs.get("read_index") or []
        seen = set()
        for layer, (g, j) in sorted(self.cache.layer_index_to_group_indices.items()):
            if g >= len(reads) or reads[g].numel() == 0 or (g, j) in seen:
                continue
            seen.add((g, j))
            idx = reads[g]
            self.saved.append((j, idx, self.cache.key_cache[j].index_select(0, idx).clone(),
                               self.cache.value_cache[j].index_select(0, idx).clone()))

    def restore(self):
        for j, idx, k, v in self.saved:
            self.cache.key_cache[j].index_copy_(0, idx, k)
            self.cache.value_cache[j].index_copy_(0, idx, v)

    @torch.inference_mode()
    def forward(self):
        """float32 logits [vocab] of the request's token in this step."""
        self.restore()
        out = self.model(**self.kwargs, cache=self.cache).logits      # [1, rows producing a token, vocab]
        if "logits_to_keep" not in self.kwargs:
            out = out[:, self.kwargs["logits_indices"], :]
        return out[0, self.logits_row].float()


class EngineStepRun(Run):
    """A StepContext as an llm.runs.Run (its select / put / add / record, RunTap's taps): the ops' rows of the
    request's last query token in that step, a row of the packed batch like a prompt row of a padded one."""

    def __init__(self, loaded, ctx: StepContext, label: str):          # Run.__init__ builds a prompt batch: not here
        self.loaded, self.ctx = loaded, ctx
        self.model = loaded.model
        self.opmap = install(self.model)
        self.dtype = next(self.model.parameters()).dtype
        self.device = str(next(self.model.parameters()).device)
        self.n_layers = self.opmap.n_layers
        self.layer_ops = self.opmap.layer_ops
        self.sites = self.opmap.sites()
        self.rules = {site: (None, None, None) for site in self.sites}     # (replacement, rounding, inner fault)
        self.cfg = types.SimpleNamespace(text=label, torch_dtype=self.dtype)
        self.full = False
        last = ctx.span[1] - 1
        self.region = (0, last, last + 1)
        self.T = 1

    def forward(self, tap=None, *, last_only=False):
        self.opmap.tap = tap if tap is not None else RunTap(self)
        try:
            logits = self.ctx.forward()
        finally:
            self.opmap.tap = plain_tap
        return logits if last_only else logits.unsqueeze(0)


def attribute_divergence(lm, traffic, run, ref_rid, var_rid, token_index, *, drill=2,
                         units=("op", "layer", "class"), cb_config=None) -> dict:
    """Replay `traffic` (served before as `run`, with logits recorded for both requests), rebuild the steps in
    which `ref_rid` and `var_rid` computed token `token_index`, check that the replay reproduces the recorded
    logits bit for bit, and attribute var's logit difference from ref to ops (correct mode: both contexts
    compute in one dtype)."""
    from llm.attribute import attribute_runs

    steps = {}
    for role, rid in (("ref", ref_rid), ("var", var_rid)):
        seen = run.seen.get(rid) or []
        if token_index >= len(seen) or token_index >= len(run.logits.get(rid, [])):
            raise ReplayError(f"{rid} has no recorded token {token_index}")
        steps[role] = seen[token_index][0]
    want = {rid: run.logits[rid][token_index]["checksum"] for rid in (ref_rid, var_rid)}
    contexts, result = {}, {}
    install(lm.model)                         # the op taps, bit-exact with the model's own forward

    def hook(step, model, batch_data, spans, rows):
        for role, rid in (("ref", ref_rid), ("var", var_rid)):
            if step == steps[role] and role not in contexts:
                contexts[role] = (rid, StepContext(model, batch_data, spans[rid], rows.index(rid)))
        if len(contexts) < 2:
            return False
        runs = {}
        for role, (rid, ctx) in contexts.items():
            got = int(row_checksums(ctx.forward()[None])[0])
            if got != want[rid]:
                raise ReplayError(f"the replayed step {steps[role]} gave {rid} other logits than the served run "
                                  f"(checksum {got} vs {want[rid]}): the engine did not repeat its computation")
            runs[role] = EngineStepRun(lm, ctx, f"{rid} at engine step {steps[role]}")
        res = attribute_runs(runs["ref"], runs["var"], [0], lm.tokenizer, gen_steps=0, units=units,
                             drill=drill, modes=("correct",), progress_desc="divergence")
        result.update(res)
        return True

    run_engine(lm.model, traffic, tracked=(ref_rid, var_rid), record_logits=False, step_hook=hook, cb_config=cb_config)
    if not result:
        raise ReplayError(f"the replay never reached steps {steps}")
    result.update({"reference": ref_rid, "variant": var_rid, "token_index": token_index,
                   "reference_step": steps["ref"], "variant_step": steps["var"],
                   "reference_batch": run.seen[ref_rid][token_index][1:],
                   "variant_batch": run.seen[var_rid][token_index][1:]})
    return result
