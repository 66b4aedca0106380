"""The probe request among its neighbours: one llm run of a mixture-of-experts model, and what it routed.

`measure(...)` runs the probe prompt in a left-padded batch with the first `batch - 1` of the seeded other
prompts (llm.serve.make_traffic's background prompts, cut from llm/data/traffic_corpus.txt), under one run
config (its `router=`), and keeps, for the probe's tokens only: the final logits, per layer the expert set
of every token, the router logits, what the routing dropped (in the probe and in the whole batch), and a
greedy continuation (each step the whole batch again, no KV cache; the others stay as they are).

The probe row is the LAST row by default: in the capacity rule's fixed token order (rank-major, then
token order over the flattened batch) it claims its slots after every other request, as a request that
joins a running batch does; `first` gives it priority instead. llm is imported here, when a case runs.
"""
from __future__ import annotations

import dataclasses

import torch

__all__ = ["others_from_traffic", "Measured", "measure", "compare", "near_ties", "fp32_router", "probe_router_gemm"]


def others_from_traffic(tokenizer, probe_ids, count: int, seed: int) -> list[list[int]]:
    """`count` seeded prompts of 1/2..3/2 the probe's length, from llm.serve's traffic corpus."""
    from llm.serve import make_traffic
    T = len(probe_ids)
    reqs = make_traffic(tokenizer, probe_ids, copies=1, background=count, seed=seed, max_new_tokens=1, span=1,
                        prompt_len=(max(1, T // 2), max(1, (3 * T) // 2)))
    return [r.prompt_ids for r in sorted((r for r in reqs if r.kind == "background"), key=lambda r: r.rid)]


def _run_class():
    from llm.runs import Run

    class BatchRun(Run):
        """llm.runs.Run with the batch's other rows given (not random tokens) and the probe at `probe_row`."""

        def __init__(self, loaded, cfg, prompt_ids, others, probe_row="last", tap_factory=None):
            self.others, self.probe_row, self.tap_factory = others, probe_row, tap_factory
            super().__init__(loaded, cfg, prompt_ids)

        def set_prompt(self, prompt_ids):
            T = len(prompt_ids)
            rows = [list(o) for o in self.others[:self.cfg.batch - 1]]
            if len(rows) < self.cfg.batch - 1:
                raise ValueError(f"batch {self.cfg.batch}: only {len(self.others)} other prompts")
            row = 0 if self.probe_row == "first" else len(rows)
            rows.insert(row, list(prompt_ids))
            width = max(len(r) for r in rows)
            ids = torch.zeros(len(rows), width, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, r in enumerate(rows):
                ids[i, width - len(r):] = torch.tensor(r)
                mask[i, width - len(r):] = 1
            self.region = (row, width - T, width)
            self.full = len(rows) == 1
            self.input_ids = ids.to(self.device)
            self.attention_mask = mask.to(self.device)
            self.position_ids = (mask.cumsum(-1) - 1).clamp_min(0).to(self.device)
            self.T = T

        def forward(self, tap=None, *, last_only=False):
            if tap is None and self.tap_factory is not None:
                tap = self.tap_factory(self)
            if last_only and self.region[0] != 0:       # Run's last_only reads row 0
                return super().forward(tap)[-1]
            return super().forward(tap, last_only=last_only)

    return BatchRun


def fp32_router(run):
    """A tap: the run as configured, but every router's logits computed in float32 (inputs and weight
    upcast, logits kept in float32), as servers that keep the gate in float32 do."""
    from llm.runs import RunTap
    base = RunTap(run)

    def tap(layer, op, fn, *inputs):
        if op == "router":
            return torch.nn.functional.linear(inputs[0].float(), fn.weight.float())
        return base(layer, op, fn, *inputs)
    return tap


def probe_router_gemm(run):
    """A tap: the run as configured, but the probe's router logits computed by a GEMM of the probe's own rows
    (its tokens alone, the same inputs), spliced into the batch's: against the plain run, what the router's
    GEMM alone does because it ran over the whole batch."""
    from llm.runs import RunTap
    base = RunTap(run)

    def tap(layer, op, fn, *inputs):
        out = base(layer, op, fn, *inputs)
        if op == "router" and not run.full:
            row, a, b = run.region
            own = base(layer, op, fn, inputs[0][row:row + 1, a:b])
            out = out.clone()
            out[row, a:b] = own[0]
        return out
    return tap


@dataclasses.dataclass
class Measured:
    logits: torch.Tensor        # [T, V] float32, the probe's final logits
    sets: list                  # per layer [T, E] bool: each probe token's experts
    router_logits: list         # per layer [T, E]: the router's logits at the probe's tokens (their dtype)
    routing: list               # per layer: capacity and dropped counts (probe and batch)
    steps: list                 # llm.generate.greedy's steps


def measure(lm, device, prompt_ids, others, *, batch: int, router: str = "", probe_row: str = "last",
            gen_steps: int = 4, tap_factory=None, seed: int = 0) -> Measured:
    from llm.generate import greedy
    from llm.runconfig import parse_run
    spec = f"device={device},dtype={str(lm.dtype).replace('torch.', '')},batch={batch}" + \
        (f",router={router}" if router else "")
    run = _run_class()(lm, parse_run(spec, default_device=device), prompt_ids, others, probe_row, tap_factory)
    run.routing_log = []
    logits = run.forward().cpu()
    log, run.routing_log = run.routing_log, None
    row, a, b = run.region
    B, W = run.input_ids.shape
    sets, rlogits, routing = [], [], []
    for layer, r in log:
        idx = r.indices.view(B, W, -1)[row, a:b]
        s = r.expert_sets().view(B, W, -1)[row, a:b]
        sets.append(s.cpu())
        rlogits.append(r.logits.reshape(B, W, -1)[row, a:b].cpu())
        routing.append({"layer": layer, "capacity": r.capacity, "batch_tokens": r.tokens,
                        "batch_slots_dropped": r.dropped, "batch_slots_rerouted": r.rerouted,
                        "batch_tokens_all_dropped": r.tokens_all_dropped,
                        "probe_slots_dropped": int((idx == r.n_experts).sum()),
                        "probe_tokens_all_dropped": int((idx == r.n_experts).all(-1).sum())})
    steps = greedy(run, prompt_ids, gen_steps) if gen_steps else []
    return Measured(logits, sets, rlogits, routing, steps)


def compare(ref: Measured, var: Measured, tokenizer) -> dict:
    """How the probe's routing and output differ from `ref` to `var`: per layer the tokens whose expert set
    changed (and whose router logits differ in any bit), then final-logit drift and the greedy divergence."""
    from llm.generate import divergence, drift_metrics
    layers = []
    for layer, (sa, sb, la, lb) in enumerate(zip(ref.sets, var.sets, ref.router_logits, var.router_logits)):
        changed = (sa != sb).any(-1)
        same_dtype = la.dtype == lb.dtype
        differ = (la.view(torch.int16 if la.element_size() == 2 else torch.int32)
                  != lb.view(torch.int16 if lb.element_size() == 2 else torch.int32)).any(-1) if same_dtype \
            else torch.ones(la.shape[0], dtype=torch.bool)
        layers.append({"layer": layer, "tokens": int(changed.numel()), "expert_set_changed": int(changed.sum()),
                       "fraction_changed": int(changed.sum()) / max(1, changed.numel()),
                       "changed_tokens": changed.nonzero().flatten().tolist(),
                       "router_logits_differ_fraction": int(differ.sum()) / max(1, differ.numel())})
    d = {k: float(v) for k, v in drift_metrics(ref.logits, var.logits).items()}
    flips = torch.nonzero(ref.logits.argmax(-1) != var.logits.argmax(-1)).flatten()
    out = {"layers": layers,
           "fraction_changed_max": max((x["fraction_changed"] for x in layers), default=0.0),
           "fraction_changed_mean": sum(x["fraction_changed"] for x in layers) / max(1, len(layers)),
           "rms_dlogit": d["rms_dlogit"], "max_dlogit": d["max_dlogit"], "top1_flips": int(d["top1_flips"]),
           "first_top1_flip": int(flips[0]) if len(flips) else None}
    if ref.steps and var.steps:
        g = divergence(ref.steps, var.steps, tokenizer)
        out.update(greedy_steps=g["steps"], greedy_diverged=g["diverged"],
                   greedy_first_divergence=g["first_divergence"],
                   greedy_ref_tokens=[s["token"] for s in ref.steps], greedy_var_tokens=[s["token"] for s in var.steps])
    return out


def near_ties(m: Measured, top_k: int) -> dict:
    """Per layer, the gap between each probe token's k-th and (k+1)-th router logit (where its expert set is
    decided), in units of the logits' own ulp at the k-th logit: how many tokens one rounding could flip."""
    layers = []
    for layer, lg in enumerate(m.router_logits):
        v = torch.sort(lg.float(), dim=-1, descending=True).values
        kth, nxt = v[:, top_k - 1], v[:, top_k]
        eps = torch.finfo(lg.dtype).eps
        ulp = eps * torch.exp2(torch.floor(torch.log2(kth.abs().clamp_min(torch.finfo(torch.float32).tiny))))
        gap = (kth - nxt) / ulp
        layers.append({"layer": layer, "dtype": str(lg.dtype).replace("torch.", ""), "tokens": int(gap.numel()),
                       "exact_ties": int((gap == 0).sum()), "within_1_ulp": int((gap <= 1).sum()),
                       "within_4_ulp": int((gap <= 4).sum()), "min_gap_ulps": float(gap.min()),
                       "median_gap_ulps": float(gap.median()), "gap_ulps": [round(float(x), 3) for x in gap]})
    return {"layers": layers, "top_k": top_k,
            "tokens_within_1_ulp": sum(x["within_1_ulp"] for x in layers),
            "tokens_within_4_ulp": sum(x["within_4_ulp"] for x in layers),
            "exact_ties": sum(x["exact_ties"] for x in layers)}
