"""The batch-invariant Triton matmul against cuBLAS (torch F.linear), side by side in one run, and the choice
of one config per (shape class, M bucket) from those measurements.

For each shape, W and X[:max M] are drawn once; the anchor config's output on all of X is the bit reference.
At each bench M (one per bucket) cuBLAS and every candidate of the bucket are timed with
triton.testing.do_bench (median, L2 flushed between runs); each candidate's output bits are compared with
the anchor's rows [:M]. `choose` keeps, per bucket, the fastest candidate whose bits equal the anchor's: so
the chosen configs of all buckets give the same bits on these inputs (the GPU tests check every M).
"""
from __future__ import annotations

from probes.gemm import triton_configs as C


def target_ratio(m):
    """Speed targets vs cuBLAS (torch F.linear) from the task: >= 0.9x for M >= 256, >= 0.8x below."""
    return 0.9 if m >= 256 else 0.8


def benchmark(shapes=None, ms=None, dtype="bfloat16", *, seed=0, warmup=5, rep=40, log=None):
    """Rows {shape, N, K, M, bucket, config, triton_ms, cublas_ms, tflops, cublas_tflops, ratio, target,
    bit_identical_to_anchor, max_abs_diff_vs_cublas | error}."""
    import torch
    import torch.nn.functional as F
    import triton

    from probes.gemm.triton_matmul import batch_invariant_matmul

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
            cublas_ms = triton.testing.do_bench(lambda: F.linear(x, w), warmup=warmup, rep=rep, return_mode="median")
            flop = 2.0 * m * n * k
            for c in C.candidates(n, k, m):
                row = {"shape": name, "N": n, "K": k, "M": m, "dtype": dtype, "bucket": C.bucket_of(m),
                       "config": C.config_name(c), "cublas_ms": cublas_ms, "cublas_tflops": flop / cublas_ms * 1e-9,
                       "target": target_ratio(m)}
                try:
                    out = torch.empty((m, n), dtype=tdt, device="cuda")
                    batch_invariant_matmul(x, w, config=c, out=out)
                    torch.cuda.synchronize()
                    row["bit_identical_to_anchor"] = bool(torch.equal(out.view(torch.int16), anchor[:m]))
                    row["max_abs_diff_vs_cublas"] = float((out.float() - ref.float()).abs().max())
                    t = triton.testing.do_bench(lambda: batch_invariant_matmul(x, w, config=c, out=out),
                                                warmup=warmup, rep=rep, return_mode="median")
                    row.update(triton_ms=t, tflops=flop / t * 1e-9, ratio=cublas_ms / t)
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
            f"{r['cublas_tflops']:6.1f}  ratio {r['ratio']:.3f} (target {r['target']})"
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
