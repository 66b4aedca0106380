"""Requests through transformers' own continuous-batching engine, with what a drift experiment must see.

transformers 5.17 ships the engine (`transformers.generation.continuous_batching`: a scheduler, a paged KV
cache, chunked prefill, a background generation thread; `model.init_continuous_batching`). This module runs
it as a user does (`init_continuous_batching`, `add_request`, `get_result`, `stop`) and WRAPS it (instance
attributes of the manager's batch processor, no fork, no subclass) for three things it cannot express:

1. Arrivals by engine step. A server's batch composition is set by when requests arrive; for a run that
   another machine can repeat, arrivals are counted in engine steps, not seconds. `prepare_next_batch` is
   wrapped: before each step the requests whose arrival step has come are handed to `add_request` (the
   engine drains its queue at the start of that same call). When the engine is idle and requests are
   still to come, the clock jumps to the next arrival.
2. What each step computed: the requests in the batch, their query tokens, which ones produce a token.
3. The logits behind every token of the tracked requests (the probe copies): the top-2 values and ids and
   a 64-bit checksum of the whole row's bits (so "bitwise equal to decoding alone" is checked on every
   vocabulary entry without keeping the rows). `ModelRunner._sample` is wrapped; it receives the float32
   scores of the rows that produce a token, in batch order. This needs the engine's eager path (no CUDA
   graphs), which is its default with sdpa/eager attention (`decide_use_cuda_graphs`); a graph-captured
   engine is refused when logits are recorded.

Sampling at temperature > 0: the engine samples with `torch.multinomial` on the process's generator, so a
request's draw depends on the other rows of its batch. With `temperature > 0` the engine is run greedy and
the wrapped sampler adds Gumbel noise that is a hash of (request seed, position, vocabulary index) to
scores/T before the argmax: seeded per request, as SGLang's deterministic mode samples.

Where the engine falls short (docs/serving.md): no per-request seeded sampling (above); its async and CUDA
graph paths run the model outside Python, so nothing can be recorded there; the default on a GPU without
flash-attn is `paged|sdpa`, one SDPA call over all packed requests with a dense block-diagonal mask.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections import defaultdict

import torch

from llm.models import mix64
from probes.errors import UsageError

__all__ = ["Request", "EngineRun", "run_engine", "row_checksums", "gumbel_noise", "CHECKSUM"]

_CHECKSUM_SEED = 0x5EED
#: Which checksum the logit records hold (reports put it in their inputs, so two that differ are never compared).
CHECKSUM = "row_checksums/2: sum of bits x (mix64(v + 0x5EED) & 0x7FFF) + 1"


@dataclasses.dataclass
class Request:
    rid: str                 # unique request id
    kind: str                # "probe" | "background" | "alone"
    arrival: int             # engine step at which it is submitted
    prompt_ids: list
    max_new_tokens: int
    seed: int = 0            # sampling seed (temperature > 0)


@dataclasses.dataclass
class EngineRun:
    """What one engine run produced."""
    completions: dict        # rid -> list of generated token ids
    errors: dict             # rid -> error text (requests the engine failed)
    steps: list              # per engine step: {"requests", "q_tokens", "decode", "prefill"}
    seen: dict               # tracked rid -> per generated token: (step, batch requests, batch q tokens)
    logits: dict             # tracked rid -> per generated token: {"top": [[id, value], [id, value]], "checksum"}
    wall_s: float
    config: dict             # the engine's resolved settings that matter here
    audit: dict = dataclasses.field(default_factory=dict)   # reducing aten ops not replaced (audit_steps)


_weights_cache: dict = {}


def row_checksums(rows: torch.Tensor) -> torch.Tensor:
    """[n, V] float32 -> [n] int64: sum over v of bits(row[v]) * w[v] (wrapping), w a fixed hash of v below
    2^15. Equal rows give equal sums; rows that differ in any bit give different sums except with
    probability ~2^-64 per pair. Exact integer arithmetic: the same on every device."""
    if rows.dtype != torch.float32:
        raise ValueError("row_checksums needs float32 rows")
    v = rows.shape[-1]
    key = (v, rows.device)
    w = _weights_cache.get(key)
    if w is None:
        idx = torch.arange(v, dtype=torch.int64, device=rows.device)
        w = (mix64(idx + _CHECKSUM_SEED) & 0x7FFF) + 1
        _weights_cache[key] = w
    bits = rows.contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    return (bits * w).sum(dim=-1)


def gumbel_noise(seeds: torch.Tensor, positions: torch.Tensor, vocab: int) -> torch.Tensor:
    """[n] seeds, [n] positions -> [n, vocab] float32 Gumbel(0, 1) noise, a pure function of (seed, position,
    vocabulary index): the same noise for a request whatever else is in its batch."""
    idx = torch.arange(vocab, dtype=torch.int64, device=seeds.device)
    h = mix64(mix64(seeds[:, None] * 1_000_003 + positions[:, None]) + idx[None, :])
    u = ((h >> 40) & 0xFFFFFF).to(torch.float32) * (1.0 / 16777216.0) + (0.5 / 16777216.0)   # in (0, 1)
    return -torch.log(-torch.log(u))


class _Hooks:
    """The wrappers installed on one batch processor (see the module docstring)."""

    def __init__(self, manager, requests, tracked, record_logits, temperature, progress, step_hook=None,
                 audit_steps=0):
        self.manager = manager
        self.step_hook = step_hook
        self.audit_steps = audit_steps
        self.audited = 0                      # steps run under the audit so far (the clock may jump ahead)
        self.audit = collections.Counter()
        self.stop = threading.Event()
        self.hook_error = None
        self.pending = sorted(requests, key=lambda r: r.arrival)
        self.by_id = {r.rid: r for r in requests}
        self.next = 0
        self.step = 0
        self.tracked = set(tracked)
        self.record_logits = record_logits
        self.temperature = temperature
        self.steps = []
        self.seen = defaultdict(list)
        self.logits = defaultdict(list)
        self.rows = []          # rids of the rows that produce a token this step, in batch order
        self.progress = progress

    def install(self, bp):
        prepare, sample = bp.prepare_next_batch, bp.model_runner._sample
        bp.prepare_next_batch = lambda: self._prepare(bp, prepare)
        bp.model_runner._sample = lambda scores, output_ids: self._sample(scores, output_ids, sample)
        if self.step_hook is not None or self.audit_steps:
            compute = bp.model_runner.compute_batch
            bp.model_runner.compute_batch = lambda model, batch_data: self._compute(model, batch_data, compute)

    def _release(self, bp):
        idle = not bp.scheduler.has_pending_requests() and self.manager.input_queue.empty()
        if idle and self.next < len(self.pending):
            self.step = max(self.step, self.pending[self.next].arrival)     # nothing to do: jump ahead
        while self.next < len(self.pending) and self.pending[self.next].arrival <= self.step:
            r = self.pending[self.next]
            self.manager.add_request(r.prompt_ids, request_id=r.rid, max_new_tokens=r.max_new_tokens,
                                     eos_token_id=-1)
            self.next += 1

    def _prepare(self, bp, prepare):
        self._release(bp)
        ok = prepare()
        if not ok:
            return ok
        batch = bp.inputs_and_outputs.requests_in_batch
        q = sum(fs.query_length for fs in batch)
        n = len(batch)
        decode = sum(1 for fs in batch if fs.query_length == 1 and fs.has_new_token)
        self.steps.append({"requests": n, "q_tokens": q, "decode": decode, "prefill": n - decode})
        self.rows, self.spans, start = [], {}, 0
        for fs in batch:
            rid = fs.state.request_id
            self.spans[rid] = (start, start + fs.query_length)
            start += fs.query_length
            if fs.has_new_token:
                self.rows.append((rid, fs.state.position_offset))
                if rid in self.tracked:
                    self.seen[rid].append((self.step, n, q))
        self.step += 1
        if self.progress is not None:
            self.progress(self)
        return ok

    def _compute(self, model, batch_data, compute):
        """The step hook sees the step before it runs: step_hook(step, model, batch_data, spans, rows) with
        spans[rid] = (first, end) of the request's query tokens in the packed batch and rows the requests that
        produce a token, in logits order. A true return value stops the run (after this step)."""
        if self.step_hook is not None and not self.stop.is_set():
            try:
                if self.step_hook(self.step - 1, model, batch_data, self.spans, [r for r, _ in self.rows]):
                    self.stop.set()
            except BaseException as exc:          # reported by run_engine in the caller's thread
                self.hook_error = exc
                self.stop.set()
        if self.audited < self.audit_steps:
            self.audited += 1
            from llm.determinism import audit
            _, ops = audit(compute, model, batch_data)
            self.audit.update(ops)
            return None
        return compute(model, batch_data)

    def _sample(self, scores, output_ids, sample):
        rids = [rid for rid, _ in self.rows]
        if self.temperature > 0:
            dev = scores.device
            seeds = torch.tensor([self.by_id[r].seed for r in rids], dtype=torch.int64, device=dev)
            pos = torch.tensor([p for _, p in self.rows], dtype=torch.int64, device=dev)
            scores = scores / self.temperature + gumbel_noise(seeds, pos, scores.shape[-1])[None]
        if self.record_logits:
            idx = [i for i, r in enumerate(rids) if r in self.tracked]
            if idx:
                rows = scores[0, idx].float()
                top = torch.topk(rows, 2, dim=-1)
                sums = row_checksums(rows)
                tv, ti, cs = top.values.tolist(), top.indices.tolist(), sums.tolist()
                for j, i in enumerate(idx):
                    self.logits[rids[i]].append({"top": [[ti[j][0], tv[j][0]], [ti[j][1], tv[j][1]]],
                                                 "checksum": cs[j]})
        return sample(scores, output_ids)


class _LoopErrors(logging.Handler):
    """Keeps the exceptions transformers' generation loop logs ("Error in generation loop", with exc_info) while
    run_engine runs, so that a dead engine thread is reported with its cause, not only as stopped."""

    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def exception(self):
        for record in reversed(self.records):
            if record.exc_info and record.exc_info[1] is not None:
                return record.exc_info[1]
        return None


def run_engine(model, requests, *, tracked=(), record_logits=True, temperature=0.0, max_new_tokens=None,
               cb_config=None, progress=None, timeout_s=None, step_hook=None, audit_steps=0,
               attn_implementation="sdpa") -> EngineRun:
    """Run `requests` through `model`'s continuous-batching engine (arrivals by engine step) and return the
    completions, the per-step batch composition and, for the `tracked` request ids, what each of their
    tokens saw and the logits behind it. `step_hook` (see _Hooks._compute) sees every step before it runs
    and can end the run early (the unfinished requests are then left out of `completions`). The first
    `audit_steps` steps run under llm.determinism.audit (the reducing aten ops the deterministic mode does not
    replace are returned in EngineRun.audit, and reported to the mode when it is on). `attn_implementation`
    (default sdpa, the engine then runs `paged|sdpa`) is set on the model for the run (a model shared with other
    code may have been left on another one); the model's own setting is put back afterwards."""
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig
    from transformers.generation.continuous_batching.utils import WorkloadHints

    if not requests:
        raise UsageError("no requests to serve")
    ids = [r.rid for r in requests]
    if len(set(ids)) != len(ids):
        raise UsageError("request ids must be unique")
    if temperature < 0:
        raise UsageError(f"temperature must be >= 0, got {temperature}")
    mnt = max_new_tokens or max(r.max_new_tokens for r in requests)
    gen = GenerationConfig(max_new_tokens=mnt, do_sample=False, eos_token_id=-1, pad_token_id=0)
    hints = WorkloadHints(max_prompt_length=max(len(r.prompt_ids) for r in requests),
                          max_generated_length=mnt, num_requests=len(requests))
    caller_attn = model.config._attn_implementation
    if attn_implementation is not None:
        model.set_attn_implementation(attn_implementation)
    manager = model.init_continuous_batching(generation_config=gen,
                                             continuous_batching_config=cb_config or ContinuousBatchingConfig(),
                                             workload_hints=hints)
    hooks = _Hooks(manager, requests, tracked, record_logits, temperature, progress, step_hook, audit_steps)
    results, errors = {}, {}
    loop_errors = _LoopErrors()                   # the engine thread's own exception, to name it when the thread dies
    cb_logger = logging.getLogger("ContinuousBatchingLogger")
    cb_logger.addHandler(loop_errors)
    t0 = time.perf_counter()
    try:
        manager.warmup()                          # creates the batch processor here, before the thread starts
        bp = manager.batch_processor
        mr = bp.model_runner
        graphs = bool(mr.use_cuda_graph_varlen or mr.use_cuda_graph_decode)
        if (record_logits or temperature > 0) and (graphs or bp.use_async_batching):
            raise UsageError("recording logits or seeded sampling needs the engine's eager path "
                             "(CUDA graphs and async batching run the model outside Python)")
        hooks.install(bp)
        config = {"attn_implementation": model.config._attn_implementation,
                  "cuda_graphs": graphs, "async_batching": bool(bp.use_async_batching),
                  "max_batch_tokens": int(bp.max_batch_tokens), "num_blocks": int(bp.cache.num_blocks),
                  "block_size": int(bp.cache.block_size),
                  "max_requests_per_batch": int(manager.continuous_batching_config.max_requests_per_batch),
                  "prefix_sharing": bool(manager._use_prefix_sharing)}
        manager.start()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while len(results) + len(errors) < len(requests) and not hooks.stop.is_set():
            out = manager.get_result(timeout=0.5)
            if out is None:
                if not manager.is_running():
                    cause = loop_errors.exception()
                    raise RuntimeError("the engine's generation thread stopped before every request finished"
                                       + (f": {type(cause).__name__}: {cause}" if cause else "")) from cause
                if deadline is not None and time.monotonic() > deadline:
                    raise RuntimeError(f"the engine did not finish {len(requests)} requests in {timeout_s} s")
                continue
            if out.is_finished():
                if out.error is not None:
                    errors[out.request_id] = str(out.error)
                else:
                    results[out.request_id] = list(out.generated_tokens)
    finally:
        cb_logger.removeHandler(loop_errors)
        manager.stop(block=True, timeout=30, hard_stop=hooks.stop.is_set())
        manager.destroy()
        model.set_attn_implementation(caller_attn)         # the engine's paged|... and our setting both undone
    wall = time.perf_counter() - t0
    if hooks.hook_error is not None:
        raise hooks.hook_error
    return EngineRun(completions=results, errors=errors, steps=hooks.steps, seen=dict(hooks.seen),
                     logits=dict(hooks.logits), wall_s=wall, config=config, audit=dict(hooks.audit))

