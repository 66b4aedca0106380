"""The mechanism table: each mechanism the probes measure switched on alone inside a model, ranked by
what it does to the final logits (issue 20).

    python -m llm.mechanisms --device cpu --model mistral-tiny --json mech.json --plot mech.png
    python -m llm.mechanisms --device cuda --dtype bfloat16 --json mech.json      # the 7B shape

Every row runs the same prompt twice, a reference and a variant that differ in ONE thing, and
attributes the drift (llm.attribute, causal mode `inject`: the reference with one unit's own error put
in; layers, op classes, and the ops of the `--drill` layers that explain most). The base run is
`device=D,dtype=T,attn=eager` (eager so that the softmax rows can replace the softmax; sdpa fuses it).
Rows (llm.runconfig / llm.mechkernels name the variants; `--mechanisms` picks them):

    norm-fixed      norm=fixed           RMSNorm sums as the reduction probe's fixed-order tree
    norm-atomic     norm=atomic          the same, partials added by atomics (CPU: a seeded arrival order)
    softmax-fixed   softmax=fixed        the attention softmax's sums, fixed-order tree
    softmax-atomic  softmax=atomic       ... atomics
    fma-on          fma=on               every covered op contracted: the rotary rotation, RMSNorm's mean plus
                                         epsilon, act(gate)*up (default: unfused)
    fma-norm        fma=on:norm vs fma=off:norm   RMSNorm's s*(1/n) + eps fused (no effect where n is a
                                         power of two: s*(1/n) is exact)
    fma-mlp         fma=on:mlp vs fma=off:mlp     act(gate)*up: a product alone, expected 0 (a check)
    batch-8         batch=8              the prompt as row 0 of a batch of 8 (vs alone)
    int4-formula    weights=int4:fma:float16:gG vs int4:sub_mul:float32:gG (the dequantisation formula)
    fp8-via         weights=fp8:channel:bfloat16 vs fp8:channel (FP8 dequant: the scale rounded to bfloat16
                                         first vs the product in float32; the dequant probe's kernel)
    fp8-scaling     weights=fp8:block vs fp8:channel (FP8 scales per 128x128 block vs per output row)
    q4_1-weights    weights=q4_1 vs native (GGUF Q4_1 quantisation itself: a scale for the rows above)
    tf32-on         tf32=on              (float32 on a GPU) TF32 tensor cores in the linears
    cublaslt-rank1  linear=cublaslt:1    (GPU) every linear through the heuristic's second pick, vs its
                                         default pick (linear=cublaslt:0)
    cublaslt-m8     linear=cublaslt:0:mM (GPU) the heuristic's pick for M = 8 x the prompt's rows, vs
                                         linear=cublaslt:0 (what a batch change does to a linear)
    int4-fused      weights=int4:sub_mul:float32:gG:fused vs ...:tiles (bfloat16) the dequant probe's Triton int4
                                         matmul dequantising tile by tile inside it vs reading the dequantised
                                         weight with the same tiles (on a GPU the fused loads can reorder K)
    fp8-fast-accum  linear=fp8mm:fast    (GPU, sm_89+) every linear an FP8 GEMM (e4m3fn, per-tensor scales)
                                         with cuBLASLt's fast accumulation, vs linear=fp8mm:accurate

    machine-change  --trace NPZ          a trace of the same run recorded on another machine (llm.trace): its
                                         final logits vs this machine's; its ops named by llm.replay (each
                                         traced op recomputed here from A's inputs: local relative error)

Columns: final-logit rms and max |dlogit|, KL (mean over positions), top-1 flips over the prompt,
first greedy divergence (step, of `--gen-steps`), the top three op units of the causal attribution
(inject) with their contributions. Also a JSON report (probes.report: schema, fingerprint, seeds,
per row the drift, the per-layer contributions and the top ops), a bar plot of the rms drift per row
and a mechanism x layer heatmap of the layer contributions.
A row the device or dtype cannot run is listed as skipped with the reason (asked for by name with
--mechanisms, it is an error instead).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from probes.errors import UsageError

__all__ = ["MECHANISMS", "MACHINE_ROW", "rows_for", "run_table", "trace_row", "format_table", "plot_bars",
           "plot_layer_heatmap", "main"]


def _int4_group(model_name):
    return 128 if model_name == "mistral-7b-random" else 32


# name -> (what it is, reference extra, variant extra, needs): extra = run-config items added to the base;
# needs: "gpu", "float32", "eager"
MECHANISMS = {
    "norm-fixed": ("RMSNorm sums: reduction probe's fixed-order tree", "", "norm=fixed", ()),
    "norm-atomic": ("RMSNorm sums: atomics (CPU: seeded arrival order)", "", "norm=atomic", ()),
    "softmax-fixed": ("softmax sums: fixed-order tree", "", "softmax=fixed", ()),
    "softmax-atomic": ("softmax sums: atomics (CPU: seeded arrival order)", "", "softmax=atomic", ()),
    "fma-on": ("rotary, norm, mlp: fused multiply-adds (default: unfused)", "", "fma=on", ()),
    "fma-norm": ("RMSNorm's s*(1/n)+eps fused vs not", "fma=off:norm", "fma=on:norm", ()),
    "fma-mlp": ("act(gate)*up via the FMA program, fused vs not", "fma=off:mlp", "fma=on:mlp", ()),
    "batch-8": ("batch 1 vs 8 (prompt = row 0)", "", "batch=8", ()),
    "int4-formula": ("int4 dequant: fma/float16 vs sub_mul/float32", "weights=int4:sub_mul:float32:g{G}",
                     "weights=int4:fma:float16:g{G}", ()),
    "fp8-via": ("fp8 dequant: bf16 scale vs float32 product", "weights=fp8:channel",
                "weights=fp8:channel:bfloat16", ()),
    "fp8-scaling": ("fp8 scales: 128x128 blocks vs per row", "weights=fp8:channel", "weights=fp8:block", ()),
    "q4_1-weights": ("GGUF Q4_1 weights vs native (quantisation)", "", "weights=q4_1", ()),
    "tf32-on": ("linears on TF32 tensor cores (fp32)", "tf32=off", "tf32=on", ("gpu", "float32")),
    "cublaslt-rank1": ("cuBLASLt: heuristic's 2nd pick vs its 1st", "linear=cublaslt:0", "linear=cublaslt:1",
                       ("gpu",)),
    "cublaslt-m8": ("cuBLASLt: the pick for 8x the rows vs the pick for M", "linear=cublaslt:0",
                    "linear=cublaslt:0:m{M8}", ("gpu",)),
    "int4-fused": ("int4 weights: dequantised inside the matmul vs before it (same Triton tiles)",
                   "weights=int4:sub_mul:float32:g{GF}:tiles", "weights=int4:sub_mul:float32:g{GF}:fused", ("bf16",)),
    "fp8-fast-accum": ("FP8 GEMMs: cuBLASLt fast accumulation vs not", "linear=fp8mm:accurate", "linear=fp8mm:fast",
                       ("gpu",)),
}
DEFAULT_CPU = ("norm-fixed", "norm-atomic", "softmax-fixed", "softmax-atomic", "fma-on", "batch-8")


def _why_not(needs, device, dtype):
    if "gpu" in needs and not device.startswith("cuda"):
        return "needs a CUDA GPU"
    if "float32" in needs and dtype != "float32":
        return "applies to float32 runs"
    if "bf16" in needs and dtype != "bfloat16":
        return "needs bfloat16 runs"
    return ""


def rows_for(names, *, device, dtype, model_name, prompt_len, explicit=False):
    """[(name, description, reference spec, variant spec, skip reason)] of the asked rows."""
    base = f"device={device},dtype={dtype},attn=eager"
    out = []
    for name in names:
        if name not in MECHANISMS:
            raise UsageError(f"--mechanisms: unknown {name!r} (available: {', '.join(MECHANISMS)})")
        desc, ref_x, var_x, needs = MECHANISMS[name]
        why = _why_not(needs, device, dtype)
        if why and explicit:
            raise UsageError(f"--mechanisms {name}: {why} (this run: device={device}, dtype={dtype})")
        fill = {"G": _int4_group(model_name), "GF": 128 if model_name == "mistral-7b-random" else 32,
                "M8": 8 * prompt_len}
        ref = ",".join(filter(None, (base, ref_x.format(**fill))))
        var = ",".join(filter(None, (base, var_x.format(**fill))))
        out.append((name, desc, ref, var, why))
    return out


def _summary(res, n_top=3):
    d = res["drift"]
    g = res.get("generation") or {}
    ops = [r for r in res.get("causal", []) if r["kind"] == "op"][:n_top]
    layers = {r["unit"]: r["contribution"] for r in res.get("causal", []) if r["kind"] == "layer"}
    n = res["n_layers"]
    return {"rms_dlogit": d["rms_dlogit"], "max_dlogit": d["max_dlogit"], "kl_mean": d["kl_mean"],
            "kl_max": d["kl_max"], "top1_flips": int(d["top1_flips"]),
            "first_top1_flip_position": res["first_top1_flip_position"],
            "greedy_steps": g.get("steps"), "first_greedy_divergence": g.get("first_divergence"),
            "top_ops": [{"unit": r["unit"], "contribution": r["contribution"]} for r in ops],
            "layer_contributions": [layers.get(f"L{i}", 0.0) for i in range(n)] + [layers.get("final", 0.0)],
            "timings": res.get("timings", {})}


def run_table(model_name, rows, prompt_ids, *, seed=0, gen_steps=8, drill=2, log=print):
    """Attribute each row (reference vs variant) on the prompt; {name: summary} (skipped rows: {"skipped": why})."""
    from llm.attribute import attribute
    from llm.models import load
    from llm.runconfig import parse_run
    out = {}
    for name, desc, ref_spec, var_spec, why in rows:
        if why:
            out[name] = {"description": desc, "reference": ref_spec, "variant": var_spec, "skipped": why}
            log(f"{name}: skipped ({why})")
            continue
        t0 = time.perf_counter()
        ref_cfg, var_cfg = parse_run(ref_spec), parse_run(var_spec)
        ref_lm = load(model_name, ref_cfg.device, ref_cfg.torch_dtype, seed, ref_cfg.weights)
        var_lm = load(model_name, var_cfg.device, var_cfg.torch_dtype, seed, var_cfg.weights)
        res = attribute(ref_lm, ref_cfg, var_lm, var_cfg, prompt_ids, gen_steps=gen_steps,
                        units=("op", "layer", "class"), local=True, restore=False, drill=drill,
                        modes=("inject",), progress_desc=name)
        s = _summary(res)
        s.update(description=desc, reference=ref_spec, variant=var_spec, wall_s=time.perf_counter() - t0)
        out[name] = s
        log(f"{name}: rms {s['rms_dlogit']:.3g}, {s['wall_s']:.1f} s")
    return out


MACHINE_ROW = "machine-change"


def trace_row(model_name, trace_path, prompt_ids, *, device, dtype, log=print):
    """The machine change as a row of the table (issue 20: "the GPU change, a trace from another GPU, replayed").
    The trace (llm.trace, recorded on machine A with `--layers ...,final --positions all` or any positions) holds
    A's final logits at its positions; this machine runs the same model, run config and prompt and its logits
    there are compared with A's (the same columns as the other rows; no greedy generation: a trace holds one
    forward pass). Its ops are named by llm.replay, not by injection: every traced op recomputed here from A's
    inputs, the three with the largest local relative error (`local_rel_err`). Trace recorded on this very
    machine: every column is zero (tests/test_llm_mechanisms.py)."""
    import dataclasses

    from llm.generate import drift_metrics
    from llm.models import load
    from llm.replay import replay
    from llm.runconfig import RunConfig
    from llm.runs import Run
    from llm.trace import from_numpy, read_trace
    meta, ops = read_trace(trace_path)
    if meta["model"] != model_name:
        raise UsageError(f"--trace {trace_path}: recorded with model {meta['model']!r}, this table runs "
                         f"{model_name!r} (give --model {meta['model']})")
    if list(meta["prompt_ids"]) != list(prompt_ids):
        raise UsageError(f"--trace {trace_path}: recorded on another prompt ({len(meta['prompt_ids'])} tokens, this "
                         f"table's has {len(prompt_ids)}): give the trace's prompt (--prompt/--builtin)")
    if "final.lm_head" not in ops:
        raise UsageError(f"--trace {trace_path}: holds no final logits (record it with llm.trace --layers ...,final)")
    a_cfg = RunConfig.from_dict(meta["run"])
    if a_cfg.dtype != dtype:
        raise UsageError(f"--trace {trace_path}: recorded in {a_cfg.dtype}, this table runs {dtype} "
                         f"(give --dtype {a_cfg.dtype})")
    cfg = dataclasses.replace(a_cfg, device=device, text=f"{meta['run']['text']} (trace's run) on {device}")
    t0 = time.perf_counter()
    lm = load(model_name, device, cfg.torch_dtype, meta["model_info"].get("seed", 0), cfg.weights)
    if lm.tokenizer.fingerprint != meta["tokenizer"]:
        raise UsageError(f"--trace {trace_path}: tokenised by {meta['tokenizer']}, this model's tokenizer is "
                         f"{lm.tokenizer.fingerprint}")
    pos = list(meta["positions"])
    here = Run(lm, cfg, prompt_ids).forward()[pos]
    there = from_numpy(*ops["final.lm_head"]["out"][0], device=here.device).float()
    d = {k: v.item() for k, v in drift_metrics(there, here).items()}
    flips = (there.argmax(-1) != here.argmax(-1)).nonzero().flatten().tolist()
    local = replay(lm, cfg, meta, ops)
    worst = sorted(local, key=lambda r: -r["rel_err"])[:3]
    a_where = meta.get("machine") or meta["run"].get("device", "?")      # traces before 2026-12-06: the device
    out = {"rms_dlogit": d["rms_dlogit"], "max_dlogit": d["max_dlogit"], "kl_mean": d["kl_mean"],
           "kl_max": d["kl_max"], "top1_flips": int(d["top1_flips"]),
           "first_top1_flip_position": pos[flips[0]] if flips else None, "positions": len(pos),
           "greedy_steps": None, "first_greedy_divergence": None,
           "top_ops": [{"unit": r["site"], "local_rel_err": r["rel_err"], "max_ulp": r["max_ulp"]} for r in worst],
           "replay": local, "bitwise_equal_ops": sum(r["bitwise_equal"] for r in local),
           "layer_contributions": None, "trace": str(trace_path),
           "description": f"machine change: a trace recorded on {a_where} ({Path(trace_path).name}), run here",
           "reference": f"trace {Path(trace_path).name}: {meta['run']['text'] or 'defaults'} on {a_where}",
           "variant": f"the same on {device}", "wall_s": time.perf_counter() - t0}
    log(f"{MACHINE_ROW}: rms {out['rms_dlogit']:.3g}, {out['bitwise_equal_ops']}/{len(local)} traced ops bit "
        f"exact, {out['wall_s']:.1f} s")
    return out


def _ops_text(r):
    parts = []
    for o in r["top_ops"]:
        if "contribution" in o:
            parts.append(f"{o['unit']} {o['contribution']:.2f}")
        else:
            parts.append(f"{o['unit']} local rel {o['local_rel_err']:.2g}")
    return ", ".join(parts) or "-"


def _f(x, spec=".3g"):
    return "-" if x is None else format(x, spec)


def format_table(table, *, title=""):
    head = (f"{'mechanism':<16} {'rms dlogit':>10} {'max dlogit':>10} {'KL mean':>9} {'flips':>5} "
            f"{'greedy div':>10}  top-3 ops (inject contribution)")
    lines = [f"== {title}", head, "-" * len(head)]
    done = [(n, r) for n, r in table.items() if "skipped" not in r]
    done.sort(key=lambda nr: -nr[1]["rms_dlogit"])
    for name, r in done:
        div = r["first_greedy_divergence"]
        if r["greedy_steps"] is None:
            div = f"{r['positions']} pos"          # a trace row: no generation, drift over the traced positions
        else:
            div = f"step {div}" if div is not None else f"none/{r['greedy_steps']}"
        ops = _ops_text(r)
        lines.append(f"{name:<16} {_f(r['rms_dlogit']):>10} {_f(r['max_dlogit']):>10} {_f(r['kl_mean']):>9} "
                     f"{r['top1_flips']:>5} {div:>10}  {ops}")
    for name, r in table.items():
        if "skipped" in r:
            lines.append(f"{name:<16} skipped: {r['skipped']}")
    return "\n".join(lines)


def plot_bars(table, path, title=""):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    done = sorted(((n, r) for n, r in table.items() if "skipped" not in r), key=lambda nr: -nr[1]["rms_dlogit"])
    if not done:
        return None
    fig, ax = plt.subplots(figsize=(7, 1 + 0.4 * len(done)))
    vals = [max(r["rms_dlogit"], 1e-12) for _, r in done]
    ax.barh([n for n, _ in done], vals, color="tab:blue")
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("final-logit rms drift vs the reference (log; 1e-12 = none)")
    for i, (_, r) in enumerate(done):
        ax.text(vals[i], i, f" flips {r['top1_flips']}", va="center", fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_layer_heatmap(table, path, title=""):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    done = [(n, r) for n, r in table.items() if "skipped" not in r and r.get("layer_contributions") is not None]
    if not done:
        return None
    a = np.array([r["layer_contributions"] for _, r in done], dtype=float)
    n = a.shape[1] - 1
    fig, ax = plt.subplots(figsize=(max(6.0, 2 + 0.22 * (n + 1)), 1.6 + 0.35 * len(done)))
    lim = float(np.nanmax(np.abs(a))) or 1.0
    im = ax.imshow(a, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    ax.set_yticks(range(len(done)), [n_ for n_, _ in done], fontsize=7)
    ax.set_xticks(range(n + 1), [f"L{i}" for i in range(n)] + ["final"], rotation=70, fontsize=6)
    ax.set_title((title + "\n" if title else "") + "layer contribution (inject: rms drift with the layer's own "
                 "error put in / full)", fontsize=8)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def build_parser():
    from probes.cli import add_common_args, add_plot_args
    ap = argparse.ArgumentParser(prog="python -m llm.mechanisms", description=__doc__.split("\n\n")[0])
    add_common_args(ap)
    add_plot_args(ap)
    ap.add_argument("--model", default=None, help="mistral-7b-random | mistral-tiny | smollm2 | a local HF "
                    "folder or .gguf file (default: mistral-7b-random on a GPU, smollm2 on the CPU)")
    ap.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: bfloat16 on a GPU, "
                    "float32 on the CPU)")
    ap.add_argument("--mechanisms", default=None, help="comma-separated rows (default: every row; rows the "
                    f"device/dtype cannot run are listed as skipped). Available: {', '.join(MECHANISMS)}")
    ap.add_argument("--prompt", default=None, help="prompt text (default: the seed sentence)")
    ap.add_argument("--builtin", default=None, choices=("seed", "retrieval"), help="a shipped prompt")
    ap.add_argument("--prompt-file", default=None, help="read the prompt from this file")
    ap.add_argument("--gen-steps", type=int, default=8, help="greedy tokens per run (first divergence)")
    ap.add_argument("--drill", type=int, default=2, metavar="N",
                    help="op units only inside the N layers that explain most (default 2)")
    ap.add_argument("--trace", default=None, metavar="NPZ",
                    help=f"add the row {MACHINE_ROW!r}: a trace recorded on another machine (python -m llm.trace "
                         "--layers all --positions all, the same model, dtype and prompt), run here and replayed")
    ap.add_argument("--heatmap", default=None, metavar="PATH", help="the mechanism x layer heatmap (PNG)")
    ap.add_argument("--out-table", default=None, metavar="PATH", help="also write the printed table here")
    return ap


def main(argv=None):
    from llm.attribute import load_prompt
    from llm.models import default_model, load
    from probes.cli import resolve_device
    from probes.report import add_experiment, new_report, write_report
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    model = args.model or default_model(device)
    dtype = args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    if dtype not in ("float32", "bfloat16", "float16"):
        raise UsageError(f"--dtype {dtype!r}: not one of float32, bfloat16, float16")
    tok = load(model, device, getattr(torch, dtype), args.seed).tokenizer
    name, text, ids = load_prompt(args, tok)
    if args.builtin == "seed":
        name = "seed"
    names = args.mechanisms.split(",") if args.mechanisms is not None else list(MECHANISMS)
    names = [n for n in names if n]
    if not names and not args.trace:
        raise UsageError("--mechanisms '' selects no row (give rows, or --trace for the machine-change row alone)")
    rows = rows_for(names, device=device, dtype=dtype, model_name=model, prompt_len=len(ids),
                    explicit=bool(args.mechanisms))
    t0 = time.perf_counter()
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    table = run_table(model, rows, ids, seed=args.seed, gen_steps=args.gen_steps, drill=args.drill, log=log)
    if args.trace:
        table[MACHINE_ROW] = trace_row(model, args.trace, ids, device=device, dtype=dtype, log=log)
    wall = time.perf_counter() - t0
    title = f"{model} {dtype} on {device} / {name} ({len(ids)} tokens), each mechanism alone vs its reference"
    text_table = format_table(table, title=title)
    print(text_table)
    print(f"total {wall:.1f} s")
    if args.out_table:
        Path(args.out_table).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out_table, "w") as f:
            f.write(text_table + f"\ntotal {wall:.1f} s\n")
    plot = args.plot or (args.json[:-5] + ".png" if args.json and args.json.endswith(".json") else None)
    if plot and not args.no_plot:
        try:
            if plot_bars(table, plot, title=title):
                print(f"plot: {plot}")
            heat = args.heatmap or plot[:-4] + "-layers.png"
            if plot_layer_heatmap(table, heat, title=f"{model} {dtype} on {device}"):
                print(f"heatmap: {heat}")
        except ImportError:
            print("no plot: matplotlib is not installed (pip install '.[plot]')")
    if args.json:
        from probes.device import fingerprint
        rep = new_report("llm-mechanisms", command=None, fingerprint=fingerprint(device),
                         config={"model": model, "dtype": dtype, "device": device, "drill": args.drill,
                                 "gen_steps": args.gen_steps, "causal_mode": "inject", "wall_s": wall})
        inputs = {"prompt_name": name, "prompt_tokens": len(ids), "prompt_text_head": text[:200],
                  "weights_seed": args.seed, "batch_seed": 0, "token_ids_head": ids[:32]}
        for mech, r in table.items():
            params = {k: r[k] for k in ("description", "reference", "variant")}
            if "skipped" in r:
                add_experiment(rep, key=f"mechanisms/{mech}", inputs=inputs, params=params, status="skipped",
                               message=r["skipped"], compares={"reason": "skipped"})
                continue
            metrics = {k: v for k, v in r.items() if k not in params}
            add_experiment(rep, key=f"mechanisms/{mech}", inputs=inputs, params=params, metrics=metrics,
                           compares={"metrics": ["rms_dlogit", "max_dlogit", "kl_mean", "top1_flips",
                                                 "first_greedy_divergence"]})
        write_report(rep, args.json)
        print(f"report: {args.json}")
    return 0


if __name__ == "__main__":
    from probes.cli import guarded_main
    sys.exit(guarded_main(main))
