"""The seed experiment on a real model across machines: SmolLM2-135M on machine A (this CPU, float32)
against machine B (a GPU, bfloat16 and float32).

    # machine A (CPU): record
    python -m llm.seed record --device cpu --out llm/data/seed-cpu
    # machine B (GPU): compare with A's record (model from the reassembled GGUF file)
    python -m llm.seed compare llm/data/seed-cpu --model /tmp/SmolLM2-135M-Instruct.Q4_1.gguf \
        --runs "device=cuda,dtype=bfloat16;device=cuda,dtype=float32" --out OUT

The team's CPU fp32 record ships with the package (llm/data/seed-cpu, `CPU_RECORD`; how it was made:
docs/results/llm-cpu/README.md) and is what `compare` reads when no record folder is given.

For each prompt ("I enjoy walking in the" and the ~1,455-token retrieval prompt) the record holds the
top token and its probability at the last position, the probability of every prompt token given its
prefix, the top-1 token at every position, the last position's logits, a greedy continuation (no KV
cache: prefill kernels at every step, llm.generate.greedy) and a bounded op trace (llm.trace: every op
of layers 0, middle, last and final at every position of the seed prompt; layers last and final at the
last position of the retrieval prompt). The comparison gives per run: the first token and probability on both machines,
per-token probability differences, top-1 flips over positions, max |dlogit| at the last position, the
first step where greedy decoding parts, and the CPU trace replayed on the GPU (llm.replay: per-op
cross-machine local error, float32 runs only: the trace's inputs are float32).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from probes.errors import UsageError

__all__ = ["record", "compare", "prompt_stats", "compare_prompt", "main", "RECORD_FORMAT", "CPU_RECORD"]

RECORD_FORMAT = "driftscope-llm-seed-record-1"
RECORD_JSON = "record.json"
LOGITS_NPZ = "last-logits.npz"
CPU_RECORD = Path(__file__).resolve().parent / "data" / "seed-cpu"   # SmolLM2 on the CPU, float32 (package data)


def _prompts(max_tokens=0):
    from llm.attribute import RETRIEVAL_PROMPT_FILE, SEED_PROMPT
    return [("seed", SEED_PROMPT), ("retrieval", RETRIEVAL_PROMPT_FILE.read_text(encoding="utf-8"))]


@torch.inference_mode()
def prompt_stats(lm, cfg, ids, gen_steps):
    """What a machine says about one prompt (JSON-able) and its last-position logits (float32 numpy)."""
    from llm.generate import greedy
    from llm.runs import Run
    run = Run(lm, cfg, ids)
    t0 = time.perf_counter()
    logits = run.forward()                                # [T, vocab] float32
    fwd_s = time.perf_counter() - t0
    p = torch.softmax(logits, -1)
    top = torch.topk(p[-1], 2)
    nxt = torch.tensor(ids[1:], device=logits.device)
    p_next = p[:-1].gather(1, nxt[:, None]).flatten() if len(ids) > 1 else p[:0, 0]
    t0 = time.perf_counter()
    steps = greedy(run, ids, gen_steps) if gen_steps else []
    tok = lm.tokenizer
    return {
        "tokens": len(ids), "ids": list(ids),
        "top": {"token": int(top.indices[0]), "piece": tok.piece(int(top.indices[0])), "p": float(top.values[0]),
                "runner_up": int(top.indices[1]), "runner_up_piece": tok.piece(int(top.indices[1])),
                "p_runner_up": float(top.values[1])},
        "p_next": p_next.tolist(), "argmax": logits.argmax(-1).tolist(),
        "greedy": {"tokens": [s["token"] for s in steps], "p": [s["p"] for s in steps],
                   "runner_up": [s["runner_up"] for s in steps], "p_runner_up": [s["p_runner_up"] for s in steps],
                   "text": tok.decode([s["token"] for s in steps])},
        "timings": {"forward_s": fwd_s, "greedy_s": time.perf_counter() - t0},
    }, logits[-1].cpu().numpy().astype(np.float32)


def record(lm, cfg, out: Path, *, gen_steps=20, max_tokens=0, trace=True, model_name=None, prompts=None):
    """Machine A: write record.json, last-logits.npz and trace-<prompt>.npz into `out`."""
    from llm.trace import record_trace, write_trace
    from probes.device import fingerprint
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = len(lm.model.model.layers)
    rec = {"format": RECORD_FORMAT, "model": model_name or lm.name, "model_info": dict(lm.info),
           "model_sha256": model_sha256(lm),
           "tokenizer": lm.tokenizer.fingerprint, "run": cfg.as_dict(), "fingerprint": fingerprint(cfg.device),
           "gen_steps": gen_steps, "prompts": {}}
    logits = {}
    for name, text in _prompts():
        if prompts is not None and name not in prompts:
            continue
        ids = lm.tokenizer.encode(text)
        if max_tokens:
            ids = ids[:max_tokens]
        t0 = time.perf_counter()
        stats, last = prompt_stats(lm, cfg, ids, gen_steps)
        stats["text_head"] = text[:200]
        logits[name] = last
        if trace:     # bounded: the short prompt whole, the long one at its last position
            layers, positions = ([0, n // 2, n - 1, n], None) if name == "seed" else ([n - 1, n], [-1])
            _, pos, store = record_trace(lm, cfg, ids, layers, positions)
            write_trace(out / f"trace-{name}.npz", lm, cfg, ids, pos, store, n)
            stats["trace"] = f"trace-{name}.npz"
        stats["timings"]["total_s"] = time.perf_counter() - t0
        rec["prompts"][name] = stats
        print(f"{name}: {len(ids)} tokens, top {stats['top']['piece']!r} p={stats['top']['p']:.6f}, greedy "
              f"{stats['greedy']['text']!r} ({stats['timings']['total_s']:.1f} s)", flush=True)
    np.savez_compressed(out / LOGITS_NPZ, **logits)
    (out / RECORD_JSON).write_text(json.dumps(rec, indent=1))
    return rec


def model_sha256(lm):
    """sha256 of the model's file (a .gguf), or None for seeded / folder models."""
    import hashlib
    src = Path(str(lm.info.get("source", "")))
    if not src.is_file():
        return None
    h = hashlib.sha256()
    with open(src, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_record(folder: Path):
    folder = Path(folder)
    try:
        rec = json.loads((folder / RECORD_JSON).read_text())
        z = np.load(folder / LOGITS_NPZ, allow_pickle=False)
        last = {k: z[k] for k in z.files}
    except FileNotFoundError as exc:
        raise UsageError(f"no seed record in {folder}: {exc.filename} is missing") from None
    except (ValueError, OSError) as exc:
        raise UsageError(f"seed record in {folder} is unreadable: {exc}") from None
    if rec.get("format") != RECORD_FORMAT:
        raise UsageError(f"{folder / RECORD_JSON}: format {rec.get('format')!r}, expected {RECORD_FORMAT}")
    return rec, last


def compare_prompt(a, b, a_last, b_last):
    """Machine A's stats vs machine B's for one prompt (same token ids)."""
    if a["ids"] != b["ids"]:
        raise UsageError("the two machines' prompts have different token ids")
    pa, pb = np.asarray(a["p_next"], dtype=np.float64), np.asarray(b["p_next"], dtype=np.float64)
    dp = pb - pa
    am, bm = np.asarray(a["argmax"]), np.asarray(b["argmax"])
    flips = np.nonzero(am != bm)[0]
    ga, gb = a["greedy"]["tokens"], b["greedy"]["tokens"]
    n = min(len(ga), len(gb))
    div = next((i for i in range(n) if ga[i] != gb[i]), None)
    d_last = np.asarray(b_last, dtype=np.float64) - np.asarray(a_last, dtype=np.float64)
    out = {
        "tokens": a["tokens"],
        "first_token": {"a": a["top"], "b": b["top"], "same": a["top"]["token"] == b["top"]["token"],
                        "dp": b["top"]["p"] - a["top"]["p"]},
        "p_next": {"max_abs_dp": float(np.abs(dp).max()) if len(dp) else 0.0,
                   "argmax_abs_dp": int(np.abs(dp).argmax()) if len(dp) else None,
                   "mean_abs_dp": float(np.abs(dp).mean()) if len(dp) else 0.0,
                   "max_rel_dp": float((np.abs(dp) / np.maximum(pa, 1e-30)).max()) if len(dp) else 0.0,
                   "bitwise_equal": bool(np.array_equal(np.asarray(a["p_next"], np.float32),
                                                        np.asarray(b["p_next"], np.float32))),
                   "mean_logp_a": float(np.log(np.maximum(pa, 1e-30)).mean()) if len(pa) else 0.0,
                   "mean_logp_b": float(np.log(np.maximum(pb, 1e-30)).mean()) if len(pb) else 0.0},
        "top1_flips": int(len(flips)), "first_top1_flip_position": int(flips[0]) if len(flips) else None,
        "last_logits": {"max_abs_dlogit": float(np.abs(d_last).max()),
                        "rms_dlogit": float(np.sqrt((d_last ** 2).mean())),
                        "bitwise_equal": bool(np.array_equal(np.asarray(a_last, np.float32).view(np.uint32),
                                                             np.asarray(b_last, np.float32).view(np.uint32)))},
        "greedy": {"steps": n, "a_text": a["greedy"]["text"], "b_text": b["greedy"]["text"],
                   "first_divergence": div},
    }
    if div is not None:
        out["greedy"]["at_divergence"] = {"a_token": ga[div], "b_token": gb[div], "a_p": a["greedy"]["p"][div],
                                          "b_p": b["greedy"]["p"][div],
                                          "a_p_runner_up": a["greedy"]["p_runner_up"][div],
                                          "b_p_runner_up": b["greedy"]["p_runner_up"][div]}
    return out


def compare(rec, a_last, lm, cfgs, folder: Path, *, replay_traces=True):
    """Machine B: every run config against machine A's record: {run text: {prompt: comparison}}."""
    from llm.replay import replay
    from llm.trace import read_trace
    if lm.tokenizer.fingerprint != rec["tokenizer"]:
        raise UsageError(f"the record was tokenised by {rec['tokenizer']}, this model's is {lm.tokenizer.fingerprint}")
    mine = model_sha256(lm)
    if rec.get("model_sha256") and mine and mine != rec["model_sha256"]:
        raise UsageError(f"the model file differs from the record's (sha256 {mine[:12]} vs {rec['model_sha256'][:12]})")
    results = {}
    for cfg, run_lm in cfgs:
        res = {}
        for name, a in rec["prompts"].items():
            ids_here = run_lm.tokenizer.encode(a["text_head"]) if len(a["text_head"]) < 200 else None
            if ids_here is not None and ids_here != a["ids"]:
                raise UsageError(f"prompt {name}: this tokenizer gives other ids than the record's")
            t0 = time.perf_counter()
            b, b_last = prompt_stats(run_lm, cfg, a["ids"], rec["gen_steps"])
            c = compare_prompt(a, b, a_last[name], b_last)
            c["b_timings"] = b["timings"]
            if replay_traces and a.get("trace") and cfg.torch_dtype == torch.float32:
                meta, ops = read_trace(Path(folder) / a["trace"])
                rows = replay(run_lm, cfg, meta, ops)
                c["replay"] = rows
            c["wall_s"] = time.perf_counter() - t0
            res[name] = c
            print(f"-- {cfg.text} / {name}: {c['wall_s']:.1f} s (forward {b['timings']['forward_s']:.3f} s, "
                  f"greedy {b['timings']['greedy_s']:.1f} s)", flush=True)
        results[cfg.text] = res
    return results


def format_comparison(results, rec):
    fp = rec.get("fingerprint") or {}
    a_dev = ((fp.get("gpu") or {}).get("name") if isinstance(fp.get("gpu"), dict) else None) \
        or ((fp.get("cpu") or {}).get("model") if isinstance(fp.get("cpu"), dict) else None) or rec["run"]["device"]
    lines = [f"A = {rec['run']['device']} {rec['run']['dtype']} ({a_dev}); model {rec['model']}",
             f"  {'run B':<34} {'prompt':<9} {'tok':>5} {'A first (p)':<22} {'B first (p)':<22} {'max|dp|':>9} "
             f"{'flips':>6} {'max|dlogit|':>11} {'greedy parts':>12}"]
    for run, res in results.items():
        for name, c in res.items():
            f = c["first_token"]
            lines.append(f"  {run:<34} {name:<9} {c['tokens']:>5} "
                         f"{(repr(f['a']['piece']) + ' ' + format(f['a']['p'], '.5f')):<22} "
                         f"{(repr(f['b']['piece']) + ' ' + format(f['b']['p'], '.5f')):<22} "
                         f"{c['p_next']['max_abs_dp']:>9.3g} {c['top1_flips']:>6} "
                         f"{c['last_logits']['max_abs_dlogit']:>11.3g} "
                         f"{'never' if c['greedy']['first_divergence'] is None else 'step ' + str(c['greedy']['first_divergence']):>12}")
    for run, res in results.items():
        for name, c in res.items():
            g = c["greedy"]
            lines.append(f"  greedy [{run} / {name}]: A {g['a_text']!r}")
            lines.append(f"  {'':>{len(run) + len(name) + 12}} B {g['b_text']!r}")
            if "replay" in c:
                rows = c["replay"]
                eq = sum(r["bitwise_equal"] for r in rows)
                worst = sorted(rows, key=lambda r: -r["rel_err"])[:5]
                lines.append(f"  replay of A's trace [{run} / {name}]: {eq}/{len(rows)} ops bit exact; largest: "
                             + ", ".join(f"{r['site']} {r['max_ulp']} ulp rel {r['rel_err']:.2g}" for r in worst))
    return "\n".join(lines)


def main(argv=None):
    from llm.models import load
    from llm.runconfig import parse_run
    from probes.cli import resolve_device
    ap = argparse.ArgumentParser(prog="python -m llm.seed", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record", help="machine A: record the seed experiment")
    r.add_argument("--device", default="cpu")
    r.add_argument("--model", default="smollm2")
    r.add_argument("--run", default="dtype=float32", help="run config (llm.runconfig)")
    r.add_argument("--gen", type=int, default=20, help="greedy tokens")
    r.add_argument("--max-tokens", type=int, default=0, help="cut the prompts (tests)")
    r.add_argument("--no-trace", action="store_true")
    r.add_argument("--out", required=True, help="folder to write record.json, last-logits.npz, traces")
    c = sub.add_parser("compare", help="machine B: compare with machine A's record")
    c.add_argument("record", nargs="?", default=str(CPU_RECORD),
                   help="the folder written by `record` (default: the CPU fp32 record shipped with the package)")
    c.add_argument("--model", default="smollm2", help="smollm2 or a .gguf path (the same file as A's)")
    c.add_argument("--device", default="auto")
    c.add_argument("--runs", default="dtype=bfloat16;dtype=float32", help="run configs separated by ';'")
    c.add_argument("--no-replay", action="store_true")
    c.add_argument("--out", default=None, help="folder for seed-compare.json and seed-compare.txt")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    if args.cmd == "record":
        cfg = parse_run(args.run, default_device=device)
        lm = load(args.model, cfg.device, cfg.torch_dtype, 0, cfg.weights)
        record(lm, cfg, Path(args.out), gen_steps=args.gen, max_tokens=args.max_tokens, trace=not args.no_trace,
               model_name=args.model)
        print(f"record: {args.out}")
        return 0
    rec, a_last = read_record(Path(args.record))
    cfgs = []
    for spec in filter(None, (s.strip() for s in args.runs.split(";"))):
        t0 = time.perf_counter()
        cfg = parse_run(spec, default_device=device)
        cfgs.append((cfg, load(args.model, cfg.device, cfg.torch_dtype, 0, cfg.weights)))
        print(f"-- load {args.model} [{cfg.text}]: {time.perf_counter() - t0:.1f} s", flush=True)
    if not cfgs:
        raise UsageError("--runs: no run config given")
    results = compare(rec, a_last, cfgs[0][1], cfgs, Path(args.record), replay_traces=not args.no_replay)
    text = format_comparison(results, rec)
    print(text)
    if args.out:
        from probes.device import fingerprint
        from probes.report import add_experiment, compares_all_metrics, new_report, write_report
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        rep = new_report("llm-seed", command=["python", "-m", "llm.seed"] + list(argv or sys.argv[1:]),
                         fingerprint=fingerprint(device),
                         config={"model": args.model, "record_model": rec["model"], "record_run": rec["run"],
                                 "record_fingerprint": rec["fingerprint"]})
        for run, res in results.items():
            for name, cmp_ in res.items():
                add_experiment(rep, key=f"llm-seed/{name}/{run}", inputs={"prompt": name, "weights_seed": 0,
                               "token_ids_head": rec["prompts"][name]["ids"][:32]}, params={"run": run},
                               metrics=cmp_, compares=compares_all_metrics(cmp_, but=("b_timings", "wall_s")))
        write_report(rep, out / "seed-compare.json")
        (out / "seed-compare.txt").write_text(text + "\n")
        print(f"report: {out / 'seed-compare.json'}")
    return 0


if __name__ == "__main__":
    from probes.cli import guarded_main
    sys.exit(guarded_main(main))
