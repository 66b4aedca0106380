"""`python -m probes.fma`: fused vs unfused multiply-add in every backend. See --help."""
import argparse
import sys

from probes import cli
from probes.errors import UsageError

DESCRIPTION = """\
Run a dot product (sequential over k), Horner's rule and axpy in float32, float16 and bfloat16 with an
explicit FMA, an explicit multiply-then-add, and the plain expression a*b+c built with contraction on and
off, on every backend: the compiled extension's CUDA kernels (on a CPU: its C++ reference, whose plain
builds use -ffp-contract=fast -mfma / off), Triton (tl.fma; enable_fp_fusion on/off) and Numba (cuda.fma;
fastmath on/off). Each output is checked bit for bit against the exact model (numerics.fma_programs) the
variant is predicted to equal, and variants are compared with each other (fraction differing, ulps).
On a CPU (--device cpu) Triton runs in its interpreter and Numba in its simulator: both evaluate every
variant unfused, which the report records as their prediction."""


def parse_args(argv):
    from probes.fma.backends import BACKENDS
    from probes.fma.probe import FORMATS

    parser = argparse.ArgumentParser(prog="python -m probes.fma", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_args(parser)
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help=f"comma-separated backends (default: all of {', '.join(BACKENDS)})")
    parser.add_argument("--formats", default=",".join(FORMATS),
                        help=f"comma-separated arithmetic formats (default: {','.join(FORMATS)})")
    parser.add_argument("--n", type=int, default=None,
                        help="outputs per program: dot rows, horner points, axpy elements "
                             "(default: 65536 on a GPU, 256 on a CPU)")
    cli.add_plot_args(parser)
    return parser.parse_args(argv)



def main(argv=None):
    args = parse_args(argv)
    device = cli.select_device(args.device)

    from probes.fma import probe, table
    from probes.fma.backends import BACKENDS

    backends = cli.parse_csv_choice(args.backends, list(BACKENDS), "backend")
    formats = cli.parse_csv_choice(args.formats, list(probe.FORMATS), "format")
    n = probe.default_n(device) if args.n is None else args.n
    if n < 1:
        raise UsageError(f"--n must be at least 1 (got {n})")
    report = probe.run(device, backends=backends, formats=formats, n=n, seed=args.seed,
                       command=["python", "-m", "probes.fma", *(argv if argv is not None else sys.argv[1:])],
                       log=lambda line: print(line, file=sys.stderr))
    print(table.format_table(report))
    path = cli.report_path(args, "fma", report["fingerprint"], device)
    cli.save_report(args, path, report, table.plot)
    return 0


if __name__ == "__main__":
    sys.exit(cli.guarded_main(main))
