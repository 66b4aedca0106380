"""Run the GEMM experiments (algos, sweep, bench, triton invariance) and build the report."""
from __future__ import annotations

import time

from probes import report as reports
from probes.progress import Progress

ALGO_DTYPES = ("bfloat16", "float16", "float32", "float32_tf32")
#: CPU shapes of the sweep (torch CPU BLAS) and the interpreter (Triton, small).
CPU_SHAPES = {"small": (256, 512), "k_v": (1024, 4096)}
INTERP_SHAPES = {"tiny": (48, 80)}

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


def split_dtype(spec):
    """'float32_tf32' -> ('float32', '32f_fast_tf32'); others -> (dtype, '32f')."""
    return ("float32", "32f_fast_tf32") if spec == "float32_tf32" else (spec, "32f")


def _inputs(seed, **shape):
    return {"generator": "torch.Generator(device).manual_seed(seed); torch.randn (W scaled by K**-0.5)",
            "seed": seed, **shape}


class GemmProbe:
    def __init__(self, *, device, seed, log=print):
        self.device = device
        self.seed = seed
        self.log = log

    # ---- cuBLASLt algorithms --------------------------------------------------------------------------
    def algos(self, report, plan, *, max_valid, max_checks, workspace_mb, runs, max_seconds=1.5):
        """plan: list of (shape name, N, K, M, dtype spec)."""
        from probes.gemm.cublaslt import run_algos

        with Progress(len(plan), "gemm algos") as progress:
            for shape, n, k, m, spec in plan:
                dtype, compute = split_dtype(spec)
                progress.update(note=f"{shape} {spec} M={m}")
                key = f"algos/{spec}/{shape}/M={m}"
                params = {"compute": compute, "max_valid": max_valid, "max_checks": max_checks, "max_seconds": max_seconds,
                          "workspace_mb": workspace_mb, "runs": runs}
                inputs = _inputs(self.seed, M=m, N=n, K=k, dtype=dtype)
                try:
                    r = run_algos(m, n, k, dtype, compute, device=self.device, seed=self.seed, max_valid=max_valid,
                                  max_checks=max_checks, workspace_mb=workspace_mb, runs=runs,
                                  max_seconds=max_seconds, log=self.log)
                except Exception as exc:
                    reports.add_experiment(report, key=key, inputs=inputs, params=params, status="error",
                                           message=f"{type(exc).__name__}: {exc}", compares=ALGOS_COMPARES)
                    self.log(f"error in {key}: {type(exc).__name__}: {exc}")
                    continue
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
                params["configs_run"] = r["rows"]
                params["failure_examples"] = r["failure_examples"]
                params["run_failure_rows"] = r["run_failures"]
                reports.add_experiment(report, key=key, inputs=inputs, params=params, metrics=metrics,
                                       compares=ALGOS_COMPARES)

    # ---- batch-invariance sweep -------------------------------------------------------------------------
    def sweep(self, report, cases):
        """cases: list of (key, fn factory, ms, params, inputs, rows)."""
        from probes.gemm.sweep import row0_sweep

        with Progress(len(cases), "gemm sweep") as progress:
            for key, factory, ms, params, inputs, rows in cases:
                progress.update(note=key)
                try:
                    fn = factory()
                    r = row0_sweep(fn, ms, rows=rows, log=self.log, label=key)
                except Exception as exc:
                    reports.add_experiment(report, key=key, inputs=inputs, params=params, status="error",
                                           message=f"{type(exc).__name__}: {exc}", compares=SWEEP_COMPARES)
                    self.log(f"error in {key}: {type(exc).__name__}: {exc}")
                    continue
                reports.add_experiment(report, key=key, inputs=inputs, compares=SWEEP_COMPARES,
                                       params=dict(params, ms=r["ms"], output="row 0 at the first M, first "
                                                   f"{len(r['output'])} values"),
                                       output=r["output"], metrics={k_: v for k_, v in r.items()
                                                                    if k_ not in ("ms", "output")})
                del fn
                if self.device != "cpu":
                    import torch
                    torch.cuda.empty_cache()

    def sweep_cases(self, shapes, ms, *, matmul_modes, others=True, small_ms=None):
        from probes.gemm import sweep as S

        dev, seed = self.device, self.seed
        max_m = max(ms)
        cases = []
        for mode, dtype in matmul_modes:
            for shape, (n, k) in shapes.items():
                spec = dtype + ("_tf32" if mode == "torch_tf32" else "")
                backend = "triton" if mode == "triton" else "torch"
                cases.append((f"sweep/linear/{backend}/{spec}/{shape}",
                              (lambda n=n, k=k, dtype=dtype, mode=mode: S.linear_case(n, k, dtype, mode, dev, seed, max_m)),
                              ms, {"op": "F.linear" if backend == "torch" else "batch_invariant_matmul",
                                   "mode": mode, "shape": shape}, _inputs(seed, N=n, K=k, max_M=max_m, dtype=dtype), 1))
        if not others:
            return cases
        d_model, vocab = (4096, 32000) if dev != "cpu" else (512, 4000)
        heads, seq, dim = (32, 512, 128) if dev != "cpu" else (4, 64, 64)
        for dtype in ("bfloat16", "float16", "float32"):
            cases.append((f"sweep/rms_norm/{dtype}/d={d_model}",
                          (lambda dtype=dtype: S.rms_norm_case(d_model, dtype, dev, seed, max_m)), ms,
                          {"op": "F.rms_norm", "eps": 1e-5}, _inputs(seed, D=d_model, max_M=max_m, dtype=dtype), 1))
            cases.append((f"sweep/softmax/{dtype}/d={vocab}",
                          (lambda dtype=dtype: S.softmax_case(vocab, dtype, dev, seed, max_m)), ms,
                          {"op": "torch.softmax(dim=-1)"}, _inputs(seed, D=vocab, max_M=max_m, dtype=dtype), 1))
        bs = small_ms or ms
        max_b = max(bs)
        seqs = ([32, 33, 48, 63, 64, 65, 100, 127, 128, 129, 256, 257, 512, 1000, 1024, 2048, 2049, 4096]
                if dev != "cpu" else [32, 33, 48, 64, 65, 100, 128, 129, 200])
        for dtype in ("bfloat16", "float16", "float32"):
            cases.append((f"sweep/sdpa_batch/{dtype}/h={heads},s={seq},d={dim}",
                          (lambda dtype=dtype: S.sdpa_batch_case(heads, seq, dim, dtype, dev, seed, max_b)), bs,
                          {"op": "F.scaled_dot_product_attention(is_causal=True)", "compared": "batch element 0"},
                          _inputs(seed, heads=heads, seq=seq, dim=dim, max_B=max_b, dtype=dtype), 1))
            cases.append((f"sweep/sdpa_seq/{dtype}/h={heads},d={dim}",
                          (lambda dtype=dtype: S.sdpa_seq_case(heads, max(seqs), dim, dtype, dev, seed)), seqs,
                          {"op": "F.scaled_dot_product_attention(is_causal=True)",
                           "compared": "query positions 0..31 (depend on keys 0..31 only)", "swept": "sequence length"},
                          _inputs(seed, heads=heads, max_S=max(seqs), dim=dim, dtype=dtype), 32))
        return cases

    # ---- Triton vs cuBLAS speed --------------------------------------------------------------------------
    def bench(self, report, shapes, ms, dtype, **bench_kw):
        """bench_kw: triton_bench.benchmark's splits, graph, graph_top, reps."""
        t0 = time.perf_counter()
        chosen = report["config"].setdefault("triton_choices", {}).setdefault(dtype, {})
        for shape, nk in shapes.items():  # shape by shape: a run cut short keeps the shapes it finished
            self._bench_shape(report, {shape: nk}, ms, dtype, chosen, **bench_kw)
        self.log(f"bench {dtype}: {time.perf_counter() - t0:.1f} s; chosen: "
                 + "; ".join(f"{s}: {[b['config'] for b in c['buckets']]} (score {c['score']:.2f})"
                             for s, c in chosen.items()))
        return chosen

    def _bench_shape(self, report, shapes, ms, dtype, chosen, **bench_kw):
        from probes.gemm import triton_bench as B

        rows = B.benchmark(shapes, ms, dtype, seed=self.seed, log=self.log, **bench_kw)
        for r in rows:
            key = f"bench/{dtype}/{r['shape']}/M={r['M']}/{r['config']}"
            params = {"config": r["config"], "timer": "probes.timing.cold_gpu_times: median GPU time, "
                      "alternating with the baseline call by call, L2 flushed, host launch path excluded",
                      "baseline": "F.linear (cuBLAS)",
                      "bit_reference": "the split class's anchor config's output rows [:M] "
                                       "(triton_configs.anchor_for(split_k); ANCHOR for one chain)"}
            if "graph_ratio" in r:
                params["graph_timer"] = GRAPH_TIMER
            inputs = _inputs(self.seed, M=r["M"], N=r["N"], K=r["K"], dtype=dtype)
            if "error" in r:
                reports.add_experiment(report, key=key, inputs=inputs, params=params, status="error",
                                       message=r["error"], compares=BENCH_COMPARES)
            else:
                reports.add_experiment(report, key=key, inputs=inputs, params=params, compares=BENCH_COMPARES,
                                       metrics={k_: v for k_, v in r.items() if k_ not in ("shape", "config")})
        chosen.update(B.choose(rows))


#: How graph ratios are timed (report params).
GRAPH_TIMER = ("probes.timing.graph_call_times: kernel time alone; the calls captured in one CUDA graph per "
               "side, each call with its own weight matrix from a pool of copies 4x the L2 (a model's layers), "
               "replays alternating cuBLAS / Triton, median of the replays / calls; host time NOT inside (the "
               "GPU sleeps before the start event while the host launches the replay)")


def build_report(device, seed, command, config, probe="gemm"):
    """A report with the device fingerprint, the seed and which Triton tables serve this device
    (config.triton_table: shipped for this GPU, the compute capability's default, none, or GEMM_TRITON_CHOICES)."""
    from probes.device import fingerprint
    from probes import ext
    from probes.gemm.triton_configs import table_status

    fp = fingerprint(device)
    cfg = dict(config, device=device, seed=seed)
    try:
        cfg["triton_table"] = table_status(fp.get("gpu"), device)
    except Exception as exc:  # a broken shipped file is reported, not fatal to the other parts
        cfg["triton_table"] = {"source": "error", "reason": f"{type(exc).__name__}: {exc}"}
    try:
        cfg["gemm_build"] = ext.load().gemm_build_info()
    except Exception as exc:
        cfg["gemm_build"] = {"available": False, "reason": f"{type(exc).__name__}: {exc}"}
    return reports.new_report(probe, command=command, fingerprint=fp, config=cfg)
