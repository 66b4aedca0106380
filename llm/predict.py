"""python -m llm.predict: PREDICT what a model answers on GPUs you do not have, from their profiles (issue 17).

    python -m llm.predict --profiles t4-like,a10g-like --dtype float16 --gen 4 --out DIR

The seed experiment (llm.seed's prompts: "I enjoy walking in the", optionally the retrieval prompt) on a
model (default SmolLM2-135M, CPU) once per GPU profile, every linear computed with that profile's
arithmetic (linear=emulate:PROFILE, exact: numpy on the CPU, llm.emulate_triton's kernel with
--device cuda), everything else (attention, norms, softmax) by that machine in the same dtype. The
~1,388-token retrieval prompt takes hours per forward on the CPU: run it with --device cuda. Per prompt: the top next token and its probability, p(prompt token | prefix)
at every position, a greedy continuation, and between the first profile (A) and each other (B): per-token
|dp|, top-1 flips, the last position's logit drift, the first step where greedy decoding parts
(llm.seed.compare_prompt).

These are PREDICTIONS, not measurements: the linears are the profiles' models (published or assumed
for GPUs not measured here: each profile lists its assumptions, and they are copied into the output),
and the rest of the model runs on this CPU, not on those GPUs. Every output line and file says so.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from probes.errors import UsageError

__all__ = ["predict", "format_prediction", "main"]

LABEL = "PREDICTION"


def predict(lm, profiles, dtype, prompts, gen_steps, *, max_tokens=0, device="cpu"):
    """{"profiles": {name: {prompt: stats}}, "comparisons": {B: {prompt: compare_prompt(A, B)}}, ...}."""
    from llm.emulate import emulated_linear
    from llm.runconfig import parse_run
    from llm.seed import _prompts, compare_prompt, prompt_stats
    texts = {n: t for n, t in _prompts() if n in prompts}
    missing = [p for p in prompts if p not in texts]
    if missing:
        raise UsageError(f"--prompts: unknown prompt(s) {', '.join(missing)} (known: seed, retrieval)")
    stats, lasts, plans = {}, {}, {}
    for prof in profiles:
        cfg = parse_run(f"device={device},dtype={dtype},linear=emulate:{prof}")
        stats[prof], lasts[prof] = {}, {}
        em = emulated_linear(prof)
        em.plans.clear()
        for name, text in texts.items():
            ids = lm.tokenizer.encode(text)
            ids = ids[:max_tokens] if max_tokens else ids
            t0 = time.perf_counter()
            s, last = prompt_stats(lm, cfg, ids, gen_steps)
            s["timings"]["total_s"] = time.perf_counter() - t0
            stats[prof][name], lasts[prof][name] = s, last
            print(f"{LABEL} [{prof}] {name}: {len(ids)} tokens, top {s['top']['piece']!r} p={s['top']['p']:.6f}, "
                  f"greedy {s['greedy']['text']!r} ({s['timings']['total_s']:.1f} s)", flush=True)
        plans[prof] = em.summary()
    a = profiles[0]
    comps = {b: {n: compare_prompt(stats[a][n], stats[b][n], lasts[a][n], lasts[b][n]) for n in texts}
             for b in profiles[1:]}
    return {"label": LABEL, "dtype": dtype, "profiles": stats, "comparisons": comps, "emulation": plans,
            "a": a, "device": device}


def format_prediction(res, tok) -> str:
    a = res["a"]
    dev = res.get("device", "cpu")
    where = "on this CPU" if dev == "cpu" else f"llm.emulate_triton's kernel on {dev}"
    lines = [f"{LABEL}S (not measurements): every linear with the GPU profile's arithmetic (exact, "
             f"{where}), everything else by this machine's {dev} kernels in {res['dtype']}; A = {a}"]
    for prof, s in res["profiles"].items():
        for name, st in s.items():
            t = st["top"]
            lines.append(f"  {LABEL} {prof:<16} {name:<9} next {t['piece']!r} p={t['p']:.6f} "
                         f"(runner-up {t['runner_up_piece']!r} {t['p_runner_up']:.6f}); greedy {st['greedy']['text']!r}")
    for b, per in res["comparisons"].items():
        for name, c in per.items():
            g = c["greedy"]
            div = "never parts" if g["first_divergence"] is None else f"parts at step {g['first_divergence']}"
            lines.append(f"  {LABEL} {a} vs {b} [{name}]: first token {'same' if c['first_token']['same'] else 'DIFFERS'}"
                         f" (dp {c['first_token']['dp']:+.3g}); per-token max|dp| {c['p_next']['max_abs_dp']:.3g} "
                         f"(mean {c['p_next']['mean_abs_dp']:.3g}); top-1 flips {c['top1_flips']}; last-position "
                         f"max|dlogit| {c['last_logits']['max_abs_dlogit']:.3g}; greedy ({g['steps']} steps) {div}")
            pa = res["profiles"][a][name]["p_next"]
            pb = res["profiles"][b][name]["p_next"]
            ids = res["profiles"][a][name]["ids"]
            if len(pa) <= 40:
                lines.append(f"    {'position':>8} {'token':<14} {'p ' + a:>16} {'p ' + b:>16} {'dp':>10}")
                for i, (x, y) in enumerate(zip(pa, pb)):
                    lines.append(f"    {i + 1:>8} {tok.piece(ids[i + 1])!r:<14} {x:>16.7f} {y:>16.7f} {y - x:>+10.2e}")
    for prof, e in res["emulation"].items():
        lines.append(f"  [{prof}] {e['linear_shapes']} linear shapes, K order assumed for {e['k_order_assumed']}; "
                     f"model basis {', '.join(e['model_basis'])}")
        for s in e["assumptions"]:
            lines.append(f"    assumed: {s}")
    return "\n".join(lines)


def main(argv=None):
    from llm.models import load
    from probes.cli import resolve_device
    ap = argparse.ArgumentParser(prog="python -m llm.predict", description=__doc__.split("\n\n")[0],
                                 epilog="Outputs are PREDICTIONS (see docs/profiles.md).")
    ap.add_argument("--profiles", default="t4-like,a10g-like", help="comma-separated GPU profiles; the first is A")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"))
    ap.add_argument("--prompts", default="seed", help="comma-separated of seed, retrieval (default seed)")
    ap.add_argument("--gen", type=int, default=4, help="greedy tokens (default 4)")
    ap.add_argument("--max-tokens", type=int, default=0, help="cut the prompts to this many tokens")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None, help="folder for predict.json and predict.txt")
    args = ap.parse_args(argv)
    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    if len(profiles) < 2:
        raise UsageError("--profiles: give at least two profiles (A first)")
    device = resolve_device(args.device)
    import torch
    from llm.runconfig import DTYPES, parse_run
    for p in profiles:                                        # every profile checked before the model loads
        parse_run(f"device={device},dtype={args.dtype},linear=emulate:{p}")
    lm = load(args.model, device, DTYPES[args.dtype], 0)
    res = predict(lm, profiles, args.dtype, [p.strip() for p in args.prompts.split(",") if p.strip()], args.gen,
                  max_tokens=args.max_tokens, device=device)
    text = format_prediction(res, lm.tokenizer)
    print(text)
    if args.out:
        from probes.device import fingerprint
        from probes.report import add_experiment, compares_all_metrics, new_report, write_report
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        rep = new_report("llm-predict", command=["python", "-m", "llm.predict"] + list(argv or sys.argv[1:]),
                         fingerprint=fingerprint(device),
                         config={"label": LABEL, "model": args.model, "dtype": args.dtype, "profiles": profiles,
                                 "gen_steps": args.gen, "torch": torch.__version__,
                                 "emulation": res["emulation"]})
        for prof, per in res["profiles"].items():
            for name, st in per.items():
                add_experiment(rep, key=f"prediction/{prof}/{name}", inputs={"prompt": name, "weights_seed": 0,
                               "token_ids": st["ids"]}, params={"profile": prof, "label": LABEL},
                               metrics={k: v for k, v in st.items() if k not in ("timings", "ids")},
                               compares=compares_all_metrics({k: v for k, v in st.items() if k not in ("timings", "ids")}))
        for b, per in res["comparisons"].items():
            for name, c in per.items():
                add_experiment(rep, key=f"prediction/{res['a']}-vs-{b}/{name}", inputs={"prompt": name},
                               params={"a": res["a"], "b": b, "label": LABEL}, metrics=c,
                               compares=compares_all_metrics(c))
        write_report(rep, out / "predict.json")
        (out / "predict.txt").write_text(text + "\n")
        print(f"report: {out / 'predict.json'}")
    return 0


if __name__ == "__main__":
    from probes.cli import guarded_main
    sys.exit(guarded_main(main))
