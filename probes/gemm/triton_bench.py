"""The batch-invariant Triton matmul against cuBLAS (torch F.linear), side by side in one run, and the choice
of one config per (shape class, M bucket) from those measurements.

For each shape, W and X[:max M] are drawn once; the anchor config's output on all of X is the bit reference.
At each bench M (one per bucket) every candidate of the bucket is timed side by side with cuBLAS:
`probes.timing.cold_gpu_times` alternates the two call by call (`reps` each; L2 flushed before each call;
CUDA events around the call alone, the host's launch path kept out by a GPU sleep before the start event),
and the ratio is median(cuBLAS) / median(candidate) of that pair. The host's own cost per call (the
Python launch path) is recorded beside it. Each candidate's output bits are compared with the anchor's
rows [:M]. `choose` keeps, per bucket, the fastest candidate whose bits equal the anchor's: so the chosen
configs of all buckets give the same bits on these inputs (the GPU tests check every M).
"""
from __future__ import annotations

from probes.gemm import triton_configs as C


def target_ratio(m):
    """Speed targets vs cuBLAS (torch F.linear) from the task: >= 0.9x for M >= 256, >= 0.8x below."""
    return 0.9 if m >= 256 else 0.8


def benchmark(shapes=None, ms=None, dtype="bfloat16", *, seed=0, reps=25, log=None):
    """Rows {shape, N, K, M, bucket, config, triton_ms, cublas_ms, tflops, cublas_tflops, ratio, target,
    bit_identical_to_anchor, max_abs_diff_vs_cublas, triton_host_us, cublas_host_us | error}."""
    import torch
    import torch.nn.functional as F

    from probes.gemm.triton_matmul import batch_invariant_matmul
    from probes.timing import cold_gpu_times, host_launch_us, median

    shapes = shapes or C.MISTRAL_SHAPES
    ms = list(ms or [b for _, b in C.BUCKETS])
    tdt = getattr(torch, dtype)
    gen = torch.Generator(device="cuda").manual_seed(seed)
    rows = []
    for name, (n, k) in shapes.items():
        w = (torch.randn((n, k), device="cuda", generator=gen) * k ** -0.5).to(tdt)
        xs = torch.randn((max(ms), k), device="cuda", generator=gen).to(tdt)
        anchor = batch_invariant_matmul(xs, w, config=C.ANCHOR).view(torch.int16)
        for m in ms:
            x = xs[:m]
            ref = F.linear(x, w)
            cublas = lambda: F.linear(x, w)  # noqa: E731
            cublas_host_us = host_launch_us(cublas)
            flop = 2.0 * m * n * k
            for c in C.candidates(n, k, m):
                row = {"shape": name, "N": n, "K": k, "M": m, "dtype": dtype, "bucket": C.bucket_of(m),
                       "config": C.config_name(c), "target": target_ratio(m), "reps": reps,
                       "cublas_host_us": cublas_host_us}
                try:
                    out = torch.empty((m, n), dtype=tdt, device="cuda")
                    batch_invariant_matmul(x, w, config=c, out=out)
                    torch.cuda.synchronize()
                    row["bit_identical_to_anchor"] = bool(torch.equal(out.view(torch.int16), anchor[:m]))
                    row["max_abs_diff_vs_cublas"] = float((out.float() - ref.float()).abs().max())
                    triton_fn = lambda: batch_invariant_matmul(x, w, config=c, out=out)  # noqa: E731
                    cub_times, tri_times = cold_gpu_times([cublas, triton_fn], reps)
                    cublas_ms, t = median(cub_times), median(tri_times)
                    row.update(triton_ms=t, tflops=flop / t * 1e-9, ratio=cublas_ms / t, cublas_ms=cublas_ms,
                               cublas_tflops=flop / cublas_ms * 1e-9, triton_host_us=host_launch_us(triton_fn))
                except Exception as exc:  # a config that does not compile or run is a row, not the end
                    text = str(exc).splitlines()[0][:200] if str(exc) else ""
                    row["error"] = f"{type(exc).__name__}: {text}"
                rows.append(row)
                if log:
                    log(row_text(row))
        del w, xs, anchor
        torch.cuda.empty_cache()
    return rows


def row_text(r):
    if "error" in r:
        return f"{r['shape']:8s} M={r['M']:5d} {r['config']:40s} ERROR {r['error']}"
    return (f"{r['shape']:8s} M={r['M']:5d} {r['config']:40s} triton {r['tflops']:6.1f} TFLOP/s  cublas "
            f"{r['cublas_tflops']:6.1f}  ratio {r['ratio']:.3f} (target {r['target']})  host us/call "
            f"{r['triton_host_us']:.0f} vs {r['cublas_host_us']:.0f}"
            f"{'' if r['bit_identical_to_anchor'] else '  BITS DIFFER FROM ANCHOR'}")


def choose(rows):
    """Per (shape class, dtype) and bucket, the fastest candidate whose bits equal the anchor's (errors and
    differing bits are never chosen). A bucket without a measured row takes the nearest measured bucket's
    choice (a config of the same bit class). Stores the table in C.CHOICES; returns
    {shape: {buckets: [...], by_m: {M: config}, score, meets_targets, not_identical}}."""
    by = {}
    for r in rows:
        by.setdefault((r["N"], r["K"], r["dtype"], r["shape"]), []).append(r)
    picked = {}
    for (n, k, dtype, shape), rs in by.items():
        best = {}
        for r in rs:
            if "error" in r or not r.get("bit_identical_to_anchor"):
                continue
            b = C.bucket_of(r["M"])
            if b not in best or r["ratio"] > best[b]["ratio"]:
                best[b] = r
        if not best:
            continue
        table, buckets = [], []
        for i in range(len(C.BUCKETS)):
            src = best.get(i) or best[min(best, key=lambda j: (abs(j - i), j))]
            table.append(C.config_by_name(src["config"]))
            buckets.append({"bucket": C.bucket_range(i), "config": src["config"], "measured_at_m": src["M"],
                            "ratio": round(src["ratio"], 3), "target": src["target"],
                            "meets": src["ratio"] >= src["target"]})
        C.CHOICES[(n, k, dtype)] = table
        score = min(r["ratio"] / r["target"] for r in best.values())
        picked[shape] = {"buckets": buckets, "by_m": {r["M"]: r["config"] for r in best.values()},
                         "score": score, "meets_targets": score >= 1.0,
                         "not_identical": sorted({r["config"] for r in rs if r.get("bit_identical_to_anchor") is False})}
    return picked
