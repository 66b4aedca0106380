"""`python -m probes.accumulator.refit REPORT.json`: re-analyse a saved accumulator report on a CPU.

For every experiment with a stored validation output, the validation operands are regenerated
from the seed in the report (``validate.random_operands``, the probe's own generator), and

1. the report's model is re-validated against the stored GPU bits (all dot products);
2. ``fit.fit_model`` searches from that model on a few rows (``--fit-rows``) of the stored
   output; the fitted model is then checked on *all* rows and on the held-out rows alone (the
   rows the fit never saw).

No GPU needed: the next GPU's report can be analysed here. Prints a table; ``--json`` writes the
results (models as dicts, match rates, the search trace).
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from numerics.matmul import MatmulModel
from numerics.matmul_fast import matmul_bits
from probes import cli
from probes.accumulator.fit import FIT_ROWS, fit_model
from probes.accumulator.validate import random_operands
from probes.errors import ReportError, UsageError
from probes.report import decode_output, load_report


def _bits(x):
    return np.asarray(x, dtype=np.float64).astype(np.float32).view(np.uint32)


def refit_experiment(exp: dict, fit_rows=FIT_ROWS, max_rows=None) -> dict:
    """Re-validate and re-fit one experiment; with `max_rows`, on the first max_rows rows of the
    validation sample only (a quicker check: the CI guard of the committed reports)."""
    inp, fmt = exp["inputs"], exp["params"]["format"]
    for k in ("seed", "M", "N", "K"):
        if k not in inp:
            raise ReportError(f"{exp['key']}: inputs lack {k!r}; cannot regenerate the operands")
    A, B, _ = random_operands(fmt, int(inp["M"]) * int(inp["N"]), int(inp["K"]), int(inp["seed"]))
    if A.shape[0] != inp["M"] or B.shape[1] != inp["N"]:
        raise ReportError(f"{exp['key']}: regenerated operands are {A.shape} @ {B.shape}, the "
                          f"report says M={inp['M']} N={inp['N']}")
    got = _bits(decode_output(exp))
    if got.shape != (A.shape[0], B.shape[1]):
        raise ReportError(f"{exp['key']}: stored output has shape {got.shape}, expected "
                          f"{(A.shape[0], B.shape[1])}")
    if max_rows is not None:
        if max_rows <= max(fit_rows):
            raise UsageError(f"max_rows={max_rows} must exceed the largest fit row {max(fit_rows)}")
        A, got = A[:max_rows], got[:max_rows]
    start = MatmulModel(**exp["metrics"]["model"])
    same0 = _bits(matmul_bits(A, B, start)) == got
    model, fit_rate, trace = fit_model(A, B, got, start, rows=fit_rows)
    same = same0 if model == start else _bits(matmul_bits(A, B, model)) == got
    held = np.ones(A.shape[0], dtype=bool)
    held[[r for r in fit_rows if r < A.shape[0]]] = False
    return {"key": exp["key"], "report_model": start.as_dict(), "report_model_text": start.describe(),
            "report_match_rate": float(same0.mean()), "model": model.as_dict(),
            "model_text": model.describe(), "fit_rows": list(fit_rows), "fit_rate": fit_rate,
            "match_rate": float(same.mean()), "held_out_match_rate": float(same[held].mean()),
            "samples": int(same.size), "trace": trace}


def refit_report(report: dict, keys=None, fit_rows=FIT_ROWS, log=None, max_rows=None) -> list:
    out = []
    for e in report.get("experiments", []):
        if e.get("status") != "ok" or not e.get("output") or "model" not in (e.get("metrics") or {}):
            continue
        if keys and not any(k in e["key"] for k in keys):
            continue
        r = refit_experiment(e, fit_rows, max_rows)
        if log:
            log(f"{r['key']}: {r['model_text']}  match {r['match_rate']:.6f}")
        out.append(r)
    return out


def format_table(results) -> str:
    head = f"{'experiment':<36} {'report model':>12} {'refit model':<80} {'match':>9} {'held-out':>9}"
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r['key']:<36} {r['report_match_rate']:>12.6f} {r['model_text']:<80} "
                     f"{r['match_rate']:>9.6f} {r['held_out_match_rate']:>9.6f}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m probes.accumulator.refit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("report", help="an accumulator report (JSON) with stored validation outputs")
    p.add_argument("--only", default=None, help="comma-separated substrings of experiment keys")
    p.add_argument("--fit-rows", default=",".join(map(str, FIT_ROWS)),
                   help="rows of the validation sample the search may look at (default %(default)s)")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    try:
        rows = tuple(int(x) for x in args.fit_rows.split(",") if x.strip())
    except ValueError:
        raise UsageError(f"--fit-rows must be comma-separated integers, not {args.fit_rows!r}")
    if not rows or min(rows) < 0:
        raise UsageError("--fit-rows needs at least one nonnegative row index")
    rep = load_report(args.report)
    if rep.get("probe") != "accumulator":
        raise ReportError(f"{args.report} is a {rep.get('probe')!r} report, not an accumulator report")
    keys = [k for k in (args.only or "").split(",") if k]
    res = refit_report(rep, keys, rows, log=lambda s: print(s, file=sys.stderr))
    if not res:
        raise ReportError(f"{args.report}: no experiment with a stored output and model to refit")
    print(format_table(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
        print(f"\nresults: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.guarded_main(main))
