"""Timing of probes.invariant's kernels against torch's own ops on the same inputs (GPU): what the
deterministic mode costs per op.

Attention is timed on continuous batching's packed calls (probes.invariant.packed): torch SDPA as
transformers' paged sdpa path calls it (k / v repeated to Hq heads by repeat_kv, the block-diagonal
float mask), against `attention` on the same call with the repeated k / v (what a torch.library
substitute of SDPA receives) and with the un-repeated GQA k / v (what a substitute of the attention
function could pass). The row kernels are timed on RMSNorm's mean (rows x hidden, float32) and softmax
over a vocabulary. Each time is the median of `reps` calls by CUDA events, each call with a cold L2,
the functions interleaved (probes.timing.cold_gpu_times).

    python -m probes.invariant.bench [--models mistral,smollm2] [--reps 30] [--quick]
"""
from __future__ import annotations

import argparse
import random
import statistics

from probes.invariant.packed import Request, pack

__all__ = ["MODELS", "scenarios", "run", "print_table", "main"]

#: (query heads, kv heads, head dim, hidden size, vocabulary)
MODELS = {"mistral": (32, 8, 128, 4096, 32768), "smollm2": (9, 3, 64, 576, 49152)}


def scenarios(quick=False):
    """(name, [Request, ...]) of the packed steps: decode of 1 / 8 / 64 requests (keys 200..2000, seeded),
    a prefill of 512 tokens, and a chunked prefill of 256 tokens next to 15 decodes; --quick: decode x1 / x8,
    prefills of 128 and 1,024 and the chunk next to 15 decodes (the serving step the tiled kernel's tiling is
    for)."""
    rng = random.Random(0)

    def decodes(n, seed0):
        return [Request(1, rng.randint(200, 2000), seed0 + i) for i in range(n)]

    steps = [("decode x1", decodes(1, 100)), ("decode x8", decodes(8, 200))]
    if quick:      # 128, and 1,024: the prefill-heavy serve load's prompts are 512-1,536 tokens
        steps += [("prefill 128", [Request(128, 128, 700)]), ("prefill 1024", [Request(1024, 1024, 800)])]
    else:
        steps += [("decode x64", decodes(64, 300)), ("prefill 512", [Request(512, 512, 400)])]
    steps.append(("chunk 256 + 15 decodes", [Request(256, 1280, 500)] + decodes(15, 600)))
    return steps


def _median_ms(fns, reps):
    from probes.timing import cold_gpu_times
    return [statistics.median(t) for t in cold_gpu_times(fns, reps)]


def _attention_rows(model, reps, quick, dtype):
    import torch
    import torch.nn.functional as F

    from probes.invariant.attention import TILE_M, attention

    hq, hk, d, _, _ = MODELS[model]
    rows = []
    for name, reqs in scenarios(quick):
        call = pack(reqs, hq=hq, hk=hk, d=d, dtype=dtype, device="cuda")
        k_rep = call.k.repeat_interleave(hq // hk, 1).contiguous()
        v_rep = call.v.repeat_interleave(hq // hk, 1).contiguous()
        res = attention(call.q, call.k, call.v, attn_mask=call.mask)
        if int(res.uncovered):
            raise RuntimeError(f"{model} {name}: {int(res.uncovered)} mask rows not covered")
        r_max = TILE_M // (hq // hk)
        fns = [lambda: F.scaled_dot_product_attention(call.q, k_rep, v_rep, attn_mask=call.mask),
               lambda: attention(call.q, k_rep, v_rep, attn_mask=call.mask),
               lambda: attention(call.q, call.k, call.v, attn_mask=call.mask),
               lambda: attention(call.q, call.k, call.v, attn_mask=call.mask, tiled=True),
               lambda: attention(call.q, call.k, call.v, attn_mask=call.mask, tiled=True, tile_rows=r_max),
               lambda: attention(call.q, call.k, call.v, attn_mask=call.mask, tiled=True, tile_rows=1)]
        t_sdpa, t_rep, t_gqa, t_tiled, t_fixed, t_tiled1 = _median_ms(fns, reps)
        shape = f"Lq {call.q.shape[2]}, Lk {call.k.shape[2]}"
        rows.append(dict(model=model, op="attention", case=name, shape=shape, torch_ms=t_sdpa, ours_ms=t_rep,
                         note="repeated k/v"))
        rows.append(dict(model=model, op="attention", case=name, shape=shape, torch_ms=t_sdpa, ours_ms=t_gqa,
                         note=f"GQA k/v ({hk} heads)"))
        rows.append(dict(model=model, op="attention", case=name, shape=shape, torch_ms=t_sdpa, ours_ms=t_tiled,
                         note=f"GQA k/v, tiled=True (tiles per request, R <= {r_max}: the default)"))
        rows.append(dict(model=model, op="attention", case=name, shape=shape, torch_ms=t_sdpa, ours_ms=t_fixed,
                         note=f"GQA k/v, tiled=True, tile_rows={r_max} (fixed tiles)"))
        rows.append(dict(model=model, op="attention", case=name, shape=shape, torch_ms=t_sdpa, ours_ms=t_tiled1,
                         note="GQA k/v, tiled=True, tile_rows=1"))
        call = k_rep = v_rep = fns = None        # free this step's tensors before the next is packed
        torch.cuda.empty_cache()
    return rows


def _row_rows(model, reps, quick):
    import torch

    from probes.invariant.rows import row_mean, softmax

    _, _, _, hidden, vocab = MODELS[model]
    rows = []
    g = torch.Generator(device="cuda").manual_seed(1)
    for n_rows in ((1, 64) if quick else (1, 64, 2048)):
        h = torch.randn((n_rows, hidden), device="cuda", generator=g).pow(2)
        t_torch, t_ours = _median_ms([lambda: h.mean(-1, keepdim=True), lambda: row_mean(h, [-1], True)], reps)
        rows.append(dict(model=model, op="mean (RMSNorm)", case=f"{n_rows} rows", shape=f"x {hidden} fp32",
                         torch_ms=t_torch, ours_ms=t_ours, note=""))
        if n_rows <= 64:
            logits = torch.randn((n_rows, vocab), device="cuda", generator=g)
            t_torch, t_ours = _median_ms([lambda: torch.softmax(logits, -1), lambda: softmax(logits, -1)], reps)
            rows.append(dict(model=model, op="softmax", case=f"{n_rows} rows", shape=f"x {vocab} fp32",
                             torch_ms=t_torch, ours_ms=t_ours, note=""))
    return rows


def run(models=("mistral", "smollm2"), reps=30, quick=False, dtype=None):
    """The table's rows (dicts: model, op, case, shape, torch_ms, ours_ms, note) on the current GPU."""
    import torch

    from probes.errors import NoGPUError

    if not torch.cuda.is_available():
        raise NoGPUError("probes.invariant.bench times GPU kernels: no CUDA GPU is usable here")
    dtype = torch.bfloat16 if dtype is None else dtype
    rows = []
    for model in models:
        rows += _attention_rows(model, reps, quick, dtype)
        rows += _row_rows(model, reps, quick)
    return rows


def print_table(rows, out=print):
    out(f"{'model':8} {'op':15} {'case':24} {'shape':22} {'torch ms':>9} {'ours ms':>9} {'ours/torch':>10}  note")
    for r in rows:
        out(f"{r['model']:8} {r['op']:15} {r['case']:24} {r['shape']:22} {r['torch_ms']:9.4f} {r['ours_ms']:9.4f} "
            f"{r['ours_ms'] / r['torch_ms']:10.2f}  {r['note']}")


def main(argv=None):
    from probes.errors import UsageError

    ap = argparse.ArgumentParser(prog="python -m probes.invariant.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="mistral,smollm2", help="comma-separated: " + ", ".join(MODELS))
    ap.add_argument("--reps", type=int, default=30, help="timed calls per function (median)")
    ap.add_argument("--quick", action="store_true", help="the small scenarios only")
    args = ap.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise UsageError(f"--models: unknown {', '.join(unknown) or '(none given)'}; valid: {', '.join(MODELS)}")
    if args.reps < 1:
        raise UsageError(f"--reps must be >= 1, got {args.reps}")
    print_table(run(models, args.reps, args.quick))
    return 0


if __name__ == "__main__":
    from probes.cli import guarded_main
    raise SystemExit(guarded_main(main))
