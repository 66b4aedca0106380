"""`python -m probes.gemm`: cuBLAS kernel choice and batch invariance. See --help."""
import argparse
import os
import signal
import sys
import time

from probes import cli
from probes.errors import UsageError

DESCRIPTION = """\
Parts (--parts, default all that the device can run):
  algos  every cuBLASLt algorithm for Mistral-7B's linear shapes at a few M: heuristic picks and every
         configuration (capped), run on the same inputs, timed, clustered into bit-identical groups,
         errors against float64, which group is the heuristic's default and which is torch's (GPU only)
  bench  the batch-invariant Triton matmul against cuBLAS (F.linear) in one run; picks per shape class
         and M bucket the fastest candidate whose bits equal the anchor config's, records it (GPU only)
  sweep  does row 0 of X[:M] @ W^T keep its bits as M grows? F.linear (bf16, fp16, fp32, TF32), the
         Triton matmul, rms_norm, softmax, SDPA over batch and sequence length. On a CPU: torch's CPU
         BLAS and the Triton interpreter on small shapes.
Writes a JSON report (default reports/gemm-<device>.json), tables and a plot."""


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m probes.gemm", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_args(parser)
    parser.add_argument("--parts", default="all", help="comma-separated: algos,bench,sweep (default: all)")
    parser.add_argument("--shapes", default="all", help="Mistral shapes: q_o,k_v,gate_up,down,lm_head (default all)")
    parser.add_argument("--algo-ms", default="1,64,1400", help="M values of the algos part (default 1,64,1400)")
    parser.add_argument("--algo-dtypes", default="bfloat16",
                        help="dtypes of algos for every shape (bfloat16,float16,float32,float32_tf32; default bfloat16)")
    parser.add_argument("--algo-extra", default="q_o:256:float16,q_o:256:float32,q_o:256:float32_tf32",
                        help="extra shape:M:dtype algos runs ('' for none)")
    parser.add_argument("--max-configs", type=int, default=128, help="valid configurations run per product (cap)")
    parser.add_argument("--max-checks", type=int, default=20000, help="cublasLtMatmulAlgoCheck calls per product (cap)")
    parser.add_argument("--enum-seconds", type=float, default=1.5,
                        help="time cap of one product's configuration enumeration (s, default 1.5)")
    parser.add_argument("--workspace-mb", type=int, default=32, help="cuBLASLt workspace (MiB, default 32)")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per algorithm (median)")
    parser.add_argument("--sweep-max-m", type=int, default=None, help="largest M of the sweep (GPU 4096, CPU 130)")
    parser.add_argument("--sweep-modes", default="all",
                        help="F.linear sweeps: torch:bfloat16,torch:float16,torch:float32,torch_tf32:float32,"
                             "triton:bfloat16,triton:float16 (default all)")
    parser.add_argument("--no-others", action="store_true", help="sweep F.linear only (no rms_norm/softmax/SDPA)")
    parser.add_argument("--bench-ms", default="1,16,32,64,128,256,512,1024,1400,2048,4096",
                        help="M values of the speed table (default: each M bucket's)")
    parser.add_argument("--bench-dtypes", default="bfloat16", help="dtypes of the speed table (bfloat16,float16)")
    parser.add_argument("--choices-out", default=None,
                        help="write the chosen Triton config per shape class here (default: next to the JSON)")
    cli.add_plot_args(parser)
    return parser.parse_args(argv)



def main(argv=None):
    args = parse_args(argv)
    device = cli.select_device(args.device)

    from probes import report as reports
    from probes.gemm import probe as P
    from probes.gemm.triton_matmul import MISTRAL_SHAPES

    parts = cli.parse_csv_choice(args.parts, ["algos", "bench", "sweep"], "part")
    shapes = {s: MISTRAL_SHAPES[s] for s in cli.parse_csv_choice(args.shapes, list(MISTRAL_SHAPES), "shape")}
    modes_all = ["torch:bfloat16", "torch:float16", "torch:float32", "torch_tf32:float32", "triton:bfloat16",
                 "triton:float16"]
    modes = [tuple(m.split(":")) for m in cli.parse_csv_choice(args.sweep_modes, modes_all, "sweep mode")]
    if args.runs < 1 or args.max_configs < 1 or args.max_checks < 1 or args.workspace_mb < 0:
        raise UsageError("--runs, --max-configs, --max-checks must be >= 1 and --workspace-mb >= 0")
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    command = ["python", "-m", "probes.gemm", *(argv if argv is not None else sys.argv[1:])]
    started = time.perf_counter()
    report = P.build_report(device, args.seed, command, {"parts": parts})
    probe = P.GemmProbe(device=device, seed=args.seed, log=log)
    stage_seconds = {}

    def skip(part, reason):
        reports.add_experiment(report, key=f"{part}/skipped", inputs={"seed": args.seed}, params={},
                               status="skipped", message=reason,
                               compares={"reason": "the record of a part that did not run"})
        log(f"skipping {part}: {reason}")

    # A SIGTERM (e.g. from `timeout`) ends the current part; what was measured is still written.
    class Terminated(BaseException):  # not caught by the per-experiment `except Exception`
        pass

    def on_term(signum, frame):
        raise Terminated()
    signal.signal(signal.SIGTERM, on_term)
    try:
        run_parts(args, device, parts, shapes, modes, report, probe, stage_seconds, skip)
    except Terminated:
        report["config"]["terminated"] = "SIGTERM during the run: the report holds the experiments finished before"
        log("terminated by SIGTERM: writing what was measured")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    finish(args, device, report, stage_seconds, started, log)
    return 0


def run_parts(args, device, parts, shapes, modes, report, probe, stage_seconds, skip):
    from probes.gemm import probe as P
    from probes.gemm import sweep as S
    from probes.gemm.triton_matmul import MISTRAL_SHAPES

    if "bench" in parts:
        t = time.perf_counter()
        if device == "cpu":
            skip("bench", "the speed table needs a GPU (the interpreter's time means nothing)")
        else:
            for dtype in cli.parse_csv_choice(args.bench_dtypes, ["bfloat16", "float16"], "bench dtype"):
                probe.bench(report, shapes, cli.parse_sizes(args.bench_ms), dtype)
        stage_seconds["bench"] = time.perf_counter() - t
    if "sweep" in parts:
        t = time.perf_counter()
        if device == "cpu":
            max_m = args.sweep_max_m or 130
            ms = S.cpu_ms(max_m)
            cases = probe.sweep_cases(P.CPU_SHAPES, ms, matmul_modes=[m for m in modes if m[0] == "torch"
                                                                      and m[1] in ("float32", "bfloat16")],
                                      others=not args.no_others, small_ms=[m for m in ms if m <= 16])
            interp_ms = [1, 2, 3, 5, 8, 15, 16, 17, 31, 32, 33]
            cases += probe.sweep_cases(P.INTERP_SHAPES, interp_ms, matmul_modes=[("triton", "float16")], others=False)
        else:
            ms = S.gpu_ms(args.sweep_max_m or S.GPU_MAX_M)
            cases = probe.sweep_cases(shapes, ms, matmul_modes=modes, others=not args.no_others,
                                      small_ms=[m for m in ms if m <= 64])
        report["config"]["sweep_ms"] = ms
        from probes.gemm import triton_configs as TC
        report["config"]["triton_choices_file"] = os.environ.get("GEMM_TRITON_CHOICES")
        report["config"]["triton_choices_used"] = {f"N={n},K={k},{d}": [TC.config_name(c) for c in cs]
                                                   for (n, k, d), cs in {**TC.SHIPPED, **TC.CHOICES}.items()}
        report["config"]["sweep_ms_rule"] = ("GPU: every M in 1..64, every 256, powers of two >= 64 with neighbours, "
                                             "and 100,127,129,200,300,1000,1400,2000,3000" if device != "cpu" else
                                             "CPU: 1..16 and 31-33, 63-65, 96, 127-130; interpreter: small list")
        probe.sweep(report, cases)
        stage_seconds["sweep"] = time.perf_counter() - t
    if "algos" in parts:
        t = time.perf_counter()
        if device == "cpu":
            skip("algos", "cuBLASLt algorithm enumeration needs a CUDA GPU")
        else:
            plan = []
            for spec in cli.parse_csv_choice(args.algo_dtypes, list(P.ALGO_DTYPES), "algo dtype"):
                for shape, (n, k) in shapes.items():
                    for m in cli.parse_sizes(args.algo_ms):
                        plan.append((shape, n, k, m, spec))
            for extra in [e for e in args.algo_extra.split(",") if e.strip()]:
                try:
                    shape, m, spec = extra.strip().split(":")
                    n, k = MISTRAL_SHAPES[shape]
                    if spec not in P.ALGO_DTYPES:
                        raise KeyError(spec)
                except (ValueError, KeyError):
                    raise UsageError(f"--algo-extra: bad entry {extra!r}; use shape:M:dtype, e.g. q_o:256:float16")
                plan.append((shape, n, k, int(m), spec))
            probe.algos(report, plan, max_valid=args.max_configs, max_checks=args.max_checks,
                        workspace_mb=args.workspace_mb, runs=args.runs,
                        max_seconds=args.enum_seconds)
        stage_seconds["algos"] = time.perf_counter() - t


def finish(args, device, report, stage_seconds, started, log):
    from probes import report as reports
    from probes.gemm import table
    from probes.gemm.triton_configs import save_choices

    report["config"]["stage_seconds"] = stage_seconds
    from probes.gemm.triton_matmul import FALLBACKS
    report["config"]["triton_fallbacks"] = FALLBACKS
    for f in FALLBACKS:
        log(f"triton fallback: {f}")
    report["config"]["wall_seconds"] = time.perf_counter() - started

    print(table.format_tables(report))
    path = cli.report_path(args, "gemm", report["fingerprint"], device)
    reports.write_report(report, path)
    print(f"\nstages: " + ", ".join(f"{k} {v:.1f} s" for k, v in stage_seconds.items()))
    print(f"report: {path}  ({report['config']['wall_seconds']:.1f} s)")
    if report["config"].get("triton_choices"):
        choices = args.choices_out or os.path.splitext(path)[0] + "-triton-choices.json"
        gpu = report["fingerprint"].get("gpu") or {}
        save_choices(choices, gpu={k: gpu.get(k) for k in ("name", "compute_capability", "sm_count")},
                     note=f"python -m probes.gemm --parts bench ({report['created_utc']})")
        print(f"triton choices: {choices} (use with GEMM_TRITON_CHOICES=...)")
    cli.write_plot(args, path, table.plot, report)
    return 0


if __name__ == "__main__":
    sys.exit(cli.guarded_main(main))
