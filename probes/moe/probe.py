"""The MoE routing probe: its cases, and what each measures (see probes/moe/__init__.py).

Cases, in order (the probe request is the same prompt in every one; the others are the first batch - 1 of
the same seeded prompts, so a larger batch adds neighbours):

- `near_tie`: the probe alone (top-k): per layer, the gap between each token's k-th and (k+1)-th router
  logit in ulps of the logits' dtype (exact ties, within 1 and 4 ulps).
- `router_precision`: the probe alone, the router's logits in the model's dtype vs in float32
  (arithmetic alone, no batch).
- `arithmetic/batch=N` (N > 1): top-k in a batch of N vs top-k alone: every difference is arithmetic; and under
  `router_gemm`, in the batch of N, the probe's router logits from the batch's GEMM vs from a GEMM of its own
  rows (same inputs): the router's batch-dependent GEMM alone.
- `routing/ROUTER/batch=N`: ROUTER (a capacity rule) vs top-k in the same batch of N: routing alone; and
  under `both`, ROUTER in the batch of N vs top-k alone. With the dropped-slot counts of the probe and of
  the batch per layer; and under `neighbours`, ROUTER in the batch of N vs ROUTER alone (does the probe's
  routing under this rule depend on its neighbours: competition for slots plus the arithmetic).

Each comparison: per layer the tokens whose expert set changed (and whose router logits differ in any
bit), final-logit rms / max |dlogit|, top-1 flips over the prompt's positions, first greedy divergence.
A run is computed once per process and shared by the cases that compare it.
"""
from __future__ import annotations

from probes import report as reports
from probes.errors import UsageError
from probes.moe import table
from probes.probe import NOT_RUN, Axis, Probe


def reports_not_run():
    """What a skipped or failed case records (its metrics, and what is compared, are known once it runs)."""
    return dict(NOT_RUN)

DESCRIPTION = """\
Batch one probe request with 0..63 seeded others through a mixture-of-experts model (Mixtral's
architecture, seeded weights: tiny-mixtral on a CPU, mixtral-8x7b-random on a GPU) and measure, per batch
size and layer, the fraction of the probe's tokens whose expert set changes and what that does to its
output (logit rms / max difference, top-1 flips, first greedy divergence): from routing alone (an expert
capacity computed per batch, overflow dropped or re-routed, vs the model's dropless top-k, in the same
batch), from arithmetic alone (top-k in the batch vs top-k alone), and both; and, alone, a bfloat16 vs a
float32 router and how near the router's k-th and (k+1)-th logits tie."""

DEFAULT_ROUTERS = "capacity:1.0:drop,capacity:1.25:drop,capacity:1.0:reroute"
CPU_PROMPT = "I enjoy walking in the"
GPU_PROMPT = ("The committee met on Tuesday to review the budget for the new library, and after a long discussion "
              "about the cost of books, staff and heating, it voted to open the building on weekends as well.")


def default_batches(device):
    return (1, 2, 4, 8, 16, 32, 64)


class MoEProbe(Probe):
    name = "moe"
    description = DESCRIPTION
    axes = (Axis("batch", default_batches, flag="--batch-sizes", parse="sizes",
                 help="batch sizes: the probe with N - 1 others (default 1,2,4,8,16,32,64)"),)

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--model", default=None,
                            help="tiny-mixtral (CPU default) | mixtral-8x7b-random[:LAYERS] (GPU default: all 32 "
                                 "layers, ~94 GB in bf16) | a local Mixtral HF folder")
        parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"),
                            help="the model's dtype (default bfloat16)")
        parser.add_argument("--routers", default=DEFAULT_ROUTERS,
                            help=f"comma-separated capacity rules compared with top-k (default {DEFAULT_ROUTERS}; "
                                 "'none': arithmetic only)")
        parser.add_argument("--probe-row", default="last", choices=("last", "first"),
                            help="the probe's row: last (claims its expert slots after every other request, "
                                 "default) or first")
        parser.add_argument("--gen-steps", type=int, default=None,
                            help="greedy tokens per run (default 4 on a CPU, 16 on a GPU; 0: none)")
        parser.add_argument("--prompt", default=None, help="the probe prompt (default: a short sentence)")

    def configure(self, args):
        from probes.moe.routing import parse_router
        self.routers = []
        if args.routers.strip() != "none":
            for text in filter(None, (t.strip() for t in args.routers.split(","))):
                spec = parse_router(text, "--routers")
                if spec.mode != "capacity":
                    raise UsageError(f"--routers: {text}: top-k is what every router is compared with; "
                                     "give capacity rules")
                self.routers.append(spec.text)
        batches = self.values("batch")
        bad = [n for n in batches if not 1 <= n <= 64]
        if bad:
            raise UsageError(f"--batch-sizes: {bad[0]} is not in 1..64 (the probe and 0..63 others)")
        if args.gen_steps is not None and args.gen_steps < 0:
            raise UsageError(f"--gen-steps must be >= 0, got {args.gen_steps}")
        gpu = self.device.startswith("cuda")
        self.model_name = args.model or ("mixtral-8x7b-random" if gpu else "tiny-mixtral")
        if self.model_name in ("mistral-7b-random", "mistral-tiny", "smollm2"):
            raise UsageError(f"--model {self.model_name}: not a mixture of experts (tiny-mixtral, "
                             "mixtral-8x7b-random[:LAYERS] or a local Mixtral folder)")
        self.gen_steps = args.gen_steps if args.gen_steps is not None else (16 if gpu else 4)
        self.prompt = args.prompt if args.prompt is not None else (GPU_PROMPT if gpu else CPU_PROMPT)
        self._lm = None
        self._runs = {}

    def config(self, fingerprint):
        return {"model": self.model_name, "dtype": self.args.dtype, "routers": self.routers,
                "probe_row": self.args.probe_row, "gen_steps": self.gen_steps, "prompt": self.prompt,
                "others": "llm.serve.make_traffic background prompts (traffic corpus), seed --seed, "
                          "lengths 1/2..3/2 of the probe's"}

    # ---- the plan ----------------------------------------------------------------------------------------

    def plan(self):
        yield self.case(part="near_tie")
        yield self.case(part="router_precision")
        for n in self.values("batch"):
            if n > 1:
                yield self.case(part="arithmetic", batch=n)
        for router in self.routers:
            for n in self.values("batch"):
                yield self.case(part="routing", router=router, batch=n)

    def record(self, case):
        part = case.part
        key = {"near_tie": "moe/near_tie", "router_precision": "moe/router_precision",
               "arithmetic": f"moe/arithmetic/batch={case.get('batch')}",
               "routing": f"moe/routing/{case.get('router')}/batch={case.get('batch')}"}[part]
        params = {"part": part, **({"batch": case.batch} if "batch" in case else {}),
                  **({"router": case.router} if "router" in case else {})}
        inputs = {"model": self.model_name, "weights_seed": self.seed, "dtype": self.args.dtype,
                  "prompt": self.prompt, "others_seed": self.seed, "probe_row": self.args.probe_row,
                  "gen_steps": self.gen_steps}
        return dict(key=key, inputs=inputs, params=params, compares=reports_not_run())

    # ---- the runs ----------------------------------------------------------------------------------------

    def lm(self):
        if self._lm is None:
            import torch
            from llm.models import load
            from probes.moe.batch import others_from_traffic
            lm = load(self.model_name, self.device, getattr(torch, self.args.dtype), self.seed)
            if getattr(lm.model.config, "model_type", "") != "mixtral":
                raise UsageError(f"--model {self.model_name}: not a mixture of experts (no router, no experts)")
            self._lm = lm
            self.ids = lm.tokenizer.encode(self.prompt)
            self.others = others_from_traffic(lm.tokenizer, self.ids, 63, self.seed)
            self.top_k = lm.model.config.num_experts_per_tok
        return self._lm

    def run(self, batch, router="", variant=""):
        """The probe measured in a batch of `batch` under `router` ("": top-k); variant "fp32_router"."""
        key = (batch, router, variant)
        if key not in self._runs:
            from probes.moe.batch import fp32_router, measure, probe_router_gemm
            lm = self.lm()
            taps = {"": None, "fp32_router": fp32_router, "probe_router_gemm": probe_router_gemm}
            self._runs[key] = measure(lm, self.device, self.ids, self.others, batch=batch, router=router,
                                      probe_row=self.args.probe_row, gen_steps=self.gen_steps,
                                      tap_factory=taps[variant])
        return self._runs[key]

    def run_case(self, case, report):
        from probes.moe.batch import compare, near_ties
        lm = self.lm()
        tok = lm.tokenizer
        part = case.part
        if part == "near_tie":
            metrics = near_ties(self.run(1), self.top_k)
        elif part == "router_precision":
            metrics = compare(self.run(1), self.run(1, variant="fp32_router"), tok)
            metrics["note"] = (f"router logits in {self.args.dtype} vs float32, the probe alone, top-k"
                               if self.args.dtype != "float32" else "a float32 model: both routers float32")
        elif part == "arithmetic":
            metrics = compare(self.run(1), self.run(case.batch), tok)
            metrics["router_gemm"] = compare(self.run(case.batch, variant="probe_router_gemm"), self.run(case.batch),
                                             tok)
        else:
            capped = self.run(case.batch, case.router)
            metrics = compare(self.run(case.batch), capped, tok)
            metrics["both"] = compare(self.run(1), capped, tok)
            # the question itself: under this rule, does the probe's routing depend on its neighbours?
            metrics["neighbours"] = compare(self.run(1, case.router), capped, tok)
            metrics["routing"] = capped.routing
            metrics["probe_slots_dropped"] = sum(r["probe_slots_dropped"] for r in capped.routing)
            metrics["probe_tokens_all_dropped"] = sum(r["probe_tokens_all_dropped"] for r in capped.routing)
            metrics["batch_slots_dropped"] = sum(r["batch_slots_dropped"] for r in capped.routing)
            metrics["batch_slots_rerouted"] = sum(r["batch_slots_rerouted"] for r in capped.routing)
        metrics["prompt_tokens"] = len(self.ids)
        self.add(report, case, metrics=metrics, compares=reports.compares_all_metrics(metrics, but=("note",)))

    def finish(self, report):
        """On near_tie: the gaps (ulps) of the tokens whose expert set the arithmetic changed, per layer."""
        ok = {e["key"]: e for e in report["experiments"] if e["status"] == "ok"}
        tie = ok.get("moe/near_tie")
        if tie is None:
            return
        flipped = []
        for key, e in ok.items():
            if not (key.startswith("moe/arithmetic/") or key == "moe/router_precision"):
                continue
            for sub, m in (("", e["metrics"]), ("/router_gemm", e["metrics"].get("router_gemm"))):
                for lay in (m or {}).get("layers", []):
                    gaps = tie["metrics"]["layers"][lay["layer"]]["gap_ulps"]
                    flipped += [{"case": key + sub, "layer": lay["layer"], "token": t, "gap_ulps": gaps[t]}
                                for t in lay["changed_tokens"] if t < len(gaps)]
        tie["metrics"]["arithmetic_flips"] = flipped

    def table(self, report):
        return table.format_table(report)

    def plot(self, report, path):
        return table.plot(report, path)
