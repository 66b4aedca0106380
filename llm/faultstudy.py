"""Does attribution find drift it was not built around? Planted faults inside ops, spread over layers
and outside the op map (llm.faults), each attributed by llm.attribute, scored against where it is.

    python -m llm.faultstudy --models mistral-tiny,smollm2 --json faults.json --table faults.txt

For every case (CASES: a reference and a variant run config; `{mid}` is the middle layer) and model:
one attribution (every op, layer and op class; both causal modes; no generation), then per mode:
- expected: the sites where the fault acts, or for a fault outside the op map the first tapped ops
  that read its result (llm.faults.fault_sites; for the bf16 case the planted fault's site);
- whether the top-ranked op, layer and op class are expected ones; the rank of the best expected
  op; recall: the fraction of expected ops among the top len(expected) ops, and the same for the
  layers they are in (with --drill N only the N best layers' ops are ranked: `expected_ranked`
  says how many expected ops were);
- how much of the drift the top 1, 3 and len(expected) ops explain taken together (attribute's
  top_k); the sum of the single-op contributions (correct: about 1 when the drift is linear in the
  errors) and of their squares (inject: about 1 when the ops' logit errors are also uncorrelated);
- the ops with a nonzero local error (every op fed the reference's inputs).
Prints the table; --json writes a probes.report (probe "llm-faults"), --table the table.
"""
from __future__ import annotations

import argparse
import sys
import time

from probes.errors import UsageError

__all__ = ["CASES", "TEXT", "run_case", "score", "format_table", "main"]

TEXT = "The quick brown fox jumps over the lazy dog near the river bank."

# name -> (what kind of fault, reference, variant); {mid}: the middle layer, {count}: n_layers + 6
CASES = {
    "tap-output": ("control: an op's output at its tap site", "", "round=L{mid}.down_proj:bfloat16"),
    "input": ("inside an op: o_proj's input", "", "inner=L{mid}.o_proj:input:bfloat16"),
    "mean-square": ("inside an op: RMSNorm's mean of squares", "",
                    "inner=L{mid}.post_attn_norm:mean_square:bfloat16"),
    "cos-sin": ("inside an op: rotary's cos/sin", "", "inner=L{mid}.rotary:cos_sin:bfloat16"),
    "scores": ("inside an op: attention scores (eager)", "attn=eager", "attn=eager,inner=L{mid}.attn_core:scores:bfloat16"),
    "softmax-sum": ("inside an op: softmax denominator (eager)", "attn=eager",
                    "attn=eager,inner=L{mid}.attn_core:softmax_sum:bfloat16"),
    "every-o-proj": ("spread: every layer's o_proj input", "", "inner=*.o_proj:input:tf32"),
    "random-sites": ("spread: inputs of random sites", "", "spread={count}:1:tf32"),
    "embed": ("untapped: embedding output", "", "embed=bfloat16"),
    "rope": ("untapped: rotary angles", "", "rope=bfloat16"),
    "fp8-input": ("the needle of in-bf16-drift alone, in float32", "",
                  "inner=L{mid}.o_proj:input:float8_e4m3fn"),
    "in-bf16-drift": ("inside an op, on top of bf16's own drift", "",
                      "dtype=bfloat16,inner=L{mid}.o_proj:input:float8_e4m3fn"),
    "bf16-alone": ("baseline of in-bf16-drift: bf16 alone, scored against the same site", "", "dtype=bfloat16"),
}
EXPECTED = {"bf16-alone": "L{mid}.o_proj"}     # cases whose variant plants no fault
JOINT_K = (1, 3)


def _specs(case, n_layers):
    _, ref, var = CASES[case]
    fill = {"mid": n_layers // 2, "count": n_layers + 6}
    return ref.format(**fill), var.format(**fill)


def _expected(case, var_cfg, n_layers):
    """Where a correct attribution points: llm.faults.fault_sites of the variant's faults (its dtype
    is background drift, not a planted fault); EXPECTED for a baseline without a fault."""
    from llm.faults import fault_sites
    from llm.opmap import site_label
    if case in EXPECTED:
        return [EXPECTED[case].format(mid=n_layers // 2)]
    return [site_label(s, n_layers) for s in fault_sites(var_cfg, n_layers)]


def score(res, mode, expected):
    """How well the `mode` ranking of one attribution points at the `expected` op labels."""
    rows = res["causal_" + mode]
    ops = [r for r in rows if r["kind"] == "op"]
    exp = set(expected)
    layers_exp = {e.split(".")[0] if not e.startswith("final.") else "final" for e in exp}
    classes_exp = {"*." + e.split(".")[1] for e in exp if not e.startswith("final.")}
    ranked = [r["unit"] for r in ops]
    rank = next((i + 1 for i, u in enumerate(ranked) if u in exp), None)
    top = {kind: next((r["unit"] for r in rows if r["kind"] == kind), None) for kind in ("op", "layer", "class")}
    joint = {f"joint_top{r['k']}": r["contribution"] for r in res.get("joint_" + mode, [])}
    n = len(exp)
    layers = [r["unit"] for r in rows if r["kind"] == "layer"]
    return {
        "mode": mode, "expected": list(expected),
        "n_expected": n, "top_op": top["op"], "top_op_expected": top["op"] in exp,
        "top_layer": top["layer"], "top_layer_expected": top["layer"] in layers_exp,
        "top_class": top["class"], "top_class_expected": top["class"] in classes_exp if classes_exp else None,
        "best_expected_rank": rank, "recall_at_n": len(set(ranked[:n]) & exp) / n if n else None,
        "expected_ranked": len(exp & set(ranked)),
        "layer_recall_at_n": (len(set(layers[:len(layers_exp)]) & layers_exp) / len(layers_exp)
                              if layers and layers_exp else None),
        "top_contribution": ops[0]["contribution"] if ops else None,
        "op_contribution_sum": sum(r["contribution"] for r in ops),
        "op_contribution_sumsq": sum(r["contribution"] ** 2 for r in ops),
        "expected_negative": sum(1 for r in ops if r["unit"] in exp and r["contribution"] < 0),
        "expected_contribution_sum": sum(r["contribution"] for r in ops if r["unit"] in exp),
        **joint,
        "joint_top_n": joint.get(f"joint_top{n}"),
        "ops_ranked": len(ops),
    }


def run_case(lm_by_dtype, case, ids, *, drill=0, modes="auto"):
    """One case on one model: (reference spec, variant spec, attribution, expected labels)."""
    from llm.attribute import attribute
    from llm.runconfig import parse_run
    n_layers = lm_by_dtype("float32").model.config.num_hidden_layers
    ref_spec, var_spec = _specs(case, n_layers)
    ref_cfg, var_cfg = parse_run(ref_spec), parse_run(var_spec)
    expected = _expected(case, var_cfg, n_layers)
    res = attribute(lm_by_dtype(ref_cfg.dtype), ref_cfg, lm_by_dtype(var_cfg.dtype), var_cfg, ids, gen_steps=0,
                    restore=False, drill=drill, modes=modes, top_k=sorted(set(JOINT_K) | {len(expected)}),
                    progress_desc=case)
    return ref_spec, var_spec, res, expected


def _f(x, spec=".3f"):
    return "-" if x is None else format(x, spec)


def format_table(rows):
    """rows: (model, case, variant spec, drift rms, score) -> the printed table."""
    head = (f"{'model':<13} {'case':<14} {'mode':<7} {'rms drift':>9} {'n exp':>5} {'top op':<22} {'hit':>3} "
            f"{'rank':>4} {'top layer':<9} {'top class':<16} {'recall':>6} {'L rec':>5} {'top1':>6} {'top3':>6} "
            f"{'top n':>6} {'sum ops':>7} {'sumsq':>6}")
    lines = [head]
    for model, case, _, rms, s in rows:
        lines.append(f"{model:<13} {case:<14} {s['mode']:<7} {rms:>9.3g} {s['n_expected']:>5} {s['top_op'] or '-':<22} "
                     f"{'yes' if s['top_op_expected'] else 'no':>3} {_f(s['best_expected_rank'], 'd'):>4} "
                     f"{s['top_layer'] or '-':<9} {s['top_class'] or '-':<16} {_f(s['recall_at_n'], '.2f'):>6} "
                     f"{_f(s['layer_recall_at_n'], '.2f'):>5} "
                     f"{_f(s.get('joint_top1')):>6} {_f(s.get('joint_top3')):>6} {_f(s['joint_top_n']):>6} "
                     f"{_f(s['op_contribution_sum']):>7} {_f(s['op_contribution_sumsq']):>6}")
    return "\n".join(lines)


def build_parser():
    from probes.cli import add_common_args
    ap = argparse.ArgumentParser(prog="python -m llm.faultstudy", description=__doc__.split("\n\n")[0])
    add_common_args(ap, default_device="cpu")
    ap.add_argument("--models", default="mistral-tiny", help="comma-separated: mistral-tiny, smollm2, ...")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of: {', '.join(CASES)}")
    ap.add_argument("--prompt", default=TEXT)
    ap.add_argument("--drill", type=int, default=0, metavar="N",
                    help="op units only inside the N layers that explain most (0: every op)")
    ap.add_argument("--table", default=None, metavar="PATH", help="also write the printed table here")
    return ap


def main(argv=None):
    from llm.models import load
    from probes.cli import parse_csv_choice, resolve_device
    from probes.device import fingerprint
    from probes.report import add_experiment, new_report, write_report
    from llm.runconfig import DTYPES
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    if device != "cpu":
        raise UsageError("llm.faultstudy runs on the CPU (its cases' run configs name no device)")
    cases = parse_csv_choice(args.cases, tuple(CASES), "case")
    models = [m for m in args.models.split(",") if m]
    if not models:
        raise UsageError("--models: no model given")
    rep = new_report("llm-faults", command=None, fingerprint=fingerprint(device),
                     config={"models": models, "cases": {c: CASES[c] for c in cases}, "prompt": args.prompt,
                             "drill": args.drill, "joint_k": list(JOINT_K)})
    rows = []
    for model in models:
        def lm_by_dtype(dtype, model=model):
            return load(model, "cpu", DTYPES[dtype], args.seed)
        ids = lm_by_dtype("float32").tokenizer.encode(args.prompt)
        for case in cases:
            t0 = time.perf_counter()
            ref_spec, var_spec, res, expected = run_case(lm_by_dtype, case, ids, drill=args.drill)
            seconds = time.perf_counter() - t0
            local = [r["site"] for r in res["local"] if r["max_ulp"] != 0]
            inputs = {"model": model, "weights_seed": args.seed, "prompt_tokens": len(ids), "token_ids_head": ids[:32]}
            for mode in res["causal_modes"]:
                s = score(res, mode, expected)
                rows.append((model, case, var_spec, res["drift"]["rms_dlogit"], s))
                add_experiment(rep, key=f"llm-faults/{model}/{case}/{mode}", inputs=inputs,
                               params={"kind": CASES[case][0], "reference": ref_spec, "variant": var_spec,
                                       "mode": mode, "default_mode": mode == res["causal_default"]},
                               metrics={**s, "drift": res["drift"], "local_nonzero": local,
                                        "local_nonzero_expected": set(local) == set(expected),
                                        "ranking_top10": [(r["unit"], r["contribution"]) for r in
                                                          res["causal_" + mode] if r["kind"] == "op"][:10],
                                        **{kind + "s": [(r["unit"], r["contribution"]) for r in res["causal_" + mode]
                                                        if r["kind"] == kind] for kind in ("layer", "class")},
                                        "joint": res.get("joint_" + mode, []), "seconds": seconds},
                               compares={"metrics": ["ranking_top10", "local_nonzero"]})
            print(f"[{model} {case}: {seconds:.0f} s]", file=sys.stderr)
    table = format_table(rows)
    print(table)
    if args.table:
        from pathlib import Path
        Path(args.table).write_text(table + "\n", encoding="utf-8")
        print(f"table: {args.table}")
    if args.json:
        write_report(rep, args.json)
        print(f"report: {args.json}")
    return 0


if __name__ == "__main__":
    from probes.cli import guarded_main
    sys.exit(guarded_main(main))
