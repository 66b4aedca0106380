"""`python -m probes.reduction`: the first thing to run on a new GPU (or CPU). See --help."""
import argparse
import sys

from probes import cli
from probes.errors import UsageError

DESCRIPTION = """\
Sum the same input many times through every backend (the compiled extension's CUDA kernels or, on a
CPU, its C++ reference; Triton; CuPy; Numba; torch) with a fixed-order and an atomic strategy, and
report how many distinct results each gives, how far apart they are (ulps), their error against the
exact sum, whether fixed orders match the numerics model bit for bit, and time / GB/s / fraction of
the copy bandwidth. Writes a JSON report and a plot; compare reports with `python -m probes.compare`.
On a CPU (--device cpu) Triton runs in its interpreter and Numba in its simulator, on small sizes.
Empty inputs are rejected (a sum of nothing is never what a probe meant)."""


def parse_args(argv):
    from probes.reduction.backends import BACKENDS, INTERPRETED_RUNS
    from probes.reduction.probe import ACCUMULATES, DTYPES

    parser = argparse.ArgumentParser(prog="python -m probes.reduction", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_args(parser)
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help=f"comma-separated backends to run (default: all of {', '.join(BACKENDS)}); "
                             "one that is not installed is skipped with a line saying why")
    parser.add_argument("--dtypes", default=",".join(DTYPES),
                        help=f"comma-separated input dtypes (default: {','.join(DTYPES)})")
    parser.add_argument("--accumulate", default=",".join(ACCUMULATES),
                        help="accumulate in float32 and/or in the input dtype (default: float32,input)")
    parser.add_argument("--sizes", default=None,
                        help="comma-separated input sizes, e.g. 1000,4097,2^20+3 (default on a GPU: "
                             "1000,4097,2^20+3,2^24+1 and 2^28 for float32, the benchmark size; "
                             "on a CPU: 1000,4097,2^16+1)")
    parser.add_argument("--runs", type=int, default=100,
                        help="runs per strategy and input; distinct results are counted over them "
                             f"(default 100; interpreted backends are capped at {INTERPRETED_RUNS})")
    parser.add_argument("--grid", type=int, default=None, help="blocks (programs) of pass 1, all backends "
                        "(default: 1024 on a GPU; the extension's C++ reference uses 1024 on a CPU too)")
    parser.add_argument("--block", type=int, default=None,
                        help="threads per block (Triton: lanes per program) (default: 256; Triton 1024)")
    parser.add_argument("--final-block", type=int, default=None,
                        help="threads of the fixed order's second pass (default 256)")
    parser.add_argument("--no-specials", action="store_true", help="skip the NaN / Inf experiments")
    cli.add_plot_args(parser)
    return parser.parse_args(argv)



def main(argv=None):
    args = parse_args(argv)
    device = cli.select_device(args.device)

    from probes.reduction import probe as reduction
    from probes.reduction import table
    from probes.reduction.backends import BACKENDS

    backends = [BACKENDS[b] for b in cli.parse_csv_choice(args.backends, list(BACKENDS), "backend")]
    dtypes = cli.parse_csv_choice(args.dtypes, list(reduction.DTYPES), "dtype")
    accumulates = cli.parse_csv_choice(args.accumulate, list(reduction.ACCUMULATES), "accumulation")
    if args.runs < 1:
        raise UsageError(f"--runs must be at least 1 (got {args.runs})")
    sizes = reduction.default_sizes
    if args.sizes:
        chosen = cli.parse_sizes(args.sizes)
        sizes = lambda device, dtype: chosen  # noqa: E731
    probe = reduction.ReductionProbe(
        device=device, backends=backends, dtypes=dtypes, sizes=sizes, accumulates=accumulates,
        runs=args.runs, seed=args.seed, specials=not args.no_specials,
        overrides={"grid": args.grid, "block": args.block, "final_block": args.final_block},
        log=lambda line: print(line, file=sys.stderr))
    report = reduction.run(probe, ["python", "-m", "probes.reduction", *(argv if argv is not None else sys.argv[1:])])
    print(table.format_table(report))
    summary = table.speed_summary(report)
    if summary and device != "cpu":
        print()
        print(summary)
    path = cli.report_path(args, "reduction", report["fingerprint"], device)
    cli.save_report(args, path, report, table.plot)
    return 0


if __name__ == "__main__":
    sys.exit(cli.guarded_main(main))
