"""Attribute a model's final-logit drift between two runs to operations in layers.

    python -m llm.attribute --model mistral-7b-random \
        --reference "device=cuda,dtype=float32" --variant "device=cuda,dtype=bfloat16,batch=8" \
        --prompt-file llm/data/retrieval_prompt.txt --json out.json --plot out.png

What it reveals, three ways, for one prompt (llm.runs has the machinery):

1. drift: how far the variant's final logits moved from the reference's (rms/max |dlogit|, KL, top-1
   flips, the first position whose top-1 token flips, per-token probabilities of the prompt's next token).
2. local error: each op of the variant fed the reference's inputs (one forward in which every op's
   output is compared with the reference's, then replaced by it): max ulp (in the variant's dtype),
   relative error, cosine.
3. causal contribution, two modes (both are run; `causal` is the default one, see resolve_modes):
   - correct: the variant with one op (then one whole layer, then one op class across all layers)
     put back to the reference: the op's own error (reference output minus the variant op's output on
     the reference's inputs, measured in the local pass) is taken out of its output, everything else
     computed as the variant computes it; contribution = the fraction of the rms logit drift that
     disappears. Exact when both runs compute in one dtype (planted faults, batch, kernels); when the
     variant is bf16 and the reference fp32, a correction smaller than half a bf16 ulp of the output
     rounds away inside the variant and every op scores ~0 (seen on the H100: only L0 survived).
   - inject (the dual, default when the dtypes differ): the REFERENCE, in its dtype, with exactly one
     unit's own error put in (its output replaced by the variant op's output on the reference's
     inputs, held in the reference's dtype); contribution = rms drift injected / full rms drift, with
     the injected run's max |dlogit|, KL, top-1 flips and margin. Nothing rounds the error away.
   (Replacing an op's whole output by the reference's would also remove all the error it merely
   carries, so every later residual add would "explain" everything; that literal restore is reported
   per layer as `restore_layers`: the drift left when layer L's outputs are the reference's, i.e. the
   drift made after layer L.) The reference's op outputs and the variant ops' outputs on them stay
   cached on the device, so each unit is one forward (of the variant, or of the reference for inject).
4. generation: greedy decoding under both runs: first diverging token, both runs' probabilities of the
   competing tokens there, the texts after it.

Identical runs attribute zero (no drift, every contribution 0, every local ulp 0).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from llm.generate import divergence, drift_metrics, greedy
from llm.opmap import LAYER_OPS, FINAL_OPS
from llm.runs import NonFiniteError, Run, RunTap, first_nonfinite
from probes.errors import UsageError
from probes.progress import Progress

__all__ = ["attribute", "attribute_runs", "causal_units", "resolve_modes", "main", "SEED_PROMPT", "CAUSAL_MODES"]

SEED_PROMPT = "I enjoy walking in the"
RETRIEVAL_PROMPT_FILE = Path(__file__).resolve().parent / "data" / "retrieval_prompt.txt"   # ~1,450 tokens


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def causal_units(n_layers, which=("op", "layer", "class"), layer_ops=LAYER_OPS):
    """(kind, label, set of sites) for every unit patched back to the reference. `layer_ops`: the ops of
    the model's decoder layers (llm.opmap.MOE_LAYER_OPS: `router` and `experts` for a mixture of experts)."""
    units = []
    ops = [(i, op) for i in range(n_layers) for op in layer_ops] + [(n_layers, op) for op in FINAL_OPS]
    if "op" in which:
        units += [("op", f"final.{op}" if i == n_layers else f"L{i}.{op}", {(i, op)}) for i, op in ops]
    if "layer" in which:
        units += [("layer", f"L{i}", {(i, op) for op in layer_ops}) for i in range(n_layers)]
        units += [("layer", "final", {(n_layers, op) for op in FINAL_OPS})]
    if "class" in which:
        units += [("class", f"*.{op}", {(i, op) for i in range(n_layers)}) for op in layer_ops]
    return units


CAUSAL_MODES = ("correct", "inject")


def resolve_modes(modes, ref, var):
    """The causal modes to run, the default (reported as `causal`) first. "auto": both; inject is
    the default when the runs' dtypes differ, correct otherwise."""
    if modes in (None, "auto"):
        return ("inject", "correct") if ref.dtype != var.dtype else ("correct", "inject")
    modes = tuple(modes)
    bad = [m for m in modes if m not in CAUSAL_MODES]
    if bad or not modes:
        raise UsageError(f"causal mode(s) {', '.join(bad) or '(none)'}: not one of {', '.join(CAUSAL_MODES)}, auto")
    return modes


def _to_floats(metrics):
    if not metrics:
        return []
    keys = list(metrics[0])
    table = torch.stack([torch.stack([m[k].double() for k in keys]) for m in metrics]).cpu().tolist()
    return [dict(zip(keys, row)) for row in table]


def _causal_mode(mode, ref, var, ref_logits, rms_full, cache, ref_cache, own, units, drill, desc, top_k=()):
    """Causal rows of one mode, best first, and the joint rows of `top_k` (the k best op units as one
    unit, for each k: how much of the drift the top k explain together).

    correct: the VARIANT with the unit's own error taken out; contribution = 1 - rms_after / rms_full.
    inject: the REFERENCE (in its dtype) with the unit's own error put in (its output replaced by the
    variant op's output on the reference's inputs); contribution = rms_injected / rms_full, and the
    injected run's drift metrics (max |dlogit|, KL, top-1 flips, margin) are kept with suffix _injected.
    """
    todo, metrics = [], []
    first = tuple(u for u in units if not (drill and u == "op"))
    if drill and "op" in units and "layer" not in first:
        first += ("layer",)          # drilling down needs the layers' ranking

    def measure(batch):
        with Progress(len(batch), desc) as bar:
            for kind, label, sites in batch:
                if mode == "correct":
                    logits = var.forward(RunTap(var, correct=sites, ref=cache, own=own))
                else:
                    logits = ref.forward(RunTap(ref, inject=sites, ref=ref_cache, own=own)).to(ref_logits.device)
                metrics.append(drift_metrics(ref_logits, logits))
                bar.update(note=label)

    def contribution(m):
        if rms_full == 0:
            return 0.0
        return 1.0 - m["rms_dlogit"] / rms_full if mode == "correct" else m["rms_dlogit"] / rms_full

    layer_ops = getattr(ref, "layer_ops", LAYER_OPS)
    batch = causal_units(ref.n_layers, first, layer_ops)
    todo += batch
    measure(batch)
    if drill and "op" in units:      # op units only inside the `drill` layers that explain most
        scored = [(-contribution(m), u[1]) for u, m in zip(todo, _to_floats(metrics)) if u[0] == "layer"]
        top = [label for _, label in sorted(scored)[:drill]]
        ops = [u for u in causal_units(ref.n_layers, ("op",), layer_ops) if u[1].split(".")[0] in top
               or (u[1].startswith("final.") and "final" in top)]
        todo += ops
        measure(ops)
    suffix = "_after" if mode == "correct" else "_injected"
    rows = []
    for (kind, label, _), m in zip(todo, _to_floats(metrics)):
        rows.append({"unit": label, "kind": kind, "mode": mode, "contribution": contribution(m),
                     **{k + suffix: v for k, v in m.items()}})
    rows.sort(key=lambda r: -r["contribution"])
    op_sites = {label: sites for kind, label, sites in todo if kind == "op"}
    ranked = [r["unit"] for r in rows if r["kind"] == "op"]
    ks = [k for k in top_k if 0 < k <= len(ranked)]
    joint = [("joint", f"top{k}", set().union(*(op_sites[u] for u in ranked[:k]))) for k in ks]
    n_before = len(metrics)
    if joint:
        measure(joint)
    joint_rows = [{"unit": f"top{k}", "kind": "joint", "mode": mode, "k": k, "units": ranked[:k],
                   "contribution": contribution(m), **{key + suffix: v for key, v in m.items()}}
                  for k, m in zip(ks, _to_floats(metrics[n_before:]))]
    return rows, len(todo) + len(joint), joint_rows


def check_compatible(ref_lm, var_lm, prompt_ids):
    if ref_lm.tokenizer.fingerprint != var_lm.tokenizer.fingerprint:
        raise UsageError(f"the runs tokenise differently ({ref_lm.tokenizer.fingerprint} vs "
                         f"{var_lm.tokenizer.fingerprint}); attribution compares the same tokens")
    a, b = ref_lm.model.config, var_lm.model.config
    if (a.vocab_size, a.num_hidden_layers, a.hidden_size) != (b.vocab_size, b.num_hidden_layers, b.hidden_size):
        raise UsageError("the two runs' models have different shapes (vocab, layers, hidden)")
    ctx = getattr(a, "max_position_embeddings", None)
    if ctx is not None and len(prompt_ids) > ctx:
        raise UsageError(f"the prompt has {len(prompt_ids)} tokens, longer than the model's context ({ctx})")
    if len(prompt_ids) < 1:
        raise UsageError("the prompt is empty")


def _raise_nonfinite(run, which):
    _, cache = run.record()
    site = first_nonfinite(cache, run.sites)
    where = run.opmap.label(site) if site is not None else "the logits (no op output at the prompt was)"
    raise NonFiniteError(f"the {which} run ({run.cfg.text or 'default'}) produced NaN/Inf: first at {where}")


def attribute(ref_lm, ref_cfg, var_lm, var_cfg, prompt_ids, *, gen_steps=8, units=("op", "layer", "class"),
              local=True, restore=True, drill=0, modes="auto", progress_desc="attribute", top_k=()):
    """The full attribution of one prompt (a JSON-able dict; see the module docstring). top_k: for
    each k, the k best op units of each mode taken as one unit (`joint_<mode>` rows)."""
    check_compatible(ref_lm, var_lm, prompt_ids)
    ref = Run(ref_lm, ref_cfg, prompt_ids)
    var = Run(var_lm, var_cfg, prompt_ids)
    return attribute_runs(ref, var, prompt_ids, ref_lm.tokenizer, gen_steps=gen_steps, units=units, local=local,
                          restore=restore, drill=drill, modes=modes, progress_desc=progress_desc, top_k=top_k)


def attribute_runs(ref, var, prompt_ids, tok, *, gen_steps=8, units=("op", "layer", "class"), local=True,
                   restore=True, drill=0, modes="auto", progress_desc="attribute", top_k=()):
    """attribute() on two prepared runs: anything with Run's interface (llm.runs.Run; llm.serve's engine-step
    contexts), the reference's logits being the ones drift is measured from."""
    times = {}
    t0 = time.perf_counter()
    modes = resolve_modes(modes, ref, var) if units else ()
    # inject adds (variant op - reference op) to the reference's own output: the reference is kept in
    # its own dtype then (float32 for fp32 vs bf16: 2x the cache), else in the variant's
    ref_logits, cache = ref.record(record_dtype=ref.dtype if "inject" in modes else var.dtype)
    _sync(ref.device)
    times["reference_record_s"] = time.perf_counter() - t0
    if not torch.isfinite(ref_logits).all():
        _raise_nonfinite(ref, "reference")
    t0 = time.perf_counter()
    var_logits = var.forward()
    _sync(var.device)
    times["variant_forward_s"] = time.perf_counter() - t0
    if not torch.isfinite(var_logits).all():
        _raise_nonfinite(var, "variant")
    ref_cache = cache                   # on the reference's device, for inject
    if ref.device != var.device:
        ref_logits = ref_logits.to(var.device)
        cache = {k: (tuple(t.to(var.device) for t in v) if isinstance(v, tuple) else v.to(var.device))
                 for k, v in cache.items()}
    full = drift_metrics(ref_logits, var_logits)
    full = {k: float(v) for k, v in full.items()}
    flips = torch.nonzero(ref_logits.argmax(-1) != var_logits.argmax(-1)).flatten()
    result = {"prompt_tokens": len(prompt_ids), "n_layers": ref.n_layers,
              "layer_ops": list(getattr(ref, "layer_ops", LAYER_OPS)), "drift": full,
              "first_top1_flip_position": int(flips[0]) if len(flips) else None}
    nxt = torch.tensor(prompt_ids[1:], device=var.device)
    if len(prompt_ids) > 1:
        pr = torch.softmax(ref_logits[:-1], -1).gather(1, nxt[:, None]).flatten()
        pv = torch.softmax(var_logits[:-1], -1).gather(1, nxt[:, None]).flatten()
        result["per_token"] = {"ref_p_next": pr.tolist(), "var_p_next": pv.tolist(),
                               "max_abs_dp": float((pr - pv).abs().max())}
    rms_full = full["rms_dlogit"]

    own = {} if units else None
    if local or units:
        t0 = time.perf_counter()
        rows = []
        var.forward(RunTap(var, ref=cache, local=rows, own=own))
        vals = torch.stack([torch.stack([u.double(), r.double(), c.double()]) for _, u, r, c in rows]).cpu()
        result["local"] = [{"site": var.opmap.label(s), "layer": s[0], "op": s[1], "max_ulp": int(v[0]),
                            "rel_err": float(v[1]), "cosine": float(v[2])} for (s, *_), v in zip(rows, vals)]
        _sync(var.device)
        times["local_s"] = time.perf_counter() - t0

    if units:
        result["causal_modes"] = list(modes)
        result["causal_default"] = modes[0]
        result["causal_default_why"] = (
            "inject: the dtypes differ, so the own-error correction of `correct` (added inside the "
            "variant's lower precision) can round away" if modes[0] == "inject" and ref.dtype != var.dtype
            else f"{modes[0]}: asked for" if modes[0] != "correct" or ref.dtype != var.dtype
            else "correct: both runs compute in the same dtype")
        if restore:
            t0 = time.perf_counter()
            todo = [("restore", u[1], u[2]) for u in causal_units(ref.n_layers, ("layer",),
                                                                  getattr(ref, "layer_ops", LAYER_OPS))]
            with Progress(len(todo), progress_desc + " restore") as bar:
                met = []
                for _, label, sites in todo:
                    met.append(drift_metrics(ref_logits, var.forward(RunTap(var, patch=sites, ref=cache))))
                    bar.update(note=label)
            result["restore_layers"] = [{"unit": label, "kind": "restore", **m}
                                        for (_, label, _), m in zip(todo, _to_floats(met))]
            for r in result["restore_layers"]:
                r.update({k + "_after": r.pop(k) for k in list(r) if k not in ("unit", "kind")})
            times["restore_s"] = time.perf_counter() - t0
            times["restore_forwards"] = len(todo)
        for mode in modes:
            t0 = time.perf_counter()
            n_drill = drill.get(mode, 0) if isinstance(drill, dict) else drill
            rows, n, joint = _causal_mode(mode, ref, var, ref_logits, rms_full, cache, ref_cache, own, units,
                                          n_drill, f"{progress_desc} {mode}", top_k)
            result["causal_" + mode] = rows
            if top_k:
                result["joint_" + mode] = joint
            _sync(var.device)
            times[f"causal_{mode}_s"] = time.perf_counter() - t0
            times[f"causal_{mode}_forwards"] = n
        result["causal"] = result["causal_" + modes[0]]
        times["causal_s"] = sum(times[f"causal_{m}_s"] for m in modes) + times.get("restore_s", 0.0)
        times["causal_forwards"] = sum(times[f"causal_{m}_forwards"] for m in modes) + times.get("restore_forwards", 0)
    del cache, ref_cache, own

    if gen_steps:
        t0 = time.perf_counter()
        g_ref = greedy(ref, prompt_ids, gen_steps)
        g_var = greedy(var, prompt_ids, gen_steps)
        result["generation"] = divergence(g_ref, g_var, tok)
        result["generation"]["ref_first"] = {"token": g_ref[0]["token"], "piece": tok.piece(g_ref[0]["token"]),
                                             "p": g_ref[0]["p"]}
        result["generation"]["var_first"] = {"token": g_var[0]["token"], "piece": tok.piece(g_var[0]["token"]),
                                             "p": g_var[0]["p"]}
        times["generation_s"] = time.perf_counter() - t0
    result["timings"] = times
    return result


# ------------------------------------------------------------------------------------------------
# CLI


def load_prompt(args, tokenizer):
    builtin = getattr(args, "builtin", None)
    if builtin == "retrieval":
        args.prompt_file = str(RETRIEVAL_PROMPT_FILE)
    elif builtin == "seed":
        args.prompt = SEED_PROMPT
    if args.prompt_file:
        p = Path(args.prompt_file)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read prompt file {p}: {exc}") from None
        name = p.stem
    elif args.prompt is not None:
        text, name = args.prompt, "prompt"
    else:
        text, name = SEED_PROMPT, "seed"
    return name, text, tokenizer.encode(text)


def build_parser():
    from probes.cli import add_common_args
    ap = argparse.ArgumentParser(prog="python -m llm.attribute", description=__doc__.split("\n\n")[0])
    add_common_args(ap)
    ap.add_argument("--model", default=None, help="mistral-7b-random | mistral-tiny | smollm2 | a local HF "
                    "folder or .gguf file (default: mistral-7b-random on a GPU, smollm2 on the CPU)")
    ap.add_argument("--variant-model", default=None, help="another model for the variant (same tokenizer)")
    ap.add_argument("--deterministic", action="store_true",
                    help="run both runs under llm.deterministic() (batch-invariant matmul, norms, softmax, attention; "
                         "bf16/fp16): e.g. batch=1 vs batch=8 should then attribute no drift at all")
    ap.add_argument("--reference", default="dtype=float32", help="reference run config (llm.runconfig)")
    ap.add_argument("--variant", default="dtype=bfloat16", help="variant run config")
    ap.add_argument("--prompt", default=None, help=f"prompt text (default: {SEED_PROMPT!r})")
    ap.add_argument("--prompt-file", default=None, help="read the prompt from this file")
    ap.add_argument("--builtin", default=None, choices=("seed", "retrieval"),
                    help="a shipped prompt: the seed sentence or the ~1,450-token retrieval prompt")
    ap.add_argument("--gen-steps", type=int, default=8, help="greedy tokens generated under each run")
    ap.add_argument("--units", default="op,layer,class", help="causal units: op,layer,class or none")
    ap.add_argument("--no-local", action="store_true", help="skip the local-error pass")
    ap.add_argument("--drill", type=int, default=0, metavar="N", help="op units only inside the N layers "
                    "whose own errors explain most of the drift (0: every op of every layer)")
    ap.add_argument("--causal-mode", default="auto", choices=("auto", "inject", "correct", "both"),
                    help="auto: both modes, inject the default when the dtypes differ, correct otherwise")
    ap.add_argument("--inject-drill", type=int, default=None, metavar="N",
                    help="--drill for the inject mode only (default: --drill); inject forwards run the "
                    "reference, e.g. float32: a full 7B op sweep there is ~8x the bf16 one")
    ap.add_argument("--top", type=int, default=15, help="rows of the printed ranking")
    ap.add_argument("--plot", default=None, help="write the layer x op heatmap (PNG) here")
    return ap


def main(argv=None):
    from llm.models import default_model, load
    from llm.runconfig import parse_run
    from llm.table import format_result, plot_heatmap
    from llm.determinism import mode_context
    from probes.cli import resolve_device, select_device
    from probes.report import add_experiment, new_report, write_report
    args = build_parser().parse_args(argv)
    device = (select_device if args.deterministic else resolve_device)(args.device)
    ref_cfg = parse_run(args.reference, default_device=device)
    var_cfg = parse_run(args.variant, default_device=device)
    model = args.model or default_model(device)
    units = tuple(u for u in args.units.split(",") if u and u != "none")
    bad = set(units) - {"op", "layer", "class"}
    if bad:
        raise UsageError(f"--units: unknown {', '.join(sorted(bad))} (op, layer, class, none)")
    t0 = time.perf_counter()
    ref_lm = load(model, ref_cfg.device, ref_cfg.torch_dtype, args.seed, ref_cfg.weights)
    var_lm = load(args.variant_model or model, var_cfg.device, var_cfg.torch_dtype, args.seed, var_cfg.weights)
    load_s = time.perf_counter() - t0
    name, text, ids = load_prompt(args, ref_lm.tokenizer)
    modes = {"auto": "auto", "both": ("correct", "inject"), "inject": ("inject",),
             "correct": ("correct",)}[args.causal_mode]
    drill = {"correct": args.drill, "inject": args.drill if args.inject_drill is None else args.inject_drill}
    with mode_context("deterministic" if args.deterministic else "default") as det:
        res = attribute(ref_lm, ref_cfg, var_lm, var_cfg, ids, gen_steps=args.gen_steps, units=units,
                        local=not args.no_local, drill=drill, modes=modes)
    res["timings"]["load_s"] = load_s
    mode = det.summary() if det is not None else {"name": "default"}
    if det is not None:
        print(f"deterministic mode: {'every op covered' if mode['deterministic'] else 'NOT deterministic: '}"
              f"{'' if mode['deterministic'] else ', '.join(mode['uncovered'])}")
    print(format_result(res, ref_cfg, var_cfg, top=args.top, title=f"{model} / {name} ({len(ids)} tokens)"))
    if args.plot:
        plot_heatmap(res, args.plot, title=f"{model}: {var_cfg.text} vs {ref_cfg.text}")
        print(f"heatmap: {args.plot}")
    if args.json:
        from probes.device import fingerprint
        rep = new_report("llm", command=None, fingerprint=fingerprint(device),
                         config={"model": model, "variant_model": args.variant_model, "reference": ref_cfg.as_dict(),
                                 "variant": var_cfg.as_dict(), "model_info": ref_lm.info, "mode": mode})
        add_report_entries(rep, res, name=name, text=text, ids=ids, seed=args.seed)
        write_report(rep, args.json)
        print(f"report: {args.json}")
    return 0


def add_report_entries(rep, res, *, name, text, ids, seed):
    """One experiment per result; each compares (probes.compare) its exact results, never its timings."""
    from probes.report import add_experiment, compares_all_metrics as results
    inputs = {"prompt_name": name, "prompt_tokens": len(ids), "prompt_text_head": text[:200],
              "weights_seed": seed, "token_ids_head": ids[:32]}
    add_experiment(rep, key=f"llm/{name}/drift", inputs=inputs, params={},
                   metrics={**res["drift"], "first_top1_flip_position": res["first_top1_flip_position"],
                            **res["timings"]},
                   compares={"metrics": [*res["drift"], "first_top1_flip_position"]})
    if "per_token" in res:
        add_experiment(rep, key=f"llm/{name}/per_token", inputs=inputs, params={}, metrics=res["per_token"],
                       compares=results(res["per_token"]))
    if "generation" in res:
        add_experiment(rep, key=f"llm/{name}/generation", inputs=inputs, params={},
                       metrics=res["generation"], compares=results(res["generation"]))
    for r in res.get("local", []):
        add_experiment(rep, key=f"llm/{name}/local/{r['site']}", inputs=inputs, params={"op": r["op"]},
                       metrics=r, compares=results(r))
    default = res.get("causal_default")
    for mode in res.get("causal_modes", []):     # the default mode's rows under causal/, the other's under causal-MODE/
        part = "causal" if mode == default else f"causal-{mode}"
        for r in res["causal_" + mode]:
            add_experiment(rep, key=f"llm/{name}/{part}/{r['kind']}/{r['unit']}", inputs=inputs,
                           params={"kind": r["kind"], "mode": mode}, metrics=r, compares=results(r))
    for r in res.get("restore_layers", []):
        add_experiment(rep, key=f"llm/{name}/restore/{r['unit']}", inputs=inputs, params={}, metrics=r,
                       compares=results(r))


if __name__ == "__main__":
    from probes.cli import guarded_main
    sys.exit(guarded_main(main))
