"""`python -m probes.accumulator`: detect and validate the matrix units' accumulator. See --help."""
import argparse
import sys

from probes import cli
from probes.errors import UsageError

DESCRIPTION = """\
Run designed dot products (Fasi et al. 2021 style) through each backend x input format, infer the
block-FMA model of its accumulator (block size n_b, extra alignment bits p, rounding, normalisation,
product exactness), fit it at the validation shape on a separate random sample (split-K, block
size, accumulator width sum_bits: the library may run another kernel there), then check that model
bit for bit on --samples random dot products (K=256) with numerics.matmul. Re-analyse a saved report
on a CPU with `python -m probes.accumulator.refit REPORT.json`. Prints a table, writes a JSON report (with every design output as hex) and a plot.
On --device cpu the 'simulated' backend is numerics.matmul with known parameters (the detection
must recover them), torch_cpu is torch's CPU matmul, and Triton runs in its interpreter."""


def parse_args(argv):
    from probes.accumulator.backends import BACKENDS, FORMATS
    p = argparse.ArgumentParser(prog="python -m probes.accumulator", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_args(p)
    p.add_argument("--backends", default=None, help=f"comma-separated, of {','.join(BACKENDS)} "
                   "(default: cublas,cublas_fast,triton on a GPU; simulated,torch_cpu,triton on a CPU)")
    p.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated, of {','.join(FORMATS)}")
    p.add_argument("--samples", type=int, default=100_000, help="random dot products per format (default 100000)")
    p.add_argument("--fit-evals", type=int, default=150, help="candidate models the fit at the "
                   "validation shape may evaluate per experiment (default 150)")
    cli.add_plot_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    device = cli.select_device(args.device)
    from probes import report as reports
    from probes.accumulator import probe
    from probes.accumulator.backends import BACKENDS, FORMATS

    default = "simulated,torch_cpu,triton" if device == "cpu" else "cublas,cublas_fast,triton"
    backends = cli.parse_csv_choice(args.backends or default, list(BACKENDS), "backend")
    formats = cli.parse_csv_choice(args.formats, list(FORMATS), "format")
    if args.samples < 1:
        raise UsageError(f"--samples must be at least 1 (got {args.samples})")
    if args.fit_evals < 1:
        raise UsageError(f"--fit-evals must be at least 1 (got {args.fit_evals})")
    from probes.device import fingerprint
    fp = fingerprint(device)
    path = cli.report_path(args, "accumulator", fp, device)
    report = probe.run(device=device, backend_names=backends, formats=formats, samples=args.samples,
                       seed=args.seed, command=["python", "-m", "probes.accumulator",
                                                *(argv if argv is not None else sys.argv[1:])],
                       log=lambda line: print(line, file=sys.stderr), fingerprint=fp,
                       checkpoint=lambda rep: reports.write_report(rep, path), fit_evals=args.fit_evals)
    print(probe.format_table(report))
    cli.save_report(args, path, report, probe.plot)
    return 0


if __name__ == "__main__":
    sys.exit(cli.guarded_main(main))
