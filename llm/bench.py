"""The GPU session of llm/ (scripts/gpu/llm.sh): Mistral-7B's shape with seeded weights on one GPU.

    python -m llm.bench OUTDIR

Stages (each prints its wall time; results are written as they come, so a cut-off run leaves them):
1. load the float32 and bfloat16 models (seeded; float32 on the GPU stands in for the seed
   experiment's CPU float32: a 7B float32 forward on the CPU is far too slow there);
2. plain bfloat16 forward over the ~1,450-token retrieval prompt (CUDA events, median), the same with
   the op taps installed, and with the recording tap: the hook overhead;
3. the seed prompt "I enjoy walking in the": top token and probability under fp32, bf16, bf16 batch 8;
4. attribution fp32 -> bf16 on the retrieval prompt: drift, per-token probabilities, first flip,
   greedy divergence, local error, causal attribution in both modes: correct (every op, layer and op
   class) and inject (the default here; layers, classes, and every op of the 2 layers that inject
   most: each inject forward is a float32 one) (wall time, heatmap, JSON);
5. attribution bf16 batch 1 -> bf16 batch 8 (layers and op classes only: each batch-8 forward costs 8);
6. trace of layers 0, 31 and final at the last position, replayed with eager attention.

    python -m llm.bench OUTDIR --batch-invariant [--max-tokens N]

instead runs only `batch_invariant_stage` (bf16 model alone): batch 1 vs batch 8 with every linear the
batch-invariant Triton matmul (linear=batch_invariant), next to the same with torch's linears.

A stage that fails prints its traceback and the later stages still run; the exit status is then 1 and the
last line names the failed stages. Reports record the full command line (with its arguments).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch


def stage(name, t0):
    print(f"-- stage {name}: {time.perf_counter() - t0:.1f} s", flush=True)


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(prog="python -m llm.bench")
    ap.add_argument("out", nargs="?", default="llm-bench")
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--model", default="mistral-7b-random")
    ap.add_argument("--max-tokens", type=int, default=0, help="cut the long prompt (CPU smoke tests)")
    ap.add_argument("--inject-drill", type=int, default=2, help="fp32-vs-bf16 inject mode: op units only in "
                    "the N layers that inject most (0: every op, ~530 fp32 forwards)")
    ap.add_argument("--batch-invariant", action="store_true", help="only the batch-invariant linear stage "
                    "(batch_invariant_stage): bf16 batch 1 vs 8, linear=batch_invariant next to linear=torch")
    args = ap.parse_args(argv)
    command = ["python", "-m", "llm.bench", *(sys.argv[1:] if argv is None else argv)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.batch_invariant:
        return batch_invariant_stage(out, args.device, args.model, args.max_tokens, command=command)
    from llm.attribute import RETRIEVAL_PROMPT_FILE, SEED_PROMPT, add_report_entries, attribute
    from llm.generate import greedy
    from llm.models import load
    from llm.opmap import install
    from llm.runconfig import parse_run
    from llm.runs import Run, RunTap
    from llm.table import format_result, plot_heatmap
    from probes.device import fingerprint, fingerprint_summary
    from probes.report import new_report, write_report
    from probes.timing import median, time_runs
    dev = args.device
    cuda = dev.startswith("cuda")

    def sync():
        if cuda:
            torch.cuda.synchronize()
    fp = fingerprint(dev)
    print("device:", fingerprint_summary(fp))
    summary = {}
    failed = []  # names of the stages that raised: the exit status is 1 when there is any

    def save():
        (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))

    t0 = time.perf_counter()
    bf = load(args.model, dev, torch.bfloat16, 0)
    f32 = load(args.model, dev, torch.float32, 0)
    sync()
    stage(f"load fp32 + bf16 {args.model}", t0)
    if cuda:
        print(f"   GPU memory allocated {torch.cuda.memory_allocated() / 2**30:.1f} GiB")
    tok = bf.tokenizer
    long_text = RETRIEVAL_PROMPT_FILE.read_text()
    long_ids = tok.encode(long_text)
    if args.max_tokens:
        long_ids = long_ids[:args.max_tokens]
    seed_ids = tok.encode(SEED_PROMPT)
    print(f"   retrieval prompt: {len(long_ids)} tokens; seed prompt ids {seed_ids}")

    # 2 -- plain forward and hook overhead ---------------------------------------------------------
    t0 = time.perf_counter()
    run = Run(bf, parse_run(f"device={dev},dtype=bfloat16"), long_ids)
    om = install(bf.model)
    om.remove()
    ids = run.input_ids

    def plain(i):
        with torch.inference_mode():
            bf.model(input_ids=ids, use_cache=False, logits_to_keep=1)

    t_plain = median(time_runs(plain, 20, device=dev))
    run = Run(bf, parse_run(f"device={dev},dtype=bfloat16"), long_ids)   # re-installs the taps

    def tapped(i):
        with torch.inference_mode():
            run.model(input_ids=ids, use_cache=False, logits_to_keep=1)

    t_tapped = median(time_runs(tapped, 20, device=dev))

    def recorded(i):
        cache = {}
        with torch.inference_mode():
            run.opmap.tap = RunTap(run, record=cache)
            try:
                run.model(input_ids=ids, use_cache=False, logits_to_keep=1)
            finally:
                from llm.opmap import plain_tap
                run.opmap.tap = plain_tap

    t_rec = median(time_runs(recorded, 20, device=dev))
    summary["forward_ms"] = {"plain_hf": t_plain, "taps_installed": t_tapped, "recording": t_rec,
                             "tokens": len(long_ids), "tap_overhead": t_tapped / t_plain - 1,
                             "record_overhead": t_rec / t_plain - 1}
    print(f"   bf16 forward over {len(long_ids)} tokens (median of 20, CUDA events): plain HF {t_plain:.2f} ms, "
          f"taps installed {t_tapped:.2f} ms ({100 * (t_tapped / t_plain - 1):+.1f}%), recording every op "
          f"{t_rec:.2f} ms ({100 * (t_rec / t_plain - 1):+.1f}%)")
    save()
    stage("forward timing", t0)

    # 3 -- the seed prompt --------------------------------------------------------------------------
    t0 = time.perf_counter()
    summary["seed_prompt"] = {}
    for lm, spec in ((f32, f"device={dev},dtype=float32"), (bf, f"device={dev},dtype=bfloat16"),
                     (bf, f"device={dev},dtype=bfloat16,batch=8")):
        steps = greedy(Run(lm, parse_run(spec), seed_ids), seed_ids, 8)
        s0 = steps[0]
        text = tok.decode([s["token"] for s in steps])
        summary["seed_prompt"][spec] = {"top": s0["token"], "piece": tok.piece(s0["token"]), "p": s0["p"],
                                        "runner_up": tok.piece(s0["runner_up"]), "p_runner_up": s0["p_runner_up"],
                                        "greedy8": text}
        print(f"   {SEED_PROMPT!r} [{spec}]: top {tok.piece(s0['token'])!r} p={s0['p']:.5f} "
              f"(runner-up {tok.piece(s0['runner_up'])!r} p={s0['p_runner_up']:.5f}); greedy: {text!r}")
    save()
    stage("seed prompt", t0)

    # 4, 5 -- attributions -------------------------------------------------------------------------
    # fp32 vs bf16: both causal modes; inject (the default: the dtypes differ) runs fp32 forwards of the
    # reference (~10x a bf16 one without TF32), so its op units only inside the 2 layers that inject most
    experiments = [("fp32-vs-bf16", f32, f"device={dev},dtype=float32", bf, f"device={dev},dtype=bfloat16",
                    ("op", "layer", "class"), {"correct": 0, "inject": args.inject_drill}),
                   ("bf16-batch1-vs-batch8", bf, f"device={dev},dtype=bfloat16", bf,
                    f"device={dev},dtype=bfloat16,batch=8", ("layer", "class"), 0)]
    for name, rl, rs, vl, vs, units, drill in experiments:
        try:
            t0 = time.perf_counter()
            rc, vc = parse_run(rs), parse_run(vs)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            res = attribute(rl, rc, vl, vc, long_ids, gen_steps=8, units=units, progress_desc=name, drill=drill)
            wall = time.perf_counter() - t0
            res["timings"]["wall_s"] = wall
            if cuda:
                res["timings"]["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
            print(format_result(res, rc, vc, top=20, title=f"{args.model} / retrieval ({len(long_ids)} tokens): {name}"))
            pt = res.get("per_token", {})
            if pt:
                import math
                worst = max(range(len(pt["ref_p_next"])), key=lambda i: abs(pt["ref_p_next"][i] - pt["var_p_next"][i]))
                print(f"   per-token p(next prompt token): max |dp| {pt['max_abs_dp']:.3g} at position {worst}; "
                      f"mean log p ref {sum(math.log(max(p, 1e-30)) for p in pt['ref_p_next']) / len(pt['ref_p_next']):.4f} "
                      f"var {sum(math.log(max(p, 1e-30)) for p in pt['var_p_next']) / len(pt['var_p_next']):.4f}")
            if "restore_layers" in res:
                print("   drift left when layers up to L are the reference's (restore): " + " ".join(
                    f"{r['unit']}:{r['rms_dlogit_after']:.3g}" for r in res["restore_layers"][::4]))
            plot_heatmap(res, out / f"{name}-heatmap.png", title=f"Mistral-7B shape (seeded): {vs} vs {rs}")
            rep = new_report("llm", command=command, fingerprint=fp,
                             config={"model": args.model, "reference": rc.as_dict(), "variant": vc.as_dict()})
            add_report_entries(rep, res, name=f"retrieval-{name}", text=long_text, ids=long_ids, seed=0)
            write_report(rep, out / f"{name}.json")
            summary[name] = {"drift": res["drift"], "timings": res["timings"],
                             "first_top1_flip_position": res["first_top1_flip_position"],
                             "generation": res.get("generation"), "causal_default": res.get("causal_default"),
                             **{f"top_causal_{m}": res.get("causal_" + m, [])[:10] for m in res.get("causal_modes", [])}}
            save()
            stage(f"attribution {name} (causal forwards {res['timings'].get('causal_forwards')}, "
                  f"causal {res['timings'].get('causal_s', 0):.1f} s)", t0)
        except Exception:  # keep going: the later stages still report
            import traceback
            print(f"   STAGE FAILED: attribution {name}")
            traceback.print_exc(file=sys.stdout)
            failed.append(f"attribution {name}")
            if cuda:
                torch.cuda.empty_cache()

    # 6 -- trace and replay -----------------------------------------------------------------------
    try:
        t0 = time.perf_counter()
        from llm.replay import replay
        from llm.trace import read_trace, record_trace, write_trace
        cfg = parse_run(f"device={dev},dtype=bfloat16")
        n = len(bf.model.model.layers)
        _, pos, store = record_trace(bf, cfg, long_ids, [0, n - 1, n], [-1])
        write_trace(out / "trace-bf16.npz", bf, cfg, long_ids, pos, store, n)
        meta, ops = read_trace(out / "trace-bf16.npz")
        for spec in (f"device={dev},dtype=bfloat16", f"device={dev},dtype=bfloat16,attn=eager"):
            rows = replay(bf, parse_run(spec), meta, ops)
            print(f"   replay [{spec}] of the trace (last position): "
                  + ", ".join(f"{r['site']}:{'=' if r['bitwise_equal'] else r['max_ulp']}" for r in rows))
        print(f"   trace file {(out / 'trace-bf16.npz').stat().st_size / 1e6:.1f} MB")
        stage("trace + replay", t0)
    except Exception:
        import traceback
        print("   STAGE FAILED: trace + replay")
        traceback.print_exc(file=sys.stdout)
        failed.append("trace + replay")
    summary["failed_stages"] = failed
    save()
    if failed:
        print(f"FAILED: {len(failed)} stage(s): {'; '.join(failed)}", flush=True)
        return 1
    return 0


def batch_invariant_stage(out, dev="cuda:0", model="mistral-7b-random", max_tokens=0, command=None):
    """bf16, retrieval prompt: final-logit drift batch 1 vs batch 8 with linear=torch and with
    linear=batch_invariant (probes.gemm.triton_matmul via llm.kernels), then the class-level causal
    ranking (correct mode) of the batch-invariant batch 1 -> batch 8 drift: what is left once the linears
    cannot depend on the batch. Writes batch-invariant.json (summary) and bi-batch1-vs-batch8.json.
    `command`: the command line the report records (default: python -m llm.bench OUT --batch-invariant ...)."""
    from llm.attribute import RETRIEVAL_PROMPT_FILE, add_report_entries, attribute
    from llm.generate import drift_metrics
    from llm.models import load
    from llm.runconfig import parse_run
    from llm.runs import Run
    from llm.table import format_result
    from probes.device import fingerprint
    from probes.report import new_report, write_report
    out = Path(out)
    t0 = time.perf_counter()
    bf = load(model, dev, torch.bfloat16, 0)
    text = RETRIEVAL_PROMPT_FILE.read_text()
    ids = bf.tokenizer.encode(text)
    if max_tokens:
        ids = ids[:max_tokens]
    stage(f"load bf16 {model} ({len(ids)} prompt tokens)", t0)
    summary = {"prompt_tokens": len(ids), "final_logit_drift_batch1_vs_batch8": {}}
    t0 = time.perf_counter()
    for lin in ("torch", "batch_invariant"):
        logits = [Run(bf, parse_run(f"device={dev},dtype=bfloat16,batch={b},linear={lin}"), ids).forward(last_only=True)
                  for b in (1, 8)]
        m = {k: float(v) for k, v in drift_metrics(logits[0][None], logits[1][None]).items()}
        m["bitwise_equal"] = bool(torch.equal(logits[0].view(torch.int32), logits[1].view(torch.int32)))
        summary["final_logit_drift_batch1_vs_batch8"][lin] = m
        print(f"   final logits (last position) batch 1 vs batch 8, linear={lin}: max |dlogit| {m['max_dlogit']:.4g}, "
              f"rms {m['rms_dlogit']:.4g}, top-1 flip {int(m['top1_flips'])}, bitwise equal {m['bitwise_equal']}")
    (out / "batch-invariant.json").write_text(json.dumps(summary, indent=1))
    stage("final-logit drift, torch vs batch_invariant linears", t0)
    t0 = time.perf_counter()
    rc = parse_run(f"device={dev},dtype=bfloat16,linear=batch_invariant")
    vc = parse_run(f"device={dev},dtype=bfloat16,batch=8,linear=batch_invariant")
    res = attribute(bf, rc, bf, vc, ids, gen_steps=0, units=("class",), modes=("correct",), restore=False,
                    progress_desc="bi-batch1-vs-batch8")
    res["timings"]["wall_s"] = time.perf_counter() - t0
    print(format_result(res, rc, vc, top=16, title=f"{model} / retrieval ({len(ids)} tokens): "
                                                   "linear=batch_invariant, batch 1 vs batch 8"))
    summary["bi_attribution"] = {"drift": res["drift"], "causal_correct_classes": res.get("causal", []),
                                 "local_nonzero": [r["site"] for r in res["local"] if r["max_ulp"] != 0]}
    from probes.gemm.triton_matmul import FALLBACKS
    summary["triton_fallbacks"] = FALLBACKS
    (out / "batch-invariant.json").write_text(json.dumps(summary, indent=1, default=str))
    command = command or ["python", "-m", "llm.bench", str(out), "--batch-invariant", "--device", dev, "--model", model,
                          "--max-tokens", str(max_tokens)]
    rep = new_report("llm", command=command, fingerprint=fingerprint(dev),
                     config={"model": model, "reference": rc.as_dict(), "variant": vc.as_dict()})
    add_report_entries(rep, res, name="retrieval-bi-batch1-vs-batch8", text=text, ids=ids, seed=0)
    write_report(rep, out / "bi-batch1-vs-batch8.json")
    stage(f"attribution bi batch1-vs-batch8 (classes, correct; causal forwards {res['timings'].get('causal_forwards')})", t0)
    return 0


if __name__ == "__main__":
    from probes.cli import guarded_main          # prints the run's warnings (e.g. a Triton config fallback)
    sys.exit(guarded_main(main))
