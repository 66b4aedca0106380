"""The GEMM probe's parts (bench, sweep, algos) as cases, and the report.

- bench: per dtype and shape, the batch-invariant Triton matmul's candidate configs timed against cuBLAS
  (F.linear) at each M bucket, their bits against the split class's anchor, and the table chosen (GPU only);
- sweep: per op, dtype and shape, does row 0 of f(X[:M]) keep its bits as M grows? (sweep.py);
- algos: per dtype, shape and M, every cuBLASLt algorithm run on the same inputs, clustered into bit-identical
  groups (cublaslt.py; GPU only).
"""
from __future__ import annotations

import os
import time

from probes import report as reports
from probes.errors import UsageError
from probes.gemm import sweep as S
from probes.gemm import table
from probes.gemm import triton_configs as C
from probes.probe import NOT_RUN, Axis, Probe

ALGO_DTYPES = ("bfloat16", "float16", "float32", "float32_tf32")
PARTS = ("algos", "bench", "sweep")
#: The order the parts run in: the bench chooses the Triton tables that the sweep then runs.
RUN_ORDER = ("bench", "sweep", "algos")
SWEEP_MODES = ("torch:bfloat16", "torch:float16", "torch:float32", "torch_tf32:float32", "triton:bfloat16",
               "triton:float16")
#: CPU shapes of the sweep (torch CPU BLAS) and the interpreter (Triton, small).
CPU_SHAPES = {"small": (256, 512), "k_v": (1024, 4096)}
INTERP_SHAPES = {"tiny": (48, 80)}
INTERP_MS = [1, 2, 3, 5, 8, 15, 16, 17, 31, 32, 33]

#: What probes.compare compares between two GPUs' reports (probes.report.add_experiment's `compares`).
#: algos: the heuristic default's algorithm (tile, stages, split-K, swizzle: its desc), the number of
#: bit-distinct groups, and whether torch gives the default's bits; not the times nor the group sizes (the
#: configurations enumerated differ between GPUs).
ALGOS_COMPARES = {"metrics": ["default.desc", "distinct", "torch_matches_default"]}
#: sweep: row 0 at the first M, bit for bit, and the M at which it changes (change_points).
SWEEP_COMPARES = {"output": True, "metrics": ["change_points"]}
#: bench: whether the candidate's bits equal the anchor config's; its times and speed ratios are measurements.
BENCH_COMPARES = {"metrics": ["bit_identical_to_anchor"],
                  "reason": "times and speed ratios are measurements, not compared"}

#: How graph ratios are timed (report params).
GRAPH_TIMER = ("probes.timing.graph_call_times: kernel time alone; the calls captured in one CUDA graph per "
               "side, each call with its own weight matrix from a pool of copies 4x the L2 (a model's layers), "
               "replays alternating cuBLAS / Triton, median of the replays / calls; host time NOT inside (the "
               "GPU sleeps before the start event while the host launches the replay)")

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


def split_dtype(spec):
    """'float32_tf32' -> ('float32', '32f_fast_tf32'); others -> (dtype, '32f')."""
    return ("float32", "32f_fast_tf32") if spec == "float32_tf32" else (spec, "32f")


def inputs_of(seed, **shape):
    return {"generator": "torch.Generator(device).manual_seed(seed); torch.randn (W scaled by K**-0.5)",
            "seed": seed, **shape}


class GemmProbe(Probe):
    name = "gemm"
    description = DESCRIPTION
    output_options = Probe.output_options + ("choices_out",)
    axes = (
        Axis("part", PARTS, flag="--parts", help="comma-separated: algos,bench,sweep (default: all)"),
        Axis("shape", tuple(C.MISTRAL_SHAPES), flag="--shapes",
             help="Mistral shapes: q_o,k_v,gate_up,down,lm_head (default all)"),
        Axis("algo_m", (1, 64, 1400), flag="--algo-ms", parse="sizes",
             help="M values of the algos part (default 1,64,1400)"),
        Axis("algo_dtype", ("bfloat16",), flag="--algo-dtypes", choices=ALGO_DTYPES, what="algo dtype",
             help="dtypes of algos for every shape (bfloat16,float16,float32,float32_tf32; default bfloat16)"),
        Axis("sweep_mode", SWEEP_MODES, flag="--sweep-modes", what="sweep mode",
             help=f"F.linear sweeps: {','.join(SWEEP_MODES)} (default all)"),
        Axis("bench_m", (1, 16, 32, 64, 128, 256, 512, 1024, 1400, 2048, 4096), flag="--bench-ms", parse="sizes",
             help="M values of the speed table (default: each M bucket's)"),
        Axis("bench_dtype", ("bfloat16",), flag="--bench-dtypes", choices=("bfloat16", "float16"),
             what="bench dtype", help="dtypes of the speed table (bfloat16,float16)"),
    )

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--algo-extra", default="q_o:256:float16,q_o:256:float32,q_o:256:float32_tf32",
                            help="extra shape:M:dtype algos runs ('' for none)")
        parser.add_argument("--max-configs", type=int, default=128, help="valid configurations run per product (cap)")
        parser.add_argument("--max-checks", type=int, default=20000,
                            help="cublasLtMatmulAlgoCheck calls per product (cap)")
        parser.add_argument("--enum-seconds", type=float, default=1.5,
                            help="time cap of one product's configuration enumeration (s, default 1.5)")
        parser.add_argument("--workspace-mb", type=int, default=32, help="cuBLASLt workspace (MiB, default 32)")
        parser.add_argument("--runs", type=int, default=10, help="timed runs per algorithm (median)")
        parser.add_argument("--sweep-max-m", type=int, default=None,
                            help="largest M of the sweep (GPU 4096, CPU 130)")
        parser.add_argument("--no-others", action="store_true",
                            help="sweep F.linear only (no rms_norm/softmax/SDPA)")
        parser.add_argument("--choices-out", default=None,
                            help="write the chosen Triton config per shape class here (default: next to the JSON)")

    def configure(self, args):
        if args.runs < 1 or args.max_configs < 1 or args.max_checks < 1 or args.workspace_mb < 0:
            raise UsageError("--runs, --max-configs, --max-checks must be >= 1 and --workspace-mb >= 0")
        self.extras = [self.algo_extra(e.strip()) for e in args.algo_extra.split(",") if e.strip()]
        cpu = self.device == "cpu"
        self.sweep_ms = S.cpu_ms(args.sweep_max_m or 130) if cpu else S.gpu_ms(args.sweep_max_m or S.GPU_MAX_M)

    @staticmethod
    def algo_extra(entry):
        """'q_o:256:float16' -> (shape, M, dtype spec)."""
        try:
            shape, m, spec = entry.split(":")
            C.MISTRAL_SHAPES[shape]
            if spec not in ALGO_DTYPES:
                raise KeyError(spec)
            return shape, int(m), spec
        except (ValueError, KeyError):
            raise UsageError(f"--algo-extra: bad entry {entry!r}; use shape:M:dtype, e.g. q_o:256:float16") from None

    def config(self, fingerprint):
        config = machine_config(fingerprint, self.device)
        if "sweep" in self.values("part"):
            config["sweep_ms"] = self.sweep_ms
            config["sweep_ms_rule"] = ("GPU: every M in 1..64, every 256, powers of two >= 64 with neighbours, "
                                       "and 100,127,129,200,300,1000,1400,2000,3000" if self.device != "cpu" else
                                       "CPU: 1..16 and 31-33, 63-65, 96, 127-130; interpreter: small list")
            config["triton_choices_file"] = os.environ.get("GEMM_TRITON_CHOICES")
        return config

    # ---- the plan: bench, sweep, algos; a GPU-only part on a CPU is one skipped record ------------------------

    def plan(self):
        parts = self.values("part")
        for part in (p for p in RUN_ORDER if p in parts):
            if part != "sweep" and self.device == "cpu":
                yield self.case(part=part)
            elif part == "bench":
                yield from self.grid("bench_dtype", "shape", part="bench")
            elif part == "sweep":
                yield from self.sweep_cases()
            else:
                yield from self.grid("algo_dtype", "shape", "algo_m", part="algos")
                for shape, m, spec in self.extras:
                    yield self.case(part="algos", algo_dtype=spec, shape=shape, algo_m=m)

    def unavailable(self, case):
        if case.part == "bench" and "shape" not in case:
            return "the speed table needs a GPU (the interpreter's time means nothing)"
        if case.part == "algos" and "shape" not in case:
            return "cuBLASLt algorithm enumeration needs a CUDA GPU"
        return None

    def record(self, case):
        if "shape" not in case and case.part != "sweep":
            return dict(key=f"{case.part}/skipped", inputs={"seed": self.seed}, params={}, compares=NOT_RUN)
        return getattr(self, f"record_{case.part}")(case)

    def run_case(self, case, report):
        started = time.perf_counter()
        try:
            getattr(self, f"run_{case.part}")(case, report)
        finally:
            stages = report["config"].setdefault("stage_seconds", {})
            stages[case.part] = stages.get(case.part, 0.0) + time.perf_counter() - started

    # ---- bench: the Triton matmul against cuBLAS -------------------------------------------------------------

    def record_bench(self, case):
        n, k = C.MISTRAL_SHAPES[case.shape]
        return dict(key=f"bench/{case.bench_dtype}/{case.shape}",
                    inputs=inputs_of(self.seed, N=n, K=k, dtype=case.bench_dtype),
                    params={"baseline": "F.linear (cuBLAS)", "ms": self.values("bench_m")}, compares=BENCH_COMPARES)

    def run_bench(self, case, report):
        chosen = report["config"].setdefault("triton_choices", {}).setdefault(case.bench_dtype, {})
        bench_shape(report, {case.shape: C.MISTRAL_SHAPES[case.shape]}, self.values("bench_m"), case.bench_dtype,
                    chosen, seed=self.seed, log=self.log)
        c = chosen.get(case.shape)
        if c:
            self.log(f"bench {case.bench_dtype} {case.shape}: {[b['config'] for b in c['buckets']]} "
                     f"(score {c['score']:.2f})")

    def restore(self, report):
        """The tables that the bench chose before (config.triton_choices) serve this run's sweep again."""
        for dtype, per in report["config"].get("triton_choices", {}).items():
            for shape, c in per.items():
                n, k = C.MISTRAL_SHAPES[shape]
                C.CHOICES[(n, k, dtype)] = C.check_table([C.config_by_name(b["config"]) for b in c["buckets"]])

    # ---- sweep: row 0 over M ---------------------------------------------------------------------------------

    def sweep_cases(self):
        ms = self.sweep_ms
        modes = [tuple(m.split(":")) for m in self.values("sweep_mode")]
        others = not self.args.no_others
        if self.device != "cpu":
            shapes = {s: C.MISTRAL_SHAPES[s] for s in self.values("shape")}
            return sweep_cases(self.device, self.seed, shapes, ms, matmul_modes=modes, others=others,
                               small_ms=[m for m in ms if m <= 64])
        cpu_modes = [m for m in modes if m[0] == "torch" and m[1] in ("float32", "bfloat16")]
        return (sweep_cases("cpu", self.seed, CPU_SHAPES, ms, matmul_modes=cpu_modes, others=others,
                            small_ms=[m for m in ms if m <= 16])
                + sweep_cases("cpu", self.seed, INTERP_SHAPES, INTERP_MS, matmul_modes=[("triton", "float16")],
                              others=False))

    def record_sweep(self, case):
        return dict(key=case.key, inputs=case.inputs, params=case.params, compares=SWEEP_COMPARES)

    def run_sweep(self, case, report):
        make, kwargs = case.make
        fn = getattr(S, make)(**kwargs)
        r = S.row0_sweep(fn, case.ms, rows=case.rows, log=self.log, label=case.key)
        self.add(report, case, output=r["output"],
                 params=dict(case.params, ms=r["ms"], output=f"row 0 at the first M, first {len(r['output'])} values"),
                 metrics={k: v for k, v in r.items() if k not in ("ms", "output")})
        del fn
        if self.device != "cpu":
            import torch
            torch.cuda.empty_cache()

    # ---- algos: every cuBLASLt algorithm of one product ------------------------------------------------------

    def record_algos(self, case):
        n, k = C.MISTRAL_SHAPES[case.shape]
        dtype, compute = split_dtype(case.algo_dtype)
        a = self.args
        return dict(key=f"algos/{case.algo_dtype}/{case.shape}/M={case.algo_m}",
                    inputs=inputs_of(self.seed, M=case.algo_m, N=n, K=k, dtype=dtype),
                    params={"compute": compute, "max_valid": a.max_configs, "max_checks": a.max_checks,
                            "max_seconds": a.enum_seconds, "workspace_mb": a.workspace_mb, "runs": a.runs},
                    compares=ALGOS_COMPARES)

    def run_algos(self, case, report):
        from probes.gemm.cublaslt import run_algos

        n, k = C.MISTRAL_SHAPES[case.shape]
        dtype, compute = split_dtype(case.algo_dtype)
        a = self.args
        r = run_algos(case.algo_m, n, k, dtype, compute, device=self.device, seed=self.seed,
                      max_valid=a.max_configs, max_checks=a.max_checks, workspace_mb=a.workspace_mb, runs=a.runs,
                      max_seconds=a.enum_seconds, log=self.log)
        d = r["default"]
        fastest = min(r["rows"], key=lambda x: x["median_ms"]) if r["rows"] else None
        metrics = {
            "configs": r["configs"], "ran": r["ran"], "run_failures": len(r["run_failures"]),
            "distinct": r["distinct"], "groups": r["groups"], "torch_group": r["torch_group"],
            "default_group": r["default_group"], "torch_matches_default": r["torch_matches_default"],
            "default": d and {k_: d[k_] for k_ in ("desc", "median_ms", "tflops", "group", "workspace")},
            "fastest": fastest and {k_: fastest[k_] for k_ in ("desc", "median_ms", "tflops", "group",
                                                               "heuristic_rank")},
            "enumeration": r["enumeration"], "heuristic_status": r["heuristic_status"],
            "heuristic_returned": r["heuristic_returned"], "library": r["library"],
            "wall_seconds": r["wall_seconds"],
        }
        params = dict(self.record(case)["params"], configs_run=r["rows"], failure_examples=r["failure_examples"],
                      run_failure_rows=r["run_failures"])
        self.add(report, case, params=params, metrics=metrics)

    # ---- the whole run ---------------------------------------------------------------------------------------

    def finish(self, report):
        from probes.gemm.triton_matmul import FALLBACKS

        if "sweep" in self.values("part"):
            report["config"]["triton_choices_used"] = {f"N={n},K={k},{d}": [C.config_name(c) for c in cs]
                                                       for (n, k, d), cs in {**C.SHIPPED, **C.CHOICES}.items()}
        report["config"]["triton_fallbacks"] = FALLBACKS
        for f in FALLBACKS:
            self.log(f"triton fallback: {f}")

    def table(self, report):
        stages = report["config"].get("stage_seconds", {})
        return (table.format_tables(report) + "\n\nstages: "
                + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items()))

    def plot(self, report, path):
        return table.plot(report, path)

    def write_extras(self, report, json_path):
        """The Triton tables the bench chose, as a choices file (use with GEMM_TRITON_CHOICES=...)."""
        if not report["config"].get("triton_choices"):
            return
        path = self.args.choices_out or os.path.splitext(json_path)[0] + "-triton-choices.json"
        gpu = report["fingerprint"].get("gpu") or {}
        C.save_choices(path, gpu={k: gpu.get(k) for k in ("name", "compute_capability", "sm_count")},
                       note=f"python -m probes.gemm --parts bench ({report['created_utc']})")
        print(f"triton choices: {path} (use with GEMM_TRITON_CHOICES=...)")


# ---- the parts' measurements (also run by probes.gemm.bimatmul) ------------------------------------------------


def sweep_cases(device, seed, shapes, ms, *, matmul_modes, others=True, small_ms=None):
    """The sweep's cases: F.linear or the Triton matmul per mode and shape; then (others) rms_norm, softmax and
    SDPA over the batch and over the sequence length. Each says how to make its fn(M) (`make`: a sweep.py
    function and its arguments), its Ms, key, params, inputs and rows compared."""
    def case(key, make, kwargs, ms_, params, inputs, rows=1):
        from probes.probe import Case

        return Case(device, part="sweep", key=key, make=(make, dict(kwargs, device=device, seed=seed)), ms=ms_,
                    params=params, inputs=inputs, rows=rows)

    max_m = max(ms)
    cases = []
    for mode, dtype in matmul_modes:
        for shape, (n, k) in shapes.items():
            spec = dtype + ("_tf32" if mode == "torch_tf32" else "")
            backend = "triton" if mode == "triton" else "torch"
            cases.append(case(f"sweep/linear/{backend}/{spec}/{shape}", "linear_case",
                              dict(n=n, k=k, dtype=dtype, mode=mode, max_m=max_m), ms,
                              {"op": "F.linear" if backend == "torch" else "batch_invariant_matmul", "mode": mode,
                               "shape": shape}, inputs_of(seed, N=n, K=k, max_M=max_m, dtype=dtype)))
    if not others:
        return cases
    d_model, vocab = (4096, 32000) if device != "cpu" else (512, 4000)
    heads, seq, dim = (32, 512, 128) if device != "cpu" else (4, 64, 64)
    for dtype in ("bfloat16", "float16", "float32"):
        cases.append(case(f"sweep/rms_norm/{dtype}/d={d_model}", "rms_norm_case",
                          dict(d=d_model, dtype=dtype, max_m=max_m), ms, {"op": "F.rms_norm", "eps": 1e-5},
                          inputs_of(seed, D=d_model, max_M=max_m, dtype=dtype)))
        cases.append(case(f"sweep/softmax/{dtype}/d={vocab}", "softmax_case", dict(d=vocab, dtype=dtype, max_m=max_m),
                          ms, {"op": "torch.softmax(dim=-1)"}, inputs_of(seed, D=vocab, max_M=max_m, dtype=dtype)))
    bs = small_ms or ms
    max_b = max(bs)
    seqs = ([32, 33, 48, 63, 64, 65, 100, 127, 128, 129, 256, 257, 512, 1000, 1024, 2048, 2049, 4096]
            if device != "cpu" else [32, 33, 48, 64, 65, 100, 128, 129, 200])
    for dtype in ("bfloat16", "float16", "float32"):
        cases.append(case(f"sweep/sdpa_batch/{dtype}/h={heads},s={seq},d={dim}", "sdpa_batch_case",
                          dict(heads=heads, seq=seq, dim=dim, dtype=dtype, max_b=max_b), bs,
                          {"op": "F.scaled_dot_product_attention(is_causal=True)", "compared": "batch element 0"},
                          inputs_of(seed, heads=heads, seq=seq, dim=dim, max_B=max_b, dtype=dtype)))
        cases.append(case(f"sweep/sdpa_seq/{dtype}/h={heads},d={dim}", "sdpa_seq_case",
                          dict(heads=heads, max_seq=max(seqs), dim=dim, dtype=dtype), seqs,
                          {"op": "F.scaled_dot_product_attention(is_causal=True)",
                           "compared": "query positions 0..31 (depend on keys 0..31 only)", "swept": "sequence length"},
                          inputs_of(seed, heads=heads, max_S=max(seqs), dim=dim, dtype=dtype), rows=32))
    return cases


def bench(report, shapes, ms, dtype, *, seed, log, **bench_kw):
    """The bench of `shapes` at `ms` into the report, shape by shape (a run cut short keeps the shapes it
    finished), and the tables chosen (also in config.triton_choices). bench_kw: triton_bench.benchmark's
    splits, graph, graph_top, reps."""
    t0 = time.perf_counter()
    chosen = report["config"].setdefault("triton_choices", {}).setdefault(dtype, {})
    for shape, nk in shapes.items():
        bench_shape(report, {shape: nk}, ms, dtype, chosen, seed=seed, log=log, **bench_kw)
    log(f"bench {dtype}: {time.perf_counter() - t0:.1f} s; chosen: "
        + "; ".join(f"{s}: {[b['config'] for b in c['buckets']]} (score {c['score']:.2f})" for s, c in chosen.items()))
    return chosen


def bench_shape(report, shapes, ms, dtype, chosen, *, seed, log, **bench_kw):
    """One experiment per candidate config and M (its times against cuBLAS, its bits against the anchor's);
    the table chosen from them goes into `chosen` (and triton_configs.CHOICES)."""
    from probes.gemm import triton_bench as B

    rows = B.benchmark(shapes, ms, dtype, seed=seed, log=log, **bench_kw)
    for r in rows:
        key = f"bench/{dtype}/{r['shape']}/M={r['M']}/{r['config']}"
        params = {"config": r["config"], "timer": "probes.timing.cold_gpu_times: median GPU time, "
                  "alternating with the baseline call by call, L2 flushed, host launch path excluded",
                  "baseline": "F.linear (cuBLAS)",
                  "bit_reference": "the split class's anchor config's output rows [:M] "
                                   "(triton_configs.anchor_for(split_k); ANCHOR for one chain)"}
        if "graph_ratio" in r:
            params["graph_timer"] = GRAPH_TIMER
        inputs = inputs_of(seed, M=r["M"], N=r["N"], K=r["K"], dtype=dtype)
        if "error" in r:
            reports.add_experiment(report, key=key, inputs=inputs, params=params, status="error",
                                   message=r["error"], compares=BENCH_COMPARES)
        else:
            reports.add_experiment(report, key=key, inputs=inputs, params=params, compares=BENCH_COMPARES,
                                   metrics={k_: v for k_, v in r.items() if k_ not in ("shape", "config")})
    chosen.update(B.choose(rows))


def machine_config(fingerprint, device):
    """Which Triton tables serve this device (triton_table: shipped for this GPU, the compute capability's
    default, none, or GEMM_TRITON_CHOICES) and how the cuBLASLt part of probes._C was built (gemm_build)."""
    from probes import ext

    config = {}
    try:
        config["triton_table"] = C.table_status(fingerprint.get("gpu"), device)
    except Exception as exc:  # a broken shipped file is reported, not fatal to the other parts
        config["triton_table"] = {"source": "error", "reason": f"{type(exc).__name__}: {exc}"}
    try:
        config["gemm_build"] = ext.gemm_build_info()
    except Exception as exc:
        config["gemm_build"] = {"available": False, "reason": f"{type(exc).__name__}: {exc}"}
    return config


def build_report(device, seed, command, config, probe="gemm"):
    """A report with the device fingerprint, the seed and machine_config: for tools beside the probe
    (probes.gemm.bimatmul)."""
    from probes.device import fingerprint

    fp = fingerprint(device)
    cfg = dict(config, device=device, seed=seed, **machine_config(fp, device))
    return reports.new_report(probe, command=command, fingerprint=fp, config=cfg)
