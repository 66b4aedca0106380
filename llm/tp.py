"""Tensor parallelism: a llama/mistral model sharded over W ranks (Megatron's layout), emulated in one process and
run for real across processes.

The layout (per decoder layer): q_proj, k_proj, v_proj, gate_proj and up_proj are column-parallel (rank r keeps
the r-th block of output rows: its heads, its slice of the MLP's intermediate features); attention runs on each
rank's own heads; o_proj and down_proj are row-parallel (rank r keeps the r-th block of input columns and computes
a partial product over its slice of K, rounded to the model's dtype), and an all-reduce sums the W partials. The
embedding, the norms and lm_head stay whole on every rank. So TP=W computes every row-parallel output as W
shorter dot products, each rounded, then added in the all-reduce's order: a different order of the same sum
than TP=1's one GEMM over the whole K (docs/collective.md says when the two can be equal).

Two ways to run it:

- emulated, in one process: the run config ``tp=W`` (llm.runconfig; ``tp_reduce=rank|ring|float64`` the
  all-reduce's order) makes llm.runs.Run compute those ops this way (`replacement`), so llm.attribute
  attributes TP=W vs TP=1 drift to ops, and greedy divergence comes with it. The all-reduce is part of the
  row-parallel sites (o_proj, down_proj): the op map's sites are fixed (llm.opmap.LAYER_OPS); tp_reduce=float64
  (the partials added in float64, rounded once) against rank isolates the all-reduce's own rounding.
- for real: ``torchrun --nproc-per-node W -m llm.tp`` (gloo on CPUs, NCCL on GPUs): every rank loads the
  seeded model, shards it in place (`shard_`) and runs the prompt, with the all-reduce either the library's own
  (``native``) or a fixed-order one (``fixed``: all-gather the partials, add them in rank order: the same bits
  on every run). Rank 0 compares the logits with TP=1 and with the emulation (same kernels, same shapes: equal
  bit for bit when the all-reduce adds in rank order) and reports through probes.report.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time

import torch
import torch.nn.functional as F

from probes.errors import UsageError

__all__ = ["COLUMN_OPS", "ROW_OPS", "REDUCES", "check_tp", "replacement", "column_parallel", "row_parallel",
           "reduce_partials", "attention_groups", "per_rank", "RowParallelLinear", "shard_", "main"]

COLUMN_OPS = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
ROW_OPS = ("o_proj", "down_proj")
#: orders of the emulated all-reduce: rank ((p0 + p1) + p2) + ...; ring (the textbook ring: chunk c of the
#: flattened output starts at rank c+1, numerics.collective.ring_sum); float64 (added in float64, rounded once)
REDUCES = ("rank", "ring", "float64")
ALLREDUCES = ("native", "fixed")


def check_tp(config, tp: int) -> None:
    """UsageError unless a model of `config` can be split over `tp` ranks (heads, key/value heads and the MLP's
    intermediate features divisible by tp)."""
    if not isinstance(tp, int) or tp < 1:
        raise UsageError(f"tp={tp!r}: must be an integer >= 1")
    for name in ("num_attention_heads", "num_key_value_heads", "intermediate_size"):
        v = getattr(config, name)
        if v % tp:
            raise UsageError(f"tp={tp}: the model's {name} ({v}) is not divisible by {tp}")


def _block(n: int, tp: int, r: int) -> slice:
    step = n // tp
    return slice(r * step, (r + 1) * step)


def column_parallel(module, x, tp: int):
    """Rank r's F.linear(x, W[rows of r]) for every r, concatenated: what the W ranks hold together."""
    w, b = module.weight, module.bias
    n = w.shape[0]
    return torch.cat([F.linear(x, w[_block(n, tp, r)], None if b is None else b[_block(n, tp, r)])
                      for r in range(tp)], dim=-1)


def reduce_partials(partials, how: str = "rank"):
    """The W partial products summed as an all-reduce would (see REDUCES), in their dtype."""
    if how == "rank":
        s = partials[0]
        for p in partials[1:]:
            s = s + p
        return s
    if how == "float64":
        return torch.stack(partials).double().sum(0).to(partials[0].dtype)
    if how == "ring":
        from numerics.collective import ring_chunks
        W = len(partials)
        flat = [p.reshape(-1) for p in partials]
        out = torch.empty_like(flat[0])
        for c, (a, b) in enumerate(ring_chunks(flat[0].numel(), W)):
            s = flat[(c + 1) % W][a:b]
            for k in range(2, W + 1):
                s = s + flat[(c + k) % W][a:b]
            out[a:b] = s
        return out.view_as(partials[0])
    raise UsageError(f"tp_reduce={how!r}: not one of {', '.join(REDUCES)}")


def row_parallel(module, x, tp: int, how: str = "rank"):
    """Rank r's partial F.linear(x[cols of r], W[:, cols of r]) (contiguous, as the rank holds them), rounded to the
    dtype, then the all-reduce (`reduce_partials`); the bias, if any, added once after it."""
    w = module.weight
    k = w.shape[1]
    parts = [F.linear(x[..., _block(k, tp, r)].contiguous(), w[:, _block(k, tp, r)].contiguous())
             for r in range(tp)]
    out = reduce_partials(parts, how)
    return out if module.bias is None else out + module.bias


def attention_groups(fn, q, k, v, tp: int):
    """Attention on each rank's heads ([B, heads, T, D] in; [B, T, heads, D] out, concatenated over ranks)."""
    H, KV = q.shape[1], k.shape[1]
    return torch.cat([fn(q[:, _block(H, tp, r)], k[:, _block(KV, tp, r)], v[:, _block(KV, tp, r)])
                      for r in range(tp)], dim=2)


def per_rank(fn, tp: int, inputs, dims):
    """`fn` on each rank's block of its inputs (input j split along dims[j], copied contiguous as the rank holds
    it), the outputs concatenated along the same dims: an elementwise op that each rank applies to its own shard.
    Not the same as `fn` on the whole tensor: torch's vectorised CPU kernels (AVX-512: 16 floats a vector, the
    tail of a row in a masked/scalar path) can round an element differently with the tensor's length, so SiLU on
    a rank's 80 features is not always SiLU on 160 sliced (seen on a Sapphire Rapids host, 2026-12-05)."""
    outs = []
    for r in range(tp):
        blk = [x.narrow(d, r * (x.shape[d] // tp), x.shape[d] // tp).contiguous() if d is not None else x
               for x, d in zip(inputs, dims)]
        outs.append(fn(*blk))
    if isinstance(outs[0], tuple):
        return tuple(torch.cat([o[j] for o in outs], dim=dims[j]) for j in range(len(outs[0])))
    return torch.cat(outs, dim=dims[0])


def replacement(op: str, tp: int, how: str = "rank"):
    """The op-map replacement `rep(fn, *inputs)` that computes `op` as TP=tp ranks do together, or None (the op
    is replicated: norms, residuals, lm_head). Rotary and act_mul run per rank on the rank's heads / features
    (`per_rank`)."""
    if tp <= 1:
        return None
    if op in COLUMN_OPS:
        return lambda module, x: column_parallel(module, x, tp)
    if op in ROW_OPS:
        return lambda module, x: row_parallel(module, x, tp, how)
    if op == "attn_core":
        return lambda fn, q, k, v: attention_groups(fn, q, k, v, tp)
    if op == "rotary":      # q, k as [B, T, heads, D]; cos, sin whole
        return lambda fn, q, k, cos, sin: per_rank(fn, tp, (q, k, cos, sin), (2, 2, None, None))
    if op == "act_mul":     # gate, up as [..., intermediate]
        return lambda fn, g, u: per_rank(fn, tp, (g, u), (-1, -1))
    return None


# ------------------------------------------------------------------------------------------------
# for real, across processes


class RowParallelLinear(torch.nn.Module):
    """This rank's columns of a row-parallel linear, and the all-reduce of the partials: `allreduce` "native"
    (torch.distributed.all_reduce: the library's order) or "fixed" (all-gather, then ((p0 + p1) + p2) + ...)."""

    def __init__(self, linear, rank: int, world: int):
        super().__init__()
        k = linear.weight.shape[1]
        self.weight = torch.nn.Parameter(linear.weight.data[:, _block(k, world, rank)].contiguous(),
                                         requires_grad=False)
        self.bias = linear.bias
        self.world = world
        self.allreduce = "native"

    def forward(self, x):
        import torch.distributed as dist
        y = F.linear(x.contiguous(), self.weight)
        if self.allreduce == "native":
            dist.all_reduce(y)
        else:
            y = y.contiguous()
            g = torch.empty((self.world * y.shape[0], *y.shape[1:]), dtype=y.dtype, device=y.device)
            gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
            gather(g, y)                            # the ranks' partials, concatenated along dim 0
            y = reduce_partials(list(g.view(self.world, *y.shape)), "rank")
        return y if self.bias is None else y + self.bias


@torch.no_grad()
def shard_(model, rank: int, world: int) -> list:
    """Shard a llama/mistral model in place for rank `rank` of `world` (module docstring); returns its
    RowParallelLinear modules (set their `allreduce`)."""
    check_tp(model.config, world)
    rows = []
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        for mod in (attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj):
            n = mod.weight.shape[0]
            mod.weight = torch.nn.Parameter(mod.weight.data[_block(n, world, rank)].contiguous(), requires_grad=False)
            if mod.bias is not None:
                mod.bias = torch.nn.Parameter(mod.bias.data[_block(n, world, rank)].contiguous(), requires_grad=False)
            mod.out_features = n // world
        attn.o_proj = RowParallelLinear(attn.o_proj, rank, world)
        mlp.down_proj = RowParallelLinear(mlp.down_proj, rank, world)
        rows += [attn.o_proj, mlp.down_proj]
    return rows


def _digest(t) -> str:
    return hashlib.sha256(t.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:32]


def _greedy_tokens(run, ids, n):
    from llm.generate import greedy
    return greedy(run, ids, n) if n else []


def build_parser():
    from probes.cli import add_common_args
    ap = argparse.ArgumentParser(prog="torchrun --nproc-per-node W -m llm.tp", description=__doc__.split("\n\n")[0])
    add_common_args(ap)
    ap.add_argument("--model", default=None, help="mistral-tiny | mistral-7b-random | a local HF folder "
                    "(default: mistral-7b-random on GPUs, mistral-tiny on a CPU)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    ap.add_argument("--prompt", default=None, help="prompt text (default: llm.attribute's seed prompt)")
    ap.add_argument("--allreduce", default="native,fixed",
                    help="comma-separated: native (the library's all-reduce), fixed (all-gather, then rank order)")
    ap.add_argument("--runs", type=int, default=3, help="forwards of the prompt per all-reduce (distinct logits)")
    ap.add_argument("--gen-steps", type=int, default=8, help="greedy tokens under TP=1 and TP=W")
    ap.add_argument("--deterministic", action="store_true",
                    help="everything under llm.deterministic() (batch-invariant kernels; bfloat16/float16): with "
                         "--allreduce fixed, TP=W should repeat its bits; TP=W vs TP=1 still differs (a split K)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds a rank waits for the others")
    return ap


def main(argv=None):
    """Every rank: load, (rank 0: TP=1 and the emulation first), shard, run; rank 0 writes the report."""
    import os

    from llm.attribute import SEED_PROMPT
    from llm.generate import divergence, drift_metrics
    from llm.models import load
    from llm.runconfig import RunConfig
    from llm.runs import Run
    from llm.determinism import mode_context
    from probes.cli import parse_csv_choice, resolve_device, select_device
    from probes.collective import dist as cdist
    from probes import report as reports

    args = build_parser().parse_args(argv)
    world = cdist.world_from_env("llm.tp")
    modes = parse_csv_choice(args.allreduce, ALLREDUCES, "all-reduce")
    if args.runs < 1:
        raise UsageError(f"--runs must be >= 1, got {args.runs}")
    if args.deterministic and args.dtype == "float32":
        raise UsageError("--deterministic: llm.deterministic() covers bfloat16 and float16, not --dtype float32")
    device = (select_device if args.deterministic else resolve_device)(args.device)
    model_name = args.model or ("mistral-7b-random" if device.startswith("cuda") else "mistral-tiny")
    device = cdist.init(device, world, args.timeout)
    ok = False
    try:
        with mode_context("deterministic" if args.deterministic else "default") as det:
            dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
            lm = load(model_name, device, dtype, args.seed)
            check_tp(lm.model.config, world.size)
            ids = lm.tokenizer.encode(args.prompt if args.prompt is not None else SEED_PROMPT)
            W = world.size
            base = dict(device=device, dtype=args.dtype)
            if world.rank == 0:
                if os.environ.get("DRIFTSCOPE_NO_PROGRESS") is None:
                    print(f"llm.tp: {model_name} {args.dtype}, TP=1 and the emulated TP={W} on rank 0 ...", file=sys.stderr)
                tp1 = Run(lm, RunConfig(**base), ids)
                ref_logits = tp1.forward()
                ref_gen = _greedy_tokens(tp1, ids, args.gen_steps)
                emu = Run(lm, RunConfig(**base, tp=W), ids)
                emu_logits = emu.forward()
                emu_gen = _greedy_tokens(emu, ids, args.gen_steps)
            rows = shard_(lm.model, world.rank, W)
            lm.info["tp_sharded"] = f"rank {world.rank} of {W}"
            run = Run(lm, RunConfig(**base), ids)
            results = {}
            for mode in modes:
                for m in rows:
                    m.allreduce = mode
                digests, t = [], []
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    logits = run.forward()
                    t.append(time.perf_counter() - t0)
                    digests.append(_digest(logits))
                gen = _greedy_tokens(run, ids, args.gen_steps)
                results[mode] = (logits, digests, gen, sorted(t)[len(t) // 2])
        if world.rank != 0:
            ok = True
            return 0
        from probes.device import fingerprint
        rep = reports.new_report("tp", command=["torchrun", "--nproc-per-node", str(W), "-m", "llm.tp",
                                                *(argv if argv is not None else sys.argv[1:])],
                                 fingerprint=fingerprint(device),
                                 config={"model": model_name, "dtype": args.dtype, "world_size": W,
                                         "backend": "nccl" if device.startswith("cuda") else "gloo",
                                         "nccl_env": cdist.nccl_env(), "runs": args.runs, "gen_steps": args.gen_steps,
                                         "model_info": lm.info,
                                         "mode": det.summary() if det is not None else {"name": "default"}})
        inputs = {"prompt_tokens": len(ids), "token_ids_head": ids[:32], "weights_seed": args.seed}
        tok = lm.tokenizer
        lines = [f"llm.tp: {model_name} {args.dtype}, TP={W} ({rep['config']['backend']}) vs TP=1, "
                 f"{len(ids)}-token prompt, {args.runs} runs per all-reduce"]
        emu_key = f"tp/{model_name}/{args.dtype}/w={W}/emulated"
        emu_vs = {k: float(v) for k, v in drift_metrics(ref_logits, emu_logits).items()}
        emu_div = divergence(ref_gen, emu_gen, tok) if args.gen_steps else {}
        reports.add_experiment(rep, key=emu_key, inputs=inputs, params={"tp": W, "how": "emulated, rank order"},
                               output=emu_logits[-1].float().cpu().numpy(),
                               metrics={**emu_vs, "greedy_first_divergence": emu_div.get("first_divergence")},
                               compares={"output": True, "metrics": [*emu_vs, "greedy_first_divergence"]})
        for mode, (logits, digests, gen, med) in results.items():
            vs1 = {k: float(v) for k, v in drift_metrics(ref_logits, logits).items()}
            div = divergence(ref_gen, gen, tok) if args.gen_steps else {}
            m = {"distinct_runs": len(set(digests)), "digest": digests[0],
                 "equal_emulation": bool(torch.equal(logits, emu_logits)),
                 "equal_tp1": bool(torch.equal(logits, ref_logits)), **vs1,
                 "greedy_first_divergence": div.get("first_divergence"),
                 "tp_text": div.get("var_text"), "tp1_text": div.get("ref_text"), "median_forward_s": med}
            reports.add_experiment(rep, key=f"tp/{model_name}/{args.dtype}/w={W}/{mode}", inputs=inputs,
                                   params={"tp": W, "allreduce": mode}, output=logits[-1].float().cpu().numpy(),
                                   metrics=m, compares=reports.compares_all_metrics(m, but=("median_forward_s",),
                                                                                    output=True))
            lines.append(f"  {mode:<7} distinct runs {m['distinct_runs']}, equal to the emulation: "
                         f"{m['equal_emulation']}, equal to TP=1: {m['equal_tp1']}, max |dlogit| vs TP=1 "
                         f"{m['max_dlogit']:.3g}, top-1 flips {int(m['top1_flips'])}, greedy diverges at "
                         f"{m['greedy_first_divergence']}")
        print("\n".join(lines))
        if args.json:
            reports.write_report(rep, args.json)
            print(f"report: {args.json}")
        ok = True
        return 0
    finally:
        cdist.finish(sync=ok)


if __name__ == "__main__":
    from probes.cli import guarded_main
    sys.exit(guarded_main(main))
