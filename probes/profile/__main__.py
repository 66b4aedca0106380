"""python -m probes.profile: build, list, write and compare GPU profiles (see probes/profile/__init__.py)."""
from __future__ import annotations

import argparse
import json
import sys

from probes import cli
from probes.errors import UsageError
from probes.profile import DATA_DIR, load_profile, shipped

DESCRIPTION = """\
Build a GPU profile (the GPU's matmul arithmetic as data: numerics.matmul models per library, format and
shape class; cuBLAS's K order per shape and M; FMA contraction facts) from probe reports of one GPU:
  python -m probes.profile ACCUMULATOR.json[.xz] GEMM-ALGOS.json GEMM-SWEEP.json FMA.json --out h100.json
Parts the reports lack can be taken from another profile (--assume-from h100), marked assumed.
Other uses: --list (the shipped profiles), --published DIR (write the published ones),
--compare A B [--report ACCUMULATOR.json.xz] (two profiles' models, and each against a GPU's stored bits).
A profile is used by llm runs as linear=emulate:NAME (docs/profiles.md)."""


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m probes.profile", description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reports", nargs="*", help="probe reports (accumulator, gemm, fma) of one GPU")
    ap.add_argument("--out", help="where to write the profile built from REPORTS")
    ap.add_argument("--name", help="the profile's name (default: from the GPU's name, e.g. h100)")
    ap.add_argument("--assume-from", metavar="PROFILE", help="take what the reports lack from this profile "
                    "(a shipped name or a file), marked assumed")
    ap.add_argument("--list", action="store_true", help="list the shipped profiles")
    ap.add_argument("--published", metavar="DIR", help="write the published profiles into DIR")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two profiles' tensor-core models")
    ap.add_argument("--report", help="with --compare: an accumulator report; each profile's models are "
                    "checked against the GPU bits it stores")
    ap.add_argument("--rows", type=int, default=None, help="with --report: rows of each validation sample")
    ap.add_argument("--json", help="with --compare: write the comparison as JSON")
    args = ap.parse_args(argv)
    if args.list:
        for name in shipped():
            p = load_profile(name)
            dts = ", ".join(f"{k}: {v['basis']}" for k, v in sorted(p["linear"].items()))
            print(f"{name:<16} {p['gpu']['name']:<36} {p['source']['kind']:<9} linear {dts}")
        return 0
    if args.published:
        from probes.profile.build import dump_profile
        from probes.profile.published import published_profiles
        for name, prof in published_profiles().items():
            print(dump_profile(prof, f"{args.published}/{name}.json"))
        return 0
    if args.compare:
        return _compare(args)
    if not args.reports or not args.out:
        raise UsageError("give REPORTS... and --out PATH (or --list, --published DIR, --compare A B); "
                         f"shipped profiles are in {DATA_DIR}")
    from probes.profile.build import build_profile, dump_profile
    prof = build_profile(args.reports, name=args.name, assume_from=args.assume_from)
    print(dump_profile(prof, args.out))
    for dt, e in sorted(prof["linear"].items()):
        print(f"  linear {dt:<9} {e['basis']:<9} {e['model_text']}")
    print(f"  k_order: {len(prof['k_order']['entries'])} measured configurations, "
          f"{len(prof['k_order']['buckets'])} sweeps; fma: {len(prof['fma']['facts'])} facts ({prof['fma']['basis']})")
    return 0


def _compare(args):
    from probes.profile.compare import against_report, compare_profiles
    a, b = (load_profile(x) for x in args.compare)
    rows = compare_profiles(a, b)
    print(f"A = {a['name']} ({a['source']['kind']}), B = {b['name']} ({b['source']['kind']})")
    for r in rows:
        what = "same model" if not r["differs"] else "differ in " + ", ".join(
            f"{k} (A {v[0]}, B {v[1]})" for k, v in r["differs"].items())
        print(f"  {r['format']:<22} {what}")
        print(f"      A {r['a_source']}: {r['a']}\n      B {r['b_source']}: {r['b']}")
    result = {"a": a["name"], "b": b["name"], "models": rows}
    if args.report:
        from probes.profile.build import read_report
        rep = read_report(args.report)
        result["against_report"] = {}
        for p in (a, b):
            res = against_report(p, rep, rows=args.rows)
            result["against_report"][p["name"]] = res
            print(f"{p['name']} against the GPU bits of {args.report}:")
            for r in res:
                print(f"  {r['key']:<34} {r['match_rate']:.6f} of {r['dots']} dot products  ({r['model']})")
    if args.json:
        from probes.report import write_json
        write_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(cli.guarded_main(main))
