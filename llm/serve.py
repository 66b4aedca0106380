"""The serving experiment: one prompt N times, at temperature 0, through a continuous-batching server.

    python -m llm.serve --model smollm2 --copies 1000 --json serve.json            # GPU: default and deterministic
    python -m llm.serve --device cpu --model mistral-tiny --dtype bfloat16 --copies 6 --background 12

Why: a served model batches each request with whatever other traffic is in flight, so the same prompt is
decoded in a different batch every time (other requests' prefills and decodes packed beside it, another
number of rows in every linear, another length of the packed attention). transformers' own
continuous-batching engine (llm.engine) serves: N copies of the probe prompt, interleaved with seeded
background traffic (arrival step, prompt and output lengths from `numpy.default_rng(seed)`, prompts cut from
real text in llm/data/traffic_corpus.txt). For each mode (`default`: the kernels as shipped;
`deterministic`: llm.deterministic()'s batch-invariant kernels) the report gives:

- the distinct completions of the copies and their counts;
- each distinct completion's first divergence from the most common one, with the top-2 logit margin there
  (in the divergent copy and in a modal copy);
- how many copies' logits were bitwise equal, at every generated token, to the prompt decoded alone
  (a 64-bit checksum of every logit row; llm.engine.row_checksums);
- the batch sizes (requests, query tokens) that the copies' tokens were computed in;
- the prompt alone through the engine (batch 1) and in static batches through `model.generate()`.

`--bench` times the same traffic without recording, mode against mode in one process (alternating, the
median of `--bench-repeats`), generated tokens per second: the cost of determinism. `--bench-profile` adds one
profiled run per mode: GPU seconds per op class (matmul, attention, norm/mean, softmax, ...) and the share of
the wall the GPU was busy, which tells a GPU-bound load (long prompts: `--prompt-len 512,2048`) from a
host-bound one (the engine's Python step loop).

Models: `smollm2` (the real SmolLM2-135M-Instruct; CPU and GPU), `mistral-7b-random` (Mistral-7B's shape,
seeded; GPU), `mistral-tiny` (CPU tests), `mixtral-8x7b-random[:LAYERS]` / `tiny-mixtral` (mixtures of
experts), or a local HF folder / .gguf file.

`--router capacity:FACTOR:drop|reroute` (mixtures of experts only; probes.moe.routing): every MoE layer routes
each engine step's tokens with an expert capacity computed for that step, as a server does (the op map's
experts op, llm.opmap); the report counts the dropped and re-routed slots per mode. With it, the
`deterministic` mode shows routing alone (batch-invariant kernels, capacity on), `default` both; a run without
it shows arithmetic alone (docs/moe.md).
"""
from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from llm.determinism import MODE_NAMES
from llm.engine import CHECKSUM, Request, row_checksums, run_engine
from probes.errors import UsageError

__all__ = ["load_corpus", "make_traffic", "analyse", "static_batches", "serve_mode", "bench", "kernel_class",
           "summarize_kernels", "main", "MODES"]

CORPUS_FILE = Path(__file__).resolve().parent / "data" / "traffic_corpus.txt"
MODES = ("default",) + MODE_NAMES


# ------------------------------------------------------------------------------------------------
# traffic


def load_corpus(path: Path = CORPUS_FILE) -> list[str]:
    """The passages of the traffic corpus (blank-line separated, '#' comments, ' -- source' dropped)."""
    text = Path(path).read_text(encoding="utf-8")
    paras = [p.strip() for p in text.split("\n\n")]
    out = []
    for p in paras:
        lines = [ln for ln in p.splitlines() if not ln.lstrip().startswith("#")]
        body = " ".join(lines).strip()
        if body:
            out.append(body.rsplit(" -- ", 1)[0].strip())
    if not out:
        raise UsageError(f"{path}: no passages")
    return out


def make_traffic(tokenizer, probe_ids, *, copies: int, background: int, seed: int, max_new_tokens: int,
                 span: int, prompt_len=(4, 64), corpus=None) -> list[Request]:
    """`copies` probe requests (ids p0000...) and `background` requests (b0000...), each with an arrival step
    uniform in [0, span); a background request's prompt is `prompt_len` tokens (uniform) cut from a random
    corpus passage (continued into the next ones when short), its output length uniform in
    [1, 2 * max_new_tokens]. The same arguments give the same traffic on every machine."""
    if copies < 1:
        raise UsageError(f"--copies must be >= 1, got {copies}")
    if background < 0:
        raise UsageError(f"--background must be >= 0, got {background}")
    if span < 1:
        raise UsageError(f"--span must be >= 1, got {span}")
    if max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    lo, hi = prompt_len
    if not 1 <= lo <= hi:
        raise UsageError(f"background prompt lengths {lo}..{hi} are not a range of positive lengths")
    corpus = corpus or load_corpus()
    encoded = [tokenizer.encode(p) for p in corpus]
    rng = np.random.default_rng(seed)
    reqs = []
    for i in range(copies):
        reqs.append(Request(f"p{i:04d}", "probe", int(rng.integers(0, span)), list(probe_ids), max_new_tokens,
                            seed=seed))
    for i in range(background):
        arrival = int(rng.integers(0, span))
        n = int(rng.integers(lo, hi + 1))
        j = int(rng.integers(0, len(encoded)))
        ids = []
        while len(ids) < n:
            ids.extend(encoded[j % len(encoded)])
            j += 1
        reqs.append(Request(f"b{i:04d}", "background", arrival, ids[:n], int(rng.integers(1, 2 * max_new_tokens + 1)),
                            seed=seed + 1 + i))
    reqs.sort(key=lambda r: (r.arrival, r.rid))
    return reqs


# ------------------------------------------------------------------------------------------------
# analysis


def _first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _margin(rec):
    (_, v1), (_, v2) = rec["top"]
    return float(v1) - float(v2)


def analyse(run, probe_rids, alone, tokenizer) -> dict:
    """Distinct completions of the probe copies, their first divergence from the modal one with the top-2
    margins there, logits vs the prompt decoded alone, and the batches the copies' tokens saw."""
    comps = {rid: tuple(run.completions[rid]) for rid in probe_rids if rid in run.completions}
    counts = collections.Counter(comps.values())
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    modal = ranked[0][0] if ranked else ()
    modal_rid = next((r for r in probe_rids if comps.get(r) == modal), None)
    alone_rec = next(iter(alone.logits.values()), []) if alone is not None else []
    alone_cs = [r["checksum"] for r in alone_rec]
    alone_tokens = tuple(next(iter(alone.completions.values()), ())) if alone is not None else None
    distinct = []
    for tokens, count in ranked:
        rids = [r for r in probe_rids if comps.get(r) == tokens]
        d = _first_difference(tokens, modal)
        entry = {"count": count, "tokens": list(tokens), "text": tokenizer.decode(list(tokens)),
                 "first_divergence": d, "copies": rids[:5]}
        if d is not None and d < len(tokens):
            rec = run.logits.get(rids[0], [])
            mrec = run.logits.get(modal_rid, [])
            if d < len(rec):
                entry["margin"] = _margin(rec[d])
                entry["top2"] = rec[d]["top"]
            if d < len(mrec):
                entry["modal_margin"] = _margin(mrec[d])
                entry["modal_top2"] = mrec[d]["top"]
            seen = run.seen.get(rids[0], [])
            if d < len(seen):
                entry["batch_at_divergence"] = {"requests": seen[d][1], "q_tokens": seen[d][2]}
        distinct.append(entry)
    equal_alone, first_diff_steps = 0, []
    for rid in probe_rids:
        cs = [r["checksum"] for r in run.logits.get(rid, [])]
        d = _first_difference(cs, alone_cs) if alone_cs else 0
        if d is None:
            equal_alone += 1
        else:
            first_diff_steps.append(d)
    sizes = [s[1] for rid in probe_rids for s in run.seen.get(rid, [])]
    qtok = [s[2] for rid in probe_rids for s in run.seen.get(rid, [])]
    margins = [_margin(r) for rid in probe_rids for r in run.logits.get(rid, [])]
    return {
        "copies": len(probe_rids), "finished": len(comps), "failed": len(probe_rids) - len(comps),
        "n_distinct": len(ranked), "counts": [c for _, c in ranked], "modal_tokens": list(modal),
        "modal_text": tokenizer.decode(list(modal)), "distinct": distinct,
        "alone_tokens": None if alone_tokens is None else list(alone_tokens),
        "alone_checksums": alone_cs,
        "modal_equals_alone": alone_tokens is not None and tuple(alone_tokens) == modal,
        "copies_logits_equal_alone": equal_alone,
        "first_logit_difference_from_alone": _histogram(first_diff_steps),
        "batch_requests_seen": _summary(sizes), "batch_q_tokens_seen": _summary(qtok),
        "batch_requests_histogram": _histogram(sizes),
        "min_top2_margin": min(margins) if margins else None,
        "engine_steps": len(run.steps), "wall_s": run.wall_s, "engine": run.config,
    }


def _summary(xs):
    if not xs:
        return None
    return {"min": int(min(xs)), "median": float(statistics.median(xs)), "max": int(max(xs)),
            "distinct": len(set(xs))}


def _histogram(xs):
    return {str(k): v for k, v in sorted(collections.Counter(int(x) for x in xs).items())}


# ------------------------------------------------------------------------------------------------
# static batches through generate()


@torch.no_grad()
def static_batches(lm, probe_ids, others, sizes, max_new_tokens) -> list[dict]:
    """The probe prompt as row 0 of a static, left-padded batch of `size` rows (the other rows: `others`'
    prompts) through `model.generate()` (its own KV cache, the model's attention), greedy: row 0's tokens and
    the checksum of its logits at every step."""
    model, dev = lm.model, next(lm.model.parameters()).device
    out = []
    for size in sizes:
        rows = [list(probe_ids)] + [list(o) for o in others[:size - 1]]
        if len(rows) < size:
            raise UsageError(f"static batch {size}: only {len(others)} other prompts in the traffic")
        width = max(len(r) for r in rows)
        ids = torch.zeros((size, width), dtype=torch.long)
        mask = torch.zeros((size, width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r)
            mask[i, width - len(r):] = 1
        t0 = time.perf_counter()
        g = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), max_new_tokens=max_new_tokens,
                           min_new_tokens=max_new_tokens, do_sample=False, output_logits=True,
                           return_dict_in_generate=True, pad_token_id=0, eos_token_id=None)
        logits = torch.stack([step[0].float() for step in g.logits])            # row 0, every step
        out.append({"batch": size, "tokens": g.sequences[0, width:].tolist(),
                    "checksums": row_checksums(logits).tolist(), "wall_s": time.perf_counter() - t0})
    return out


# ------------------------------------------------------------------------------------------------
# one mode


def engine_config(traffic, device, num_blocks=None, max_batch_tokens=None):
    """The engine's ContinuousBatchingConfig. On a GPU the engine sizes its KV cache from free memory, as a user
    gets it. On the CPU that sizing takes a share of the machine's RAM, and the `paged|sdpa` path keeps a dense
    float mask of max_batch_tokens x cache tokens (17 GB for the tiny test model): there the cache holds every
    request of the traffic at once (one 256-token block per started 256 tokens) and a step packs <= 512 tokens."""
    from transformers.generation.configuration_utils import ContinuousBatchingConfig
    if str(device).startswith("cuda"):
        return ContinuousBatchingConfig(num_blocks=num_blocks, max_batch_tokens=max_batch_tokens)
    need = sum(-(-(len(r.prompt_ids) + r.max_new_tokens) // 256) for r in traffic) + 1
    return ContinuousBatchingConfig(num_blocks=num_blocks or need, max_batch_tokens=max_batch_tokens or 512)


class RoutingCounts:
    """Stands in for the op map's routing log: totals of every experts op's routing (llm.opmap.MoEExperts)."""

    def __init__(self):
        self.calls = self.tokens = self.slots_dropped = self.slots_rerouted = self.tokens_all_dropped = 0

    def append(self, item):
        _, r = item
        self.calls += 1
        self.tokens += r.tokens
        self.slots_dropped += r.dropped
        self.slots_rerouted += r.rerouted
        self.tokens_all_dropped += r.tokens_all_dropped

    def summary(self):
        return dict(vars(self))


def serve_mode(lm, traffic, *, mode, max_new_tokens, static_sizes=(1, 8), temperature=0.0, cb_config=None):
    """Run the traffic, the prompt alone and the static batches under `mode`; returns (analysis, static, runs).
    Where the op map routes with a capacity (`--router`), the analysis counts the traffic's dropped slots."""
    from llm.determinism import mode_context
    om = getattr(lm.model, "_driftscope_opmap", None)
    counts = RoutingCounts() if om is not None and om.router is not None else None
    probe = [r for r in traffic if r.kind == "probe"]
    probe_rids = [r.rid for r in probe]
    others = [r.prompt_ids for r in traffic if r.kind == "background"]
    alone_req = [Request("alone", "alone", 0, list(probe[0].prompt_ids), max_new_tokens, seed=probe[0].seed)]
    from probes.progress import Progress
    with mode_context(mode) as det:
        with Progress(len(traffic), f"serve {mode}") as bar:         # requests released so far
            if counts is not None:
                om.routing_log = counts
            run = run_engine(lm.model, traffic, tracked=probe_rids, temperature=temperature, cb_config=cb_config,
                             audit_steps=3 if det is not None else 0,
                             progress=lambda h: bar.update(h.next - bar.count, f"step {h.step}"))
            if counts is not None:
                om.routing_log = None
        alone = run_engine(lm.model, alone_req, tracked=["alone"], temperature=temperature, cb_config=cb_config)
        static = static_batches(lm, probe[0].prompt_ids, others, static_sizes, max_new_tokens) \
            if temperature == 0 and static_sizes else []
    res = analyse(run, probe_rids, alone, lm.tokenizer)
    for s in static:
        s["tokens_equal_alone"] = s["tokens"] == res["alone_tokens"]
        s["logits_equal_alone_steps"] = sum(1 for a, b in zip(s["checksums"], res["alone_checksums"]) if a == b)
    res["mode"] = det.summary() if det is not None else {"name": "default"}
    if counts is not None:
        res["router"] = om.router.text
        res["routing"] = counts.summary()
    return res, static, {"traffic": run, "alone": alone}


# ------------------------------------------------------------------------------------------------
# why: a divergence attributed to ops


def divergent_pairs(res) -> list[tuple[str, str, int]]:
    """(a modal copy, the first copy of each divergent completion, the first divergent token), most common first."""
    modal = res["distinct"][0]["copies"][0] if res["distinct"] else None
    return [(modal, d["copies"][0], d["first_divergence"]) for d in res["distinct"][1:]
            if d["first_divergence"] is not None and d["first_divergence"] < len(d["tokens"])]


def explain(lm, traffic, run, ref_rid, var_rid, token_index, top=8, cb_config=None) -> dict:
    """llm.divergence.attribute_divergence, printed: the units that explain most of the logit difference."""
    from llm.divergence import attribute_divergence
    res = attribute_divergence(lm, traffic, run, ref_rid, var_rid, token_index, cb_config=cb_config)
    d = res["drift"]
    print(f"\nwhy {var_rid} left {ref_rid} at token {token_index}: engine steps {res['reference_step']} "
          f"(batch {res['reference_batch']}) vs {res['variant_step']} (batch {res['variant_batch']}); "
          f"rms dlogit {d['rms_dlogit']:.3g}, max {d['max_dlogit']:.3g}")
    res["summary"] = {kind: [(r["unit"], r["contribution"]) for r in res["causal"] if r["kind"] == kind][:top]
                      for kind in ("class", "layer", "op")}
    for kind, rows in res["summary"].items():
        print(f"  {kind:<5}: " + ", ".join(f"{unit} {c:.2f}" for unit, c in rows))
    worst = sorted(res.get("local", []), key=lambda r: -r["rel_err"])[:top]
    print("  largest local errors: " + ", ".join(f"{r['site']} {r['rel_err']:.2g}" for r in worst))
    return res


# ------------------------------------------------------------------------------------------------
# throughput


#: GPU kernel classes of the bench's profile, first match wins (a kernel's name, lower-cased, contains the word):
#: attention before matmul (cutlass fmha kernels are attention), the invariant kernels by their Triton names.
KERNEL_CLASSES = (
    ("attention", ("attn", "fmha", "flash", "attention", "sdpa", "mask_interval")),
    ("matmul", ("gemm", "nvjet", "matmul", "cutlass", "cublas", "splitk", "xmma")),
    ("softmax", ("softmax",)),
    ("norm/mean", ("row_mean", "rms", "norm", "reduce")),
    ("copy", ("memcpy", "memset", "copy", "cat_", "index")),
)


def kernel_class(name: str) -> str:
    """The op class of a GPU kernel, from its name (KERNEL_CLASSES); 'other' (elementwise, sampling...) if none."""
    low = name.lower()
    for cls, words in KERNEL_CLASSES:
        if any(w in low for w in words):
            return cls
    return "other"


def summarize_kernels(kernels, wall_s: float) -> dict:
    """kernels: (name, start_us, end_us) of every GPU kernel of one run; wall_s: that run's wall time (the
    bench's unprofiled median). Seconds and calls per class, the top kernels, and `busy_s`: the union of the
    kernels' intervals (overlapping streams counted once); `busy_share` = busy_s / wall_s: near 1 the load is
    GPU-bound, low it waits on the host (the engine's Python step loop, launches)."""
    by = collections.defaultdict(lambda: [0.0, 0])
    names = collections.defaultdict(lambda: [0.0, 0])
    spans = []
    for name, t0, t1 in kernels:
        if t1 < t0:
            raise ValueError(f"kernel {name!r} ends before it starts")
        d = (t1 - t0) * 1e-6
        c = by[kernel_class(name)]
        c[0] += d
        c[1] += 1
        n = names[name]
        n[0] += d
        n[1] += 1
        spans.append((t0, t1))
    busy, end = 0.0, None
    for t0, t1 in sorted(spans):
        if end is None or t0 > end:
            busy += t1 - t0
            end = t1
        elif t1 > end:
            busy += t1 - end
            end = t1
    busy *= 1e-6
    top = sorted(names.items(), key=lambda kv: -kv[1][0])[:12]
    return {"by_class": {k: {"seconds": v[0], "calls": v[1]} for k, v in sorted(by.items())},
            "kernel_s": sum(v[0] for v in by.values()), "busy_s": busy,
            "busy_share": busy / wall_s if wall_s > 0 else float("nan"),
            "top": [[k, v[0], v[1]] for k, v in top]}


def profile_kernels(fn):
    """Run fn() under torch.profiler (CUDA activity only) and return (name, start_us, end_us) per GPU kernel,
    memcpy and memset."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [(e.name, e.time_range.start, e.time_range.end) for e in prof.events()
            if e.device_type == DeviceType.CUDA]


def bench(lm, traffic, modes, repeats, cb_config=None, profile=False) -> dict:
    """Generated tokens per second of the whole traffic, per mode, the modes alternating (median of `repeats`).
    The timed span is one whole run_engine call: the engine's start and warm-up are inside it, the same for both
    modes. With `profile` (a GPU), one more run per mode under torch.profiler, not timed: GPU seconds per op
    class (summarize_kernels), so the cost of determinism is told per op, and the share of the timed wall the
    GPU was busy, which says whether this load is GPU-bound."""
    times = {m: [] for m in modes}
    tokens = {}
    from llm.determinism import mode_context
    for _ in range(repeats):
        for m in modes:
            with mode_context(m):
                t0 = time.perf_counter()
                run = run_engine(lm.model, traffic, record_logits=False, cb_config=cb_config)
                times[m].append(time.perf_counter() - t0)
            tokens[m] = sum(len(v) for v in run.completions.values())
    out = {m: {"seconds": times[m], "median_s": statistics.median(times[m]), "tokens": tokens[m],
               "tokens_per_s": tokens[m] / statistics.median(times[m])} for m in modes}
    if profile:
        for m in modes:
            with mode_context(m):
                ks = profile_kernels(lambda: run_engine(lm.model, traffic, record_logits=False, cb_config=cb_config))
            if not ks:
                raise RuntimeError("the profiler recorded no GPU kernel: the bench's profile needs CUPTI")
            out[m]["kernels"] = summarize_kernels(ks, out[m]["median_s"])
    for det in MODES[1:]:
        if "default" not in out or det not in out:
            continue
        ratio_key, cost_key = _vs_default_keys(det)
        out[ratio_key] = out[det]["tokens_per_s"] / out["default"]["tokens_per_s"]
        if profile:
            d, t = out["default"]["kernels"]["by_class"], out[det]["kernels"]["by_class"]
            out[cost_key] = {c: t.get(c, {}).get("seconds", 0.0) - d.get(c, {}).get("seconds", 0.0)
                             for c in sorted(set(d) | set(t))}
    return out


def _vs_default_keys(mode):
    """The bench's keys for a deterministic mode against default: its throughput ratio and its GPU seconds per
    class (e.g. deterministic-tiled -> ratio_deterministic_tiled_vs_default, cost_tiled_by_class_s)."""
    sfx = mode[len("deterministic"):].replace("-", "_")
    return f"ratio_deterministic{sfx}_vs_default", f"cost{sfx}_by_class_s"


def format_bench(b: dict, modes) -> str:
    lines = []
    for m in modes:
        lines.append(f"bench {m}: {b[m]['tokens_per_s']:.1f} tokens/s (median of {len(b[m]['seconds'])}: "
                     f"{b[m]['median_s']:.2f} s)")
        k = b[m].get("kernels")
        if k:
            lines.append(f"  GPU busy {k['busy_s']:.2f} s = {k['busy_share']:.0%} of the timed wall; by class: "
                         + ", ".join(f"{c} {v['seconds']:.3f} s" for c, v in k["by_class"].items()))
    for det in MODES[1:]:
        ratio_key, cost_key = _vs_default_keys(det)
        if ratio_key in b:
            lines.append(f"{det} / default throughput: {b[ratio_key]:.3f}")
        if cost_key in b:
            lines.append(f"{det} - default GPU seconds per class: "
                         + ", ".join(f"{c} {v:+.3f}" for c, v in b[cost_key].items()))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# report, table, plot


def format_table(results: dict) -> str:
    w = max([14] + [len(m) for m in results])
    lines = [f"{'mode':<{w}} {'copies':>6} {'distinct':>8} {'counts':<24} {'logits = alone':>14} "
             f"{'batch requests (min/med/max)':>28}"]
    for mode, (res, static) in results.items():
        b = res["batch_requests_seen"] or {}
        counts = ",".join(str(c) for c in res["counts"][:6]) + ("..." if len(res["counts"]) > 6 else "")
        lines.append(f"{mode:<{w}} {res['copies']:>6} {res['n_distinct']:>8} {counts:<24} "
                     f"{res['copies_logits_equal_alone']:>8}/{res['copies']:<5} "
                     f"{b.get('min', '-')!s:>10}/{b.get('median', '-')!s}/{b.get('max', '-')!s}")
        m = res.get("mode") or {}
        if m.get("name") == "deterministic":          # which kernels ran, and whether all of it was covered
            routes = ", ".join(f"{r} {n}" for r, n in sorted((m.get("matmul_routes") or {}).items())) or "none"
            unc = list(m.get("uncovered") or {})
            covered = "yes" if m.get("deterministic") else \
                f"NO ({len(unc)} case(s): {', '.join(unc[:3])}{', ...' if len(unc) > 3 else ''}; all in the report)"
            lines.append(f"  kernels: matmul={m.get('matmul')} (mm calls by route: {routes}), "
                         f"attention={m.get('attention')}; every op covered: {covered}")
        if "routing" in res:
            r = res["routing"]
            lines.append(f"  router {res['router']}: {r['slots_dropped']} slots dropped, "
                         f"{r['slots_rerouted']} re-routed, "
                         f"{r['tokens_all_dropped']} tokens with every slot dropped, of {r['tokens']} token-layers")
        for d in res["distinct"][1:6]:
            lines.append(f"  {d['count']:>5}x diverges at token {d['first_divergence']}: margin "
                         f"{d.get('margin', float('nan')):.3g} (modal copy {d.get('modal_margin', float('nan')):.3g}) "
                         f"{d['text'][:60]!r}")
        for s in static:
            lines.append(f"  generate() batch {s['batch']}: tokens = alone: {s['tokens_equal_alone']}, "
                         f"logits = alone at {s['logits_equal_alone_steps']}/{len(s['checksums'])} steps")
    return "\n".join(lines)


def plot(report: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    exps = {e["key"]: e for e in report["experiments"]}
    modes = [k.split("/")[1] for k in exps if k.endswith("/completions")]
    bench_m = exps.get("serve/bench", {}).get("metrics", {})
    profiled = [m for m in modes if isinstance(bench_m.get(m), dict) and "kernels" in bench_m[m]]
    fig, axes = plt.subplots(1, 3 if profiled else 2, figsize=(16 if profiled else 11, 4))
    x0, ticks, labels = 0, [], []
    for mode in modes:
        m = exps[f"serve/{mode}/completions"]["metrics"]
        shown = m["counts"][:8]
        xs = [x0 + i for i in range(len(shown))]
        axes[0].bar(xs, shown, label=f"{mode}: {m['n_distinct']} distinct"
                    + (f" ({len(m['counts']) - len(shown)} more not shown)" if len(m["counts"]) > len(shown) else ""))
        ticks += xs
        labels += [f"#{i + 1}" for i in range(len(shown))]
        x0 += len(shown) + 1
        h = m["batch_requests_histogram"]
        axes[1].plot([int(k) for k in h], list(h.values()), ".-", label=mode)
    axes[0].set_xticks(ticks, labels)
    axes[0].legend(fontsize=8)
    axes[0].set_yscale("log")
    axes[0].set_title("completions of the probe prompt (most common first)")
    axes[0].set_ylabel("copies")
    axes[1].set_title("requests in the batch of each probe token")
    axes[1].set_xlabel("requests in the engine step")
    axes[1].set_ylabel("probe tokens")
    axes[1].legend()
    if profiled:          # --bench-profile: GPU seconds per op class, stacked, per mode; throughput in the labels
        classes = sorted({c for m in profiled for c in bench_m[m]["kernels"]["by_class"]})
        bottom = [0.0] * len(profiled)
        for c in classes:
            vals = [bench_m[m]["kernels"]["by_class"].get(c, {}).get("seconds", 0.0) for m in profiled]
            axes[2].bar(range(len(profiled)), vals, bottom=bottom, label=c)
            bottom = [b + v for b, v in zip(bottom, vals)]
        axes[2].set_xticks(range(len(profiled)),
                           [f"{m}\n{bench_m[m]['tokens_per_s']:.0f} tok/s, GPU busy "
                            f"{bench_m[m]['kernels']['busy_share']:.0%}" for m in profiled], fontsize=8)
        axes[2].set_ylabel("GPU kernel seconds (one profiled run)")
        axes[2].set_title("where the GPU time goes, per mode")
        axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser():
    from probes.cli import add_common_args, add_plot_args
    ap = argparse.ArgumentParser(prog="python -m llm.serve", description=__doc__.split("\n\n")[0])
    add_common_args(ap)
    add_plot_args(ap)
    ap.add_argument("--model", default=None, help="smollm2 | mistral-7b-random | mistral-tiny | a local HF folder "
                    "or .gguf file (default: smollm2)")
    ap.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                    help="default: bfloat16 on a GPU, float32 on the CPU (deterministic mode needs bfloat16 or "
                         "float16 for its matmul)")
    ap.add_argument("--prompt", default=None, help="the probe prompt (default: 'I enjoy walking in the')")
    ap.add_argument("--prompt-file", default=None, help="read the probe prompt from a file")
    ap.add_argument("--builtin", choices=("seed", "retrieval"), default=None, help="a shipped prompt")
    ap.add_argument("--copies", type=int, default=None, help="copies of the probe prompt (default 1000 on a GPU, "
                    "6 on the CPU)")
    ap.add_argument("--background", type=int, default=None, help="background requests (default: = copies)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="tokens per probe copy (default 32 GPU, 8 CPU)")
    ap.add_argument("--span", type=int, default=None,
                    help="arrivals are uniform over this many engine steps (default: 4 x max-new-tokens)")
    ap.add_argument("--modes", default="default,deterministic",
                    help="comma-separated: default, deterministic (its matmul: cuBLASLt with split-K off on a GPU, "
                         "the Triton batch-invariant kernel on a CPU), and its variants deterministic-triton / "
                         "deterministic-cublaslt (one matmul route forced), deterministic-tiled, "
                         "deterministic-triton-tiled, deterministic-cublaslt-tiled (the tiled attention) "
                         "(default: default,deterministic)")
    ap.add_argument("--temperature", type=float, default=0.0,
                    help="> 0: seeded sampling (Gumbel-max, seeded per request and position); default greedy")
    ap.add_argument("--static", default="1,8", help="static batch sizes through generate() (default 1,8; '' none)")
    ap.add_argument("--attribute", type=int, default=1, metavar="N",
                    help="attribute the first N divergent completions of the default mode to ops (replays the "
                         "traffic; llm.divergence); 0: none (default 1)")
    ap.add_argument("--num-blocks", type=int, default=None,
                    help="KV cache blocks (256 tokens each) of the engine (default on a GPU: the engine's own sizing "
                         "from free memory; on the CPU: enough for the traffic, see engine_config)")
    ap.add_argument("--max-batch-tokens", type=int, default=None,
                    help="query tokens per engine step (default: the engine's own on a GPU, 512 on the CPU)")
    ap.add_argument("--router", default=None, metavar="RULE",
                    help="mixtures of experts: capacity:FACTOR:drop|reroute, an expert capacity per engine step "
                         "(probes.moe.routing); default: the model's own top-k")
    ap.add_argument("--bench", action="store_true", help="also time the traffic per mode (no recording)")
    ap.add_argument("--bench-repeats", type=int, default=3)
    ap.add_argument("--bench-profile", action="store_true",
                    help="with --bench, on a GPU: one more run per mode under torch.profiler: GPU seconds per op "
                         "class and the share of the wall the GPU was busy (is the load GPU-bound?)")
    ap.add_argument("--prompt-len", default=None, metavar="LO,HI",
                    help="background prompt lengths in tokens, uniform in LO..HI (default 4,64 on a GPU, 2,24 on "
                         "the CPU); long prompts make a prefill-heavy, GPU-bound load")
    return ap


def main(argv=None) -> int:
    from llm.attribute import load_prompt
    from llm.models import load
    from llm.runconfig import DTYPES
    from probes.cli import parse_csv_choice, save_report, select_device
    from probes.device import fingerprint
    from probes.report import add_experiment, new_report

    args = build_parser().parse_args(argv)
    device = select_device(args.device)
    gpu = device.startswith("cuda")
    modes = parse_csv_choice(args.modes, MODES, "--modes")
    dtype = args.dtype or ("bfloat16" if gpu else "float32")
    copies = args.copies if args.copies is not None else (1000 if gpu else 6)
    background = args.background if args.background is not None else copies
    max_new = args.max_new_tokens or (32 if gpu else 8)
    span = args.span or 4 * max_new
    try:
        static_sizes = [int(s) for s in args.static.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--static: {args.static!r} is not a comma-separated list of batch sizes") from None
    if any(s < 1 for s in static_sizes):
        raise UsageError("--static: batch sizes must be >= 1")
    if args.bench_profile and not args.bench:
        raise UsageError("--bench-profile profiles the bench: give --bench too")
    if args.bench_profile and not gpu:
        raise UsageError("--bench-profile times GPU kernels: it needs --device cuda")
    prompt_len = (4, 64) if gpu else (2, 24)
    if args.prompt_len is not None:
        try:
            lo, hi = (int(v) for v in args.prompt_len.split(","))
        except ValueError:
            raise UsageError(f"--prompt-len: {args.prompt_len!r} is not LO,HI (two token counts)") from None
        if not 1 <= lo <= hi:
            raise UsageError(f"--prompt-len: {lo},{hi} is not a range of positive lengths (1 <= LO <= HI)")
        prompt_len = (lo, hi)
    model = args.model or "smollm2"
    t0 = time.perf_counter()
    router = None
    if args.router is not None:
        from probes.moe.routing import parse_router
        router = parse_router(args.router, "--router")
    lm = load(model, device, DTYPES[dtype], args.seed)
    if router is not None:
        from llm.opmap import install
        om = install(lm.model)
        if not om.moe:
            raise UsageError(f"--router {args.router}: model {model} has no experts (router= is for mixtures of "
                             "experts: tiny-mixtral, mixtral-8x7b-random)")
        om.router = router
    name, text, ids = load_prompt(args, lm.tokenizer)
    traffic = make_traffic(lm.tokenizer, ids, copies=copies, background=background, seed=args.seed,
                           max_new_tokens=max_new, span=span,
                           prompt_len=prompt_len)
    print(f"{model} {dtype} on {device}: prompt {name!r} ({len(ids)} tokens) x {copies} copies amid {background} "
          f"background requests over {span} steps, {max_new} new tokens", flush=True)
    rep = new_report("serve", command=None, fingerprint=fingerprint(device),
                     config={"model": model, "dtype": dtype, "device": device, "copies": copies,
                             "background": background, "max_new_tokens": max_new, "span": span,
                             "temperature": args.temperature, "modes": modes, "model_info": lm.info,
                             "router": router.text if router is not None else "model's own top-k"})
    inputs = {"prompt_name": name, "prompt_tokens": len(ids), "prompt_text_head": text[:200], "traffic_seed": args.seed,
              "copies": copies, "background": background, "span": span, "max_new_tokens": max_new,
              "weights_seed": args.seed, "model": model, "dtype": dtype, "temperature": args.temperature,
              "logit_checksum": CHECKSUM, "prompt_len": list(prompt_len),
              **({"router": router.text} if router is not None else {})}
    cbc = engine_config(traffic, device, args.num_blocks, args.max_batch_tokens)
    results = {}
    for mode in modes:
        res, static, runs = serve_mode(lm, traffic, mode=mode, max_new_tokens=max_new, static_sizes=static_sizes,
                                       temperature=args.temperature, cb_config=cbc)
        results[mode] = (res, static)
        add_experiment(rep, key=f"serve/{mode}/completions", inputs=inputs, params={"mode": res["mode"]},
                       metrics=res, compares={"metrics": ["n_distinct", "counts", "modal_tokens", "alone_tokens",
                                                          "alone_checksums", "copies_logits_equal_alone"]})
        for s in static:
            add_experiment(rep, key=f"serve/{mode}/generate/batch{s['batch']}", inputs=inputs, params={}, metrics=s,
                           compares={"metrics": ["tokens", "checksums"]})
        if mode == "default" and args.attribute and args.temperature == 0:
            for i, d in enumerate(divergent_pairs(res)[:args.attribute]):
                att = explain(lm, traffic, runs["traffic"], *d, cb_config=cbc)
                add_experiment(rep, key=f"serve/{mode}/divergence/{i}", inputs=inputs, params={}, metrics=att,
                               compares={"reason": "which copies diverge depends on the machine: the attribution "
                                                   "of one divergence is read, not compared"})
    if args.bench:
        b = bench(lm, traffic, modes, args.bench_repeats, cb_config=cbc, profile=args.bench_profile)
        add_experiment(rep, key="serve/bench", inputs=inputs,
                       params={"repeats": args.bench_repeats, "profile": args.bench_profile}, metrics=b,
                       compares={"reason": "timings are measurements, not compared"})
        print(format_bench(b, modes))
    print(format_table(results))
    rep["config"]["wall_seconds"] = time.perf_counter() - t0
    if args.json:
        save_report(args, args.json, rep, plot)
    return 0


if __name__ == "__main__":
    from probes.cli import guarded_main
    sys.exit(guarded_main(main))
