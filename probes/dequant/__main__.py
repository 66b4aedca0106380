"""`python -m probes.dequant`: dequantisation formulas, GGUF blocks and FP8 through every backend."""
import argparse
import sys

from probes import cli

DESCRIPTION = """\
Dequantise the same int4 / GGUF Q4 / FP8 weights with formulas that are equal on paper ((q - z) * s,
q*s - z*s, fma(q, s, -z*s); float16 vs float32 scale math; FP8 in float32 vs bfloat16) through every
backend (numerics model; the compiled extension: CUDA kernels on a GPU, C++ reference on a CPU; Triton;
torch), check each backend against the numerics model bit for bit, print how far the formulas disagree,
the fused dequant-in-matmul check and the formulas' effect on a Mistral-shaped layer and its logits,
and (GPU) each kernel's bandwidth as a fraction of the copy bandwidth. Writes a JSON report and a plot."""


def parse_args(argv):
    from probes.dequant.backends import BACKENDS

    p = argparse.ArgumentParser(prog="python -m probes.dequant", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_args(p)
    p.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated (default: {','.join(BACKENDS)})")
    p.add_argument("--no-speed", action="store_true", help="skip the GPU speed measurements")
    p.add_argument("--no-layer", action="store_true", help="skip the fused matmul and layer experiments")
    cli.add_plot_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    device = cli.select_device(args.device)
    from probes import device as devinfo
    from probes import report as reports
    from probes.dequant import table
    from probes.dequant.backends import BACKENDS
    from probes.dequant.probe import DequantProbe
    from probes.progress import Progress

    backends = cli.parse_csv_choice(args.backends, list(BACKENDS), "backend")
    command = ["python", "-m", "probes.dequant", *(argv if argv is not None else sys.argv[1:])]
    report = reports.new_report("dequant", command=command, fingerprint=devinfo.fingerprint(device),
                                config={"device": device, "seed": args.seed, "backends": backends})
    probe = None
    with Progress(None, "dequant") as progress:
        def log(line):
            print(line, file=sys.stderr)
            progress.update(note=line[:60])

        probe = DequantProbe(device, backends, args.seed, log, speed=not args.no_speed, layer=not args.no_layer)
        probe.run(report, lambda **kw: reports.add_experiment(report, **kw))
    print(table.format_table(report))
    path = cli.report_path(args, "dequant", report["fingerprint"], device)
    reports.write_report(report, path)
    print(f"report: {path}")
    cli.write_plot(args, path, table.plot, report)
    errors = [e for e in report["experiments"] if e["status"] == "error"]
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(cli.guarded_main(main))
