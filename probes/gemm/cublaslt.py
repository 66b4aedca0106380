"""Every cuBLASLt algorithm for one product, run on the same inputs (the wrapper of csrc/gemm's GemmPlan).

For Y = F.linear(X, W) (X [M, K], W [N, K]) in one dtype / compute type: the heuristic's ranked picks
(rank 0 = its default choice) and every algorithm configuration the library accepts (capped; the cap is
reported), each run once for its output and timed with CUDA events (median of `runs`), then clustered into
bitwise-identical groups with their errors against a float64 reference. torch's own F.linear output is
clustered too, so the report says which configurations give torch's bits.
"""
from __future__ import annotations

import time

from probes import ext
from probes.errors import NoGPUError
from probes.gemm.cluster import Clusterer, errors
from probes.gemm.cublaslt_enums import REDUCTION_SCHEMES, STAGES, TILES, name
from probes.timing import median

#: dtype -> compute types the probe runs ("32f_fast_tf32" is fp32 with TF32 tensor cores).
COMPUTES = {"bfloat16": ["32f"], "float16": ["32f"], "float32": ["32f", "32f_fast_tf32"]}


def plan_for(m, n, k, dtype, compute, device_index):
    """probes._C.GemmPlan of Y = F.linear(X, W) on one GPU (layout "tn"), or a clear error when the build
    or the machine cannot make one."""
    info = ext.gemm_build_info()
    if not info["available"]:
        if not ext.built_with_cuda():
            raise NoGPUError(f"cuBLASLt enumeration needs a CUDA build of probes._C: {info['reason']}")
        raise ext.ExtensionUnavailable(f"probes._C was built without the GEMM module: {info['reason']}")
    return ext.call("GemmPlan", m, n, k, dtype, compute, "tn", device_index,
                    ext.library_candidates("libcublasLt.so*"))


def describe(cfg):
    """A short text of one configuration: a<id> tile stages split-K/reduction swizzle custom."""
    red = f"/{name(REDUCTION_SCHEMES, cfg['reduction'])}" if cfg["splitk"] > 1 else ""
    return (f"a{cfg['algo_id']} t{name(TILES, cfg['tile'])} s{name(STAGES, cfg['stages'])} "
            f"k{cfg['splitk']}{red} sw{cfg['swizzle']} c{cfg['custom']}")


def make_inputs(m, n, k, dtype, device, seed):
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn((m, k), device=device, generator=gen).to(getattr(torch, dtype))
    w = (torch.randn((n, k), device=device, generator=gen) * k ** -0.5).to(getattr(torch, dtype))
    return x, w


def torch_linear(x, w, compute):
    import torch
    import torch.nn.functional as F

    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = compute == "32f_fast_tf32"
    try:
        return F.linear(x, w)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def run_algos(m, n, k, dtype, compute="32f", *, device="cuda:0", seed=0, max_valid=192, max_checks=20000,
              workspace_mb=32, heuristic_count=16, runs=10, warmup=2, max_seconds=4.0, log=None):
    """Enumerate, run, time and cluster every algorithm of one product. Returns a dict (see the keys)."""
    import torch

    started = time.perf_counter()
    dev = torch.device(device)
    x, w = make_inputs(m, n, k, dtype, dev, seed)
    y_torch = torch_linear(x, w, compute)  # also makes torch load its libcublasLt before the plan dlopens it
    plan = plan_for(m, n, k, dtype, compute, dev.index or 0)
    ws_bytes = int(workspace_mb) << 20
    workspace = torch.empty(max(ws_bytes, 1), dtype=torch.uint8, device=dev)
    heur = plan.heuristic(heuristic_count, ws_bytes)
    enum = plan.enumerate(max_valid, max_checks, ws_bytes, 3, max_seconds)
    configs, seen = [], {}
    for p in heur["picks"]:
        c = dict(p, source="heuristic", heuristic_rank=p["rank"])
        seen[bytes(c["algo"])] = len(configs)
        configs.append(c)
    for v in enum["valid"]:
        key = bytes(v["algo"])
        if key in seen:
            configs[seen[key]]["also_enumerated"] = True
            continue
        seen[key] = len(configs)
        configs.append(dict(v, source="enumerated", heuristic_rank=None))
    stream = ext.stream_of(x)
    clusters = Clusterer()
    torch_group = clusters.add(y_torch, index="torch")
    y = torch.empty((m, n), dtype=x.dtype, device=dev)
    rows, failed = [], []
    for i, c in enumerate(configs):
        row = {k_: v for k_, v in c.items() if k_ != "algo"}
        row["desc"] = describe(c)
        status = plan.run(c["algo"], x.data_ptr(), w.data_ptr(), y.data_ptr(), workspace.data_ptr(), ws_bytes, stream)
        if status != "CUBLAS_STATUS_SUCCESS":
            row["status"] = status
            failed.append(row)
            continue
        torch.cuda.synchronize(dev)
        row["group"] = clusters.add(y, index=i)
        times = plan.time(c["algo"], x.data_ptr(), w.data_ptr(), y.data_ptr(), workspace.data_ptr(), ws_bytes,
                          stream, runs, warmup)
        row["median_ms"] = median(times)
        row["tflops"] = 2.0 * m * n * k / (row["median_ms"] * 1e-3) / 1e12
        row["status"] = "ok"
        rows.append(row)
    ref = x.double() @ w.double().T
    groups = []
    for g, members in enumerate(clusters.members):
        out = clusters.representative(g).view(x.dtype)
        e = errors(out, ref)
        ok_rows = [r for r in rows if r.get("group") == g]
        groups.append({"group": g, "size": len(ok_rows), "has_torch": "torch" in members,
                       "has_default": any(r["heuristic_rank"] == 0 for r in ok_rows),
                       "fastest_ms": min((r["median_ms"] for r in ok_rows), default=None), **e})
    default = next((r for r in rows if r["heuristic_rank"] == 0), None)
    result = {
        "m": m, "n": n, "k": k, "dtype": dtype, "compute": compute, "layout": "tn (F.linear: W is [N, K])",
        "library": plan.library(), "workspace_bytes": ws_bytes,
        "heuristic_status": heur["status"], "heuristic_returned": len(heur["picks"]),
        "enumeration": {k_: v for k_, v in enum.items() if k_ not in ("valid", "failure_examples")},
        "failure_examples": [{k_: v for k_, v in f.items() if k_ != "algo"} for f in enum["failure_examples"]],
        "configs": len(configs), "ran": len(rows), "run_failures": failed,
        "groups": groups, "distinct": len({r["group"] for r in rows}),
        "torch_group": torch_group, "default": default,
        "default_group": default["group"] if default else None,
        "torch_matches_default": bool(default and default["group"] == torch_group),
        "rows": rows, "wall_seconds": time.perf_counter() - started,
    }
    if log:
        log(f"algos {dtype}/{compute} M={m} N={n} K={k}: {len(rows)} ran, {len(failed)} failed at run, "
            f"{len(groups)} bit groups (torch in group {torch_group}, default in {result['default_group']}), "
            f"checks {enum['checks']} of {enum['candidates']} candidates in {enum['seconds']:.2f} s, "
            f"stopped by {enum['stopped_by']}, {enum['dead_tiles']}/{enum['tile_slots']} (algo, tile) dropped, "
            f"{result['wall_seconds']:.1f} s")
    return result


#: vLLM's batch-invariant mode on sm_90 sets CUBLASLT_WORKSPACE_SIZE=1 (KiB): no workspace for split-K.
NOSPLIT_WORKSPACE_BYTES = 1024


class NoSplitPick:
    """cuBLASLt as vLLM's batch-invariant mode leaves it on sm_90: the heuristic's picks for (M, N, K) under a
    1 KiB workspace, the first of them with split-K 1 run on caller buffers (F.linear layout). `pick` and
    `rank0` describe the algorithm run and the heuristic's own first choice (tile, stages, split-K ...)."""

    def __init__(self, m, n, k, dtype="bfloat16", *, device_index=0, workspace_bytes=NOSPLIT_WORKSPACE_BYTES,
                 count=16):
        import torch

        self.plan = plan_for(m, n, k, dtype, "32f", device_index)
        heur = self.plan.heuristic(count, workspace_bytes)
        picks = heur["picks"]
        if not picks:
            raise RuntimeError(f"cuBLASLt heuristic gave no algorithm for M={m} N={n} K={k} ({heur['status']})")
        self.rank0 = {k_: v for k_, v in picks[0].items() if k_ != "algo"}
        pick = next((p for p in picks if p["splitk"] <= 1), None)
        if pick is None:
            raise RuntimeError(f"every cuBLASLt pick for M={m} N={n} K={k} under {workspace_bytes} B splits K: "
                               + ", ".join(describe(p) for p in picks))
        self.algo = pick["algo"]
        self.pick = {k_: v for k_, v in pick.items() if k_ != "algo"}
        self.pick["desc"] = describe(pick)
        self.workspace_bytes = workspace_bytes
        self.workspace = torch.empty(max(workspace_bytes, 1), dtype=torch.uint8, device=f"cuda:{device_index}")
        self.shape = (m, n)

    def __call__(self, x, w, out=None):
        """out = x @ w^T with the pick (x [M, K], w [N, K], contiguous), on the current stream."""
        import torch

        out = torch.empty(self.shape, dtype=x.dtype, device=x.device) if out is None else out
        status = self.plan.run(self.algo, x.data_ptr(), w.data_ptr(), out.data_ptr(), self.workspace.data_ptr(),
                               self.workspace_bytes, ext.stream_of(x))
        if status != "CUBLAS_STATUS_SUCCESS":
            raise RuntimeError(f"cublasLtMatmul ({self.pick['desc']}): {status}")
        return out
