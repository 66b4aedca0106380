"""`python -m probes.gemm.bimatmul`: is the batch-invariant matmul fast enough to serve with? (issue 14)

One GPU run, every part recorded in one report even when another part fails:
  tune      (with --tune) the Triton candidates of every M bucket against cuBLAS, cold and as kernel time
            (CUDA graphs), per split class; writes the chosen tables (bimatmul-choices.json: the file to ship
            as probes/gemm/choices/<gpu>.json); the parts below then use them
  tests     pytest -m gpu tests/test_gemm_gpu.py (bit invariance over every M of the sweep, every table)
  speed     for every Mistral shape and M: batch_invariant_matmul(x, w) as a user calls it (no config, no
            GEMM_TRITON_CHOICES: the tables shipped for this GPU) against torch F.linear (cuBLAS), timed
            (a) cold, call by call (probes.timing.cold_gpu_times: L2 flushed, host launch path kept out) and
            (b) as kernel time alone (probes.timing.graph_call_times: calls captured in a CUDA graph, each
            with its own weight matrix, replayed; host time not inside); the ratio cuBLAS / Triton per cell
            against the 0.9 target; and whether the rows at this M equal the rows of the largest M.
            Winner's curse: the tune part picks the fastest of many candidates from one noisy measurement,
            so its ratios are biased upward; the speed part measures the chosen tables afresh, --repeats
            times (default 3, independent cold + graph measurements), and reports the median ratio with
            every repeat's ratio (the spread); `meets` is on the medians, `meets_every_repeat` on the worst
  cublaslt  vLLM's route on sm_90: cuBLASLt with no workspace for split-K (its 1 KiB). Per shape the
            heuristic's first pick without split-K at every M of the sweep: does row 0 keep its bits as M
            grows (one result, or where it changes, with the tile of each pick), and its speed at the list's
            M next to cuBLAS's default and the Triton matmul (in the speed part's timings)
Writes <out>/bimatmul.json (probes.report), bimatmul.txt (the tables), bimatmul.png, bimatmul-tests.txt;
<out> is --out, else $OUT (the GPU runner's), else ./out.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from probes import cli
from probes.errors import UsageError

MS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 1400, 2048, 4096)
PARTS = ("tests", "speed", "cublaslt")
PROBE = "gemm-bimatmul"
TARGET = 0.9


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m probes.gemm.bimatmul", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="output folder (default: $OUT, else ./out)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the inputs (default 0)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated: {','.join(PARTS)} (default all)")
    parser.add_argument("--tune", action="store_true", help="first tune the tables of --shapes (see above)")
    parser.add_argument("--shapes", default="all", help="Mistral shapes: q_o,k_v,gate_up,down,lm_head (default all)")
    parser.add_argument("--ms", default=",".join(map(str, MS)), help="M values of the speed part (default: the list)")
    parser.add_argument("--quick", action="store_true",
                        help="a quick check: M = 1,16,256,1400,4096, fewer repetitions, cuBLASLt sweep at those M")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16"))
    parser.add_argument("--reps", type=int, default=25, help="cold-timer calls per function (median; default 25)")
    parser.add_argument("--graph-calls", type=int, default=20, help="calls per CUDA graph (default 20)")
    parser.add_argument("--graph-replays", type=int, default=10, help="graph replays (median; default 10)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="independent measurements of each speed cell (cold and graph, one after the other); "
                             "the ratio is their median, each repeat's ratio is kept as the spread (default 3)")
    parser.add_argument("--sweep-max-m", type=int, default=4096, help="largest M of the cuBLASLt sweep")
    parser.add_argument("--tests-timeout", type=int, default=240, help="seconds for the GPU tests (default 240)")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    args.parts = cli.parse_csv_choice(args.parts, list(PARTS), "part")
    if args.quick:
        args.ms = "1,16,256,1400,4096" if args.ms == parser.get_default("ms") else args.ms
        args.reps, args.graph_replays = min(args.reps, 15), min(args.graph_replays, 5)
    args.ms = cli.parse_sizes(args.ms)
    if args.reps < 3 or args.graph_calls < 1 or args.graph_replays < 1 or args.sweep_max_m < 1 or args.repeats < 1:
        raise UsageError("--reps must be >= 3, --graph-calls, --graph-replays, --repeats and --sweep-max-m >= 1")
    from probes.gemm.triton_configs import MISTRAL_SHAPES
    args.shapes = {s: MISTRAL_SHAPES[s] for s in cli.parse_csv_choice(args.shapes, list(MISTRAL_SHAPES), "shape")}
    args.out = args.out or os.environ.get("OUT") or "out"
    return args


def main(argv=None):
    args = parse_args(argv)
    device = cli.select_device("cuda")   # NoGPUError (a clear message) without a usable GPU
    from probes.gemm import probe as P

    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    os.makedirs(args.out, exist_ok=True)
    started = time.perf_counter()
    command = ["python", "-m", "probes.gemm.bimatmul", *(argv if argv is not None else sys.argv[1:])]
    report = P.build_report(device, args.seed, command, {
        "parts": args.parts, "tune": args.tune, "shapes": {k: list(v) for k, v in args.shapes.items()},
        "ms": args.ms, "dtype": args.dtype, "reps": args.reps, "graph_calls": args.graph_calls,
        "graph_replays": args.graph_replays, "target": TARGET}, probe=PROBE)
    path = os.path.join(args.out, "bimatmul.json")
    env = dict(os.environ)
    stages = {}

    def run(name, fn):
        t = time.perf_counter()
        log(f"== {name} ({time.perf_counter() - started:.0f} s)")
        try:
            fn()
        except Exception as exc:  # the part is an error row; the others still run
            add(report, f"{name}/error", status="error", message=f"{type(exc).__name__}: {exc}")
            log(f"error in {name}: {type(exc).__name__}: {exc}")
        stages[name] = round(time.perf_counter() - t, 1)
        try:
            save(report, path, stages, started)
        except Exception as exc:  # a report that cannot be written now is tried again at the end
            log(f"could not write {path} after {name}: {type(exc).__name__}: {exc}")

    class Terminated(BaseException):  # not caught by a part's `except Exception`
        pass

    def on_term(signum, frame):
        raise Terminated()
    signal.signal(signal.SIGTERM, on_term)  # e.g. from `timeout`: what was measured is still written
    try:
        if args.tune:
            run("tune", lambda: tune(report, args, env, log))
        if "tests" in args.parts:
            run("tests", lambda: gpu_tests(report, args, env, log))
        if "speed" in args.parts:
            run("speed", lambda: speed(report, args, "cublaslt" in args.parts, log))
        if "cublaslt" in args.parts:
            run("cublaslt", lambda: cublaslt_sweep(report, args, log))
    except Terminated:
        report["config"]["terminated"] = "SIGTERM during the run: the report holds what was measured before"
        log("terminated by SIGTERM: writing what was measured")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    text = format_report(report)
    with open(os.path.join(args.out, "bimatmul.txt"), "w") as f:
        f.write(text + "\n")
    print(text, flush=True)
    save(report, path, stages, started)
    if not args.no_plot:
        try:
            plot(report, os.path.join(args.out, "bimatmul.png"))
        except Exception as exc:  # no matplotlib, or nothing to draw: the report stands
            log(f"plot skipped: {type(exc).__name__}: {exc}")
    print(f"report: {path} ({time.perf_counter() - started:.0f} s)", flush=True)
    return 0


def add(report, key, **kw):
    from probes import report as reports

    kw.setdefault("inputs", {"seed": report["config"]["seed"]})
    kw.setdefault("params", {})
    kw.setdefault("compares", {"reason": "test counts and timings are measurements, not compared"})
    return reports.add_experiment(report, key=key, **kw)


def save(report, path, stages, started):
    from probes import report as reports

    report["config"]["stage_seconds"] = dict(stages)
    report["config"]["wall_seconds"] = round(time.perf_counter() - started, 1)
    from probes.gemm.triton_matmul import FALLBACKS
    report["config"]["triton_fallbacks"] = list(FALLBACKS)
    reports.write_report(report, path)


# ---- tune -----------------------------------------------------------------------------------------------

def tune(report, args, env, log):
    """Bench every candidate of every bucket and split class (cold, then the best 3 as graphs), choose a table
    per shape, write them as a choices file, and use them in this run (tests: via GEMM_TRITON_CHOICES)."""
    from probes import report as reports
    from probes.gemm import probe as P
    from probes.gemm import triton_configs as C

    ms = [at for _, at in C.BUCKETS]
    chosen = P.bench(report, args.shapes, ms, args.dtype, seed=args.seed, log=log, graph=args.graph_calls,
                     reps=args.reps)
    keys = {(n, k, args.dtype) for n, k in args.shapes.values()}
    tables = {key: cs for key, cs in C.CHOICES.items() if key in keys}
    measured = {}
    for shape, c in chosen.items():
        n, k = args.shapes[shape]
        measured[(n, k, args.dtype)] = [{x: b[x] for x in ("measured_at_m", "ratio", "graph_ratio", "target")}
                                        for b in c["buckets"]]
    gpu = report["fingerprint"].get("gpu") or {}
    out = os.path.join(args.out, "bimatmul-choices.json")
    C.save_choices(out, tables, gpu={k: gpu.get(k) for k in ("name", "compute_capability", "sm_count")},
                   measured=measured, note=f"python -m probes.gemm.bimatmul --tune ({report['created_utc']}): "
                   "per bucket the best of cold ratio and graph ratio (the worse of the two) vs F.linear")
    env["GEMM_TRITON_CHOICES"] = os.path.abspath(out)
    report["config"]["tuned_choices"] = reports.jsonable({"file": out, "chosen": chosen})
    report["config"]["triton_table"] = reports.jsonable(dict(C.table_status(gpu, "cuda"), tuned_in_this_run=True))
    log(f"tuned tables written to {out}")


# ---- tests ----------------------------------------------------------------------------------------------

def gpu_tests(report, args, env, log):
    """pytest -m gpu tests/test_gemm_gpu.py in a child process; its log beside the report, its counts in it."""
    log_path = os.path.join(args.out, "bimatmul-tests.txt")
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rfE",
           "--durations=5", "tests/test_gemm_gpu.py"]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository
    t = time.perf_counter()
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.tests_timeout, cwd=root)
        text, rc = r.stdout + r.stderr, r.returncode
    except subprocess.TimeoutExpired as exc:
        text = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        text, rc = text + f"\nTIMEOUT after {args.tests_timeout} s", None
    with open(log_path, "w") as f:
        f.write(text)
    counts = pytest_counts(text)
    log(f"tests: {counts} (exit {rc}, {time.perf_counter() - t:.0f} s; log {log_path})")
    ok = rc == 0 and counts.get("failed", 0) == 0 and counts.get("error", 0) == 0
    add(report, "tests/gemm_gpu", params={"command": " ".join(cmd[1:]), "log": log_path,
                                          "GEMM_TRITON_CHOICES": env.get("GEMM_TRITON_CHOICES")},
        metrics=dict(counts, returncode=rc, seconds=round(time.perf_counter() - t, 1), passed_all=ok),
        status="ok" if ok else "error", message="" if ok else f"pytest exit {rc}: {counts}")


def pytest_counts(text):
    """{passed: n, failed: n, error: n, skipped: n ...} from pytest's last summary line."""
    import re

    lines = [line for line in text.splitlines() if re.search(r"\d+ (passed|failed|errors?|skipped)", line)]
    counts = {}
    for n, word in re.findall(r"(\d+) (passed|failed|errors?|skipped|deselected|xfailed|xpassed)",
                              lines[-1] if lines else ""):
        counts["error" if word.startswith("error") else word] = int(n)
    return counts


# ---- speed ----------------------------------------------------------------------------------------------

def speed(report, args, with_lt, log):
    for name, (n, k) in args.shapes.items():
        try:
            speed_shape(report, args, name, n, k, with_lt, log)
        except Exception as exc:
            add(report, f"speed/{args.dtype}/{name}/error", status="error", message=f"{type(exc).__name__}: {exc}")
            log(f"error in speed {name}: {type(exc).__name__}: {exc}")
        import torch
        torch.cuda.empty_cache()


def speed_shape(report, args, name, n, k, with_lt, log):
    """Every M of one shape: Triton (public entry point), cuBLAS, and cuBLASLt without split-K."""
    import torch

    from probes.gemm import triton_bench as B
    from probes.gemm.triton_matmul import batch_invariant_matmul

    w, xs = _inputs(n, k, max(args.ms), args)
    full = batch_invariant_matmul(xs, w).view(torch.int16)
    pool = B.weight_pool(w, args.graph_calls)
    for m in args.ms:
        key = f"speed/{args.dtype}/{name}/M={m}"
        inputs = {"seed": args.seed, "M": m, "N": n, "K": k, "dtype": args.dtype,
                  "generator": "torch.Generator('cuda').manual_seed(seed); W = randn(N, K) * K**-0.5, X = randn"}
        try:
            metrics = speed_cell(xs[:m], w, pool, full[:m], with_lt, args)
        except Exception as exc:
            add(report, key, inputs=inputs, status="error", message=f"{type(exc).__name__}: {exc}")
            log(f"error in {key}: {type(exc).__name__}: {exc}")
            continue
        add(report, key, inputs=inputs, metrics=metrics, params=SPEED_PARAMS)
        log(cell_text(name, m, metrics))


def _inputs(n, k, max_m, args, device="cuda"):
    """W [N, K] (scaled by K**-0.5) and X [max M, K] from the seed (the speed and cuBLASLt parts: the same)."""
    import torch

    tdt = getattr(torch, args.dtype)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    w = (torch.randn((n, k), device=device, generator=gen) * k ** -0.5).to(tdt)
    return w, torch.randn((max_m, k), device=device, generator=gen).to(tdt)


SPEED_PARAMS = {
    "triton": "batch_invariant_matmul(x, w): no config, no out, no GEMM_TRITON_CHOICES (the shipped tables)",
    "cublas": "torch.nn.functional.linear(x, w)",
    "cublaslt_nosplit": "probes.gemm.cublaslt.NoSplitPick: the heuristic's first pick with split-K 1 under a "
                        "1 KiB workspace (vLLM's CUBLASLT_WORKSPACE_SIZE=1 on sm_90)",
    "cold": "probes.timing.cold_gpu_times: alternating call by call, L2 flushed before each call, events around "
            "the call alone, host launch path kept out by a GPU sleep before the start event",
    "graph": "probes.timing.graph_call_times: host time NOT inside; kernels back to back in a CUDA graph, each call "
             "with its own weight matrix (a pool of copies 4x the L2), median of replays / calls",
    "ratio": "cuBLAS time / other time (>= 0.9 is the target)",
}


def speed_cell(x, w, pool, full_rows, with_lt, args):
    """Metrics of one (shape, M): the config used, cold and graph times and ratios, rows equal to the full run."""
    import torch
    import torch.nn.functional as F

    from probes.gemm.triton_configs import config_name, split_of
    from probes.gemm.triton_matmul import batch_invariant_matmul, config_for
    from probes.timing import host_launch_us, median

    m, n = x.shape[0], w.shape[0]
    c = config_for(n, x.shape[1], x.dtype, m)
    fns = {"cublas": lambda: F.linear(x, w), "triton": lambda: batch_invariant_matmul(x, w)}
    gfns = {"cublas": lambda i: F.linear(x, pool[i % len(pool)]),
            "triton": lambda i: batch_invariant_matmul(x, pool[i % len(pool)])}
    metrics = {"config": config_name(c), "split_k": split_of(c),
               "rows_equal_largest_m": bool(torch.equal(batch_invariant_matmul(x, w).view(torch.int16), full_rows))}
    if with_lt:
        try:
            from probes.gemm.cublaslt import NoSplitPick
            lt = NoSplitPick(m, n, x.shape[1], str(x.dtype).replace("torch.", ""), device_index=x.device.index or 0)
            fns["cublaslt_nosplit"] = lambda: lt(x, w)
            gfns["cublaslt_nosplit"] = lambda i: lt(x, pool[i % len(pool)])
            metrics["cublaslt_pick"] = lt.pick["desc"]
        except Exception as exc:
            metrics["cublaslt_error"] = f"{type(exc).__name__}: {exc}"
    per_repeat = [_time_once(list(fns), fns, gfns, args, metrics) for _ in range(args.repeats)]
    names = min((r[0] for r in per_repeat), key=len)   # a repeat whose graph dropped cuBLASLt: all drop it
    for kind in ("cold", "graph"):
        meds = {s: [median(times[kind][s]) for _, times in per_repeat] for s in names}
        for s in names:
            metrics[f"{s}_{kind}_ms"] = median(meds[s])
            if s != "cublas":
                ratios = [c / t for c, t in zip(meds["cublas"], meds[s])]
                metrics[f"{s}_{kind}_ratio"] = median(ratios)
                metrics[f"{s}_{kind}_ratio_repeats"] = ratios
    metrics["repeats"] = args.repeats
    metrics["triton_host_us"] = host_launch_us(fns["triton"])
    metrics["cublas_host_us"] = host_launch_us(fns["cublas"])
    metrics["graph_weights"] = len(pool)
    metrics["meets"] = min(metrics["triton_cold_ratio"], metrics["triton_graph_ratio"]) >= TARGET
    metrics["meets_every_repeat"] = min(metrics["triton_cold_ratio_repeats"]
                                        + metrics["triton_graph_ratio_repeats"]) >= TARGET
    return metrics


def _time_once(names, fns, gfns, args, metrics):
    """One independent measurement of the cell: (names timed, {"cold": {name: times}, "graph": {name: times}})."""
    from probes.timing import cold_gpu_times, graph_call_times

    cold = cold_gpu_times([fns[s] for s in names], args.reps)
    try:
        graph = graph_call_times([gfns[s] for s in names], calls=args.graph_calls, replays=args.graph_replays)
    except Exception as exc:  # cuBLASLt through probes._C in a graph capture: retry without it
        if len(names) < 3:
            raise
        metrics["cublaslt_graph_error"] = f"{type(exc).__name__}: {exc}"
        names, cold = names[:2], cold[:2]
        graph = graph_call_times([gfns[s] for s in names], calls=args.graph_calls, replays=args.graph_replays)
    return names, {"cold": dict(zip(names, cold)), "graph": dict(zip(names, graph))}


def cell_text(shape, m, r):
    lt = (f" lt {r['cublaslt_nosplit_cold_ratio']:.3f}/{r['cublaslt_nosplit_graph_ratio']:.3f}"
          if "cublaslt_nosplit_cold_ratio" in r else "")
    return (f"{shape:8s} M={m:5d} {r['config']:36s} cold {r['triton_cold_ratio']:.3f} graph "
            f"{r['triton_graph_ratio']:.3f}{lt}{'' if r['rows_equal_largest_m'] else '  ROWS DIFFER'}")


# ---- cuBLASLt without split-K ---------------------------------------------------------------------------

def cublaslt_sweep(report, args, log):
    """Per shape: row 0 of the no-split-K pick at every M of the sweep (row0_sweep), with each M's pick."""
    from probes.gemm.cublaslt import NOSPLIT_WORKSPACE_BYTES, NoSplitPick
    from probes.gemm.sweep import gpu_ms, row0_sweep

    ms = sorted(set(args.ms)) if args.quick else gpu_ms(args.sweep_max_m)
    for name, (n, k) in args.shapes.items():
        key = f"cublaslt/{args.dtype}/{name}"
        inputs = {"seed": args.seed, "N": n, "K": k, "max_M": max(ms), "dtype": args.dtype}
        try:
            w, xs = _inputs(n, k, max(ms), args)
            picks, alive = {}, [None]

            def fn(m):
                lt = NoSplitPick(m, n, k, args.dtype)
                picks[m] = dict(lt.pick, rank0=lt.rank0.get("splitk"), rank0_desc=_desc(lt.rank0))
                alive[0] = lt  # its plan and workspace outlive the launch (row0_sweep synchronises)
                return lt(xs[:m], w)
            r = row0_sweep(fn, ms, log=log, label=key)
        except Exception as exc:
            add(report, key, inputs=inputs, status="error", message=f"{type(exc).__name__}: {exc}")
            log(f"error in {key}: {type(exc).__name__}: {exc}")
            continue
        tiles = [(m, picks[m]["desc"]) for i, m in enumerate(ms)
                 if i == 0 or picks[m]["desc"] != picks[ms[i - 1]]["desc"]]
        metrics = {k_: v for k_, v in r.items() if k_ not in ("ms", "output")}
        metrics["pick_changes"] = tiles
        bits_at, picks_at = {m for m, _ in r["change_points"][1:]}, {m for m, _ in tiles[1:]}
        metrics["pick_changes_keeping_bits"] = sorted(picks_at - bits_at)   # another kernel, the same row 0
        metrics["bit_changes_same_pick"] = sorted(bits_at - picks_at)       # same kernel, other bits: no M effect
        metrics["picks_with_split_rank0"] = sorted(m for m, p in picks.items() if (p["rank0"] or 1) > 1)
        add(report, key, inputs=inputs, output=r["output"], metrics=metrics,
            compares={"output": True, "metrics": ["change_points", "pick_changes"]},
            params={"ms": ms, "workspace_bytes": NOSPLIT_WORKSPACE_BYTES, "picks": {str(m): p for m, p in picks.items()},
                    "question": "does row 0 of X[:M] @ W^T keep its bits for every M when cuBLASLt may not split K?"})


def _desc(p):
    from probes.gemm.cublaslt import describe
    return describe(p) if "tile" in p else ""


# ---- the tables and the plot ----------------------------------------------------------------------------

def _exps(report, prefix):
    return [e for e in report["experiments"] if e["key"].startswith(prefix)]


def format_report(report):
    """The text tables: table source, tests, the speed table (a row per shape and M), the cuBLASLt answer."""
    cfg = report["config"]
    tt = cfg.get("triton_table") or {}
    lines = [f"Triton tables: {tt.get('source')} {tt.get('file') or ''} ({tt.get('reason', '')})"
             + ("; tuned in this run" if tt.get("tuned_in_this_run") else "")]
    if cfg.get("terminated"):
        lines.append(f"TERMINATED: {cfg['terminated']}")
    for e in _exps(report, "tests/"):
        m = e["metrics"] or {}
        lines.append(f"GPU tests ({e['params'].get('command', '')}): {e['status'].upper()} "
                     + ", ".join(f"{v} {k}" for k, v in m.items() if k in ("passed", "failed", "error", "skipped"))
                     + (f" (exit {m.get('returncode')})" if m else f" {e['message']}"))
    if _exps(report, "bench/"):
        from probes.gemm import table
        lines += ["", "tuning (--tune):", table.format_bench(report)]
    lines += ["", speed_table(report), "", lt_table(report)]
    errors = [e for e in report["experiments"] if e["status"] == "error" and not e["key"].startswith("tests/")]
    if errors:
        lines += ["", "errors:"] + [f"  {e['key']}: {e['message'][:200]}" for e in errors]
    return "\n".join(line for line in lines if line is not None)


def speed_table(report):
    rows = [e for e in _exps(report, "speed/") if e["status"] == "ok"]
    if not rows:
        return "speed: no measurement"
    head = (f"{'shape':<8} {'M':>5} {'Triton config (shipped table)':<38} {'cold':>6} {'graph':>6} "
            f"{'Lt cold':>7} {'Lt graph':>8} {'rows':>5} {'host us T/C':>11}  (ratio = cuBLAS time / other)")
    lines = [head, "-" * len(head)]
    for e in rows:
        r = e["metrics"]
        lt = lambda s: f"{r[s]:.3f}" if s in r else "-"  # noqa: E731
        lines.append(f"{e['key'].split('/')[2]:<8} {e['inputs']['M']:>5} {r['config']:<38} "
                     f"{r['triton_cold_ratio']:>6.3f} {r['triton_graph_ratio']:>6.3f} "
                     f"{lt('cublaslt_nosplit_cold_ratio'):>7} {lt('cublaslt_nosplit_graph_ratio'):>8} "
                     f"{'same' if r['rows_equal_largest_m'] else 'DIFF':>5} "
                     f"{r['triton_host_us']:>5.0f}/{r['cublas_host_us']:<5.0f}{'' if r['meets'] else '  < 0.9'}")
    lines.append(summary(rows))
    spread = spread_text(rows)
    return "\n".join(lines + ([spread] if spread else []))


def spread_text(rows):
    """The largest spread of the Triton ratios over the repeats (max - min), cold and graph, with its cell."""
    out = []
    for kind in ("cold", "graph"):
        cells = [(max(r) - min(r), e) for e in rows if len(r := e["metrics"].get(f"triton_{kind}_ratio_repeats")
                                                           or []) > 1]
        if cells:
            width, e = max(cells, key=lambda c: c[0])
            rs = e["metrics"][f"triton_{kind}_ratio_repeats"]
            out.append(f"{kind} {len(rs)} repeats: widest spread {width:.3f} at {e['key'].split('/')[2]} "
                       f"M={e['inputs']['M']} ({', '.join(f'{v:.3f}' for v in rs)})")
    failing = [f"{e['key'].split('/')[2]} M={e['inputs']['M']}" for e in rows
               if e["metrics"]["meets"] and e["metrics"].get("meets_every_repeat") is False]
    if failing:
        out.append(f"median >= {TARGET} but a repeat below it: {', '.join(failing)}")
    return "ratio spread over repeats: " + "; ".join(out) if out else ""


def summary(rows):
    def count(s):
        vals = [e["metrics"][s] for e in rows if s in e["metrics"]]
        return sum(v >= TARGET for v in vals), len(vals), min(vals, default=float("nan"))
    out = []
    for label, s in (("Triton cold", "triton_cold_ratio"), ("Triton graph", "triton_graph_ratio"),
                     ("cuBLASLt no-split cold", "cublaslt_nosplit_cold_ratio"),
                     ("cuBLASLt no-split graph", "cublaslt_nosplit_graph_ratio")):
        ok, n, worst = count(s)
        if n:
            out.append(f"{label}: {ok}/{n} cells >= {TARGET} (worst {worst:.3f})")
    bad = [f"{e['key'].split('/')[2]} M={e['inputs']['M']}" for e in rows if not e["metrics"]["meets"]]
    return "; ".join(out) + (f"\nbelow {TARGET} (cold or graph): {', '.join(bad)}" if bad else "")


def lt_table(report):
    rows = _exps(report, "cublaslt/")
    if not rows:
        return "cuBLASLt without split-K: not run"
    lines = ["cuBLASLt without split-K (1 KiB workspace): row 0 over M"]
    for e in rows:
        if e["status"] != "ok":
            lines.append(f"  {e['key']}: {e['status'].upper()} {e['message'][:200]}")
            continue
        m = e["metrics"]
        verdict = ("ONE result for every M (batch invariant on these inputs)" if m["invariant"] else
                   f"{m['distinct']} results, first change at M={m['first_change_m']}, changes {m['change_points'][:8]}")
        lines.append(f"  {e['key'].split('/', 2)[2]:<8} {len(e['params']['ms'])} M: {verdict}; picks: "
                     + ", ".join(f"M>={mm}: {d}" for mm, d in m["pick_changes"][:6])
                     + (" ..." if len(m["pick_changes"]) > 6 else ""))
        if m.get("pick_changes_keeping_bits"):
            lines.append(f"           the pick changed but row 0 kept its bits at M = {m['pick_changes_keeping_bits'][:10]}")
    return "\n".join(lines)


def plot(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [e for e in _exps(report, "speed/") if e["status"] == "ok"]
    if not rows:
        raise ValueError("no speed rows to plot")
    panels = [("triton_cold_ratio", "Triton, cold (L2 flushed)"), ("triton_graph_ratio", "Triton, CUDA graph"),
              ("cublaslt_nosplit_cold_ratio", "cuBLASLt no split-K, cold"),
              ("cublaslt_nosplit_graph_ratio", "cuBLASLt no split-K, CUDA graph")]
    panels = [p for p in panels if any(p[0] in e["metrics"] for e in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2), squeeze=False, sharey=True)
    shapes = sorted({e["key"].split("/")[2] for e in rows}, key=[e["key"].split("/")[2] for e in rows].index)
    for ax, (metric, title) in zip(axes[0], panels):
        for s in shapes:
            pts = sorted((e["inputs"]["M"], e["metrics"][metric]) for e in rows
                         if e["key"].split("/")[2] == s and metric in e["metrics"])
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, lw=1, label=s)
        ax.axhline(TARGET, ls="--", c="gray", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("M")
        ax.set_title(title, fontsize=9)
    axes[0][0].set_ylabel("cuBLAS time / time")
    axes[0][0].legend(fontsize=7)
    gpu = (report["fingerprint"].get("gpu") or {}).get("name") or report["fingerprint"].get("device")
    fig.suptitle(f"batch-invariant matmul vs cuBLAS (F.linear), {report['config'].get('dtype')}, {gpu}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(cli.guarded_main(main))
