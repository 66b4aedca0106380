"""Batch-invariance sweep: does row 0 of f(X[:M]) keep its bits as M grows?

X[:M] is a prefix view of one fixed input, so row 0's inputs are the same for every M: any change of row
0's bits comes from the kernel the library picked for that M (tile, split-K, reduction order). For each
case the sweep records row 0's bitwise group at every M (group 0 = the smallest M's result), the first M
where it changes, how many distinct row-0 results there are, and the largest ulp distance to the first;
its output is the first values of row 0 at the smallest M, and its change points are a result metric, so
that `python -m probes.compare` shows where two GPUs differ (the bits, and the M at which row 0 changes).

Cases: F.linear over Mistral-7B's linear shapes (bf16, fp16, fp32, fp32 with TF32), the batch-invariant
Triton matmul (bf16, fp16), torch's rms_norm and softmax over the batch, and scaled_dot_product_attention
over the batch and over the sequence length (causal; the first query positions compared).
"""
from __future__ import annotations

import time

from probes.convert import to_numpy
from probes.gemm.cluster import Clusterer, ulp_distance_torch

GPU_MAX_M = 4096


def gpu_ms(max_m=GPU_MAX_M, dense=64, step=256):
    """All M in 1..dense, every `step`, and each power of two beyond dense with its neighbours."""
    ms = set(range(1, dense + 1)) | set(range(step, max_m + 1, step))
    p = dense
    while p <= max_m:
        ms |= {p - 1, p, p + 1}
        p *= 2
    ms |= {100, 127, 129, 200, 300, 1000, 1400, 2000, 3000}
    return sorted(m for m in ms if 1 <= m <= max_m)


def cpu_ms(max_m=130):
    return sorted(m for m in set(range(1, 17)) | {31, 32, 33, 63, 64, 65, 96, 127, 128, 129, 130} if m <= max_m)


#: Values of row 0 at the first M a sweep keeps as its output (so that two GPUs' reports compare bit for bit).
OUTPUT_VALUES = 256


def row0_sweep(fn, ms, *, rows=1, log=None, label=""):
    """Row(s) 0..rows-1 of fn(M) for every M in ms, grouped by bits. fn(M) returns the output tensor.
    The result's "output" is the first OUTPUT_VALUES values of those rows at the first M (flattened); with
    "change_points" it is what probes.compare lines up between two reports (probe.SWEEP_COMPARES)."""
    import torch

    started = time.perf_counter()
    clusters = Clusterer()
    groups, first = [], None
    max_ulp, max_rel = 0, 0.0
    for m in ms:
        out = fn(m)
        r = out[:rows].contiguous()
        if out.is_cuda:
            torch.cuda.synchronize(out.device)
        g = clusters.add(r, index=m)
        groups.append(g)
        if first is None:
            first = r.clone()
        elif g != 0:
            max_ulp = max(max_ulp, int(ulp_distance_torch(r, first).max().item()))
            scale = first.double().abs().max().item() or 1.0
            max_rel = max(max_rel, (r.double() - first.double()).abs().max().item() / scale)
    changes = [(ms[i], groups[i]) for i in range(len(ms)) if i == 0 or groups[i] != groups[i - 1]]
    first_change = next((m for m, g in zip(ms, groups) if g != 0), None)
    result = {"ms": list(ms), "groups": groups, "distinct": len(clusters.members), "first_change_m": first_change,
              "change_points": changes, "max_ulp_vs_first": max_ulp,
              "max_normwise_rel_diff_vs_first": max_rel, "invariant": len(clusters.members) == 1,
              "wall_seconds": time.perf_counter() - started,
              "output": to_numpy(first.reshape(-1)[:OUTPUT_VALUES])}
    if log:
        log(f"sweep {label}: {result['distinct']} distinct row-0 results over {len(ms)} M, first change at "
            f"M={first_change}, max ulp {max_ulp} ({result['wall_seconds']:.1f} s)")
    return result


# ---- cases ---------------------------------------------------------------------------------------------

def _gen(device, seed):
    import torch

    return torch.Generator(device=device).manual_seed(seed)


def linear_case(n, k, dtype, mode, device, seed, max_m):
    """fn(M) for F.linear ('torch', 'torch_tf32') or the batch-invariant Triton matmul ('triton')."""
    import torch
    import torch.nn.functional as F

    gen = _gen(device, seed)
    tdt = getattr(torch, dtype)
    w = (torch.randn((n, k), device=device, generator=gen) * k ** -0.5).to(tdt)
    x = torch.randn((max_m, k), device=device, generator=gen).to(tdt)
    if mode == "triton":
        from probes.gemm.triton_matmul import batch_invariant_matmul
        return lambda m: batch_invariant_matmul(x[:m], w)

    def run(m):
        old = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = mode == "torch_tf32"
        try:
            return F.linear(x[:m], w)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = old
    return run


def rms_norm_case(d, dtype, device, seed, max_m):
    import torch
    import torch.nn.functional as F

    gen = _gen(device, seed)
    tdt = getattr(torch, dtype)
    x = torch.randn((max_m, d), device=device, generator=gen).to(tdt)
    weight = (1 + 0.1 * torch.randn((d,), device=device, generator=gen)).to(tdt)
    return lambda m: F.rms_norm(x[:m], (d,), weight, 1e-5)


def softmax_case(d, dtype, device, seed, max_m):
    import torch

    gen = _gen(device, seed)
    x = (3 * torch.randn((max_m, d), device=device, generator=gen)).to(getattr(torch, dtype))
    return lambda m: torch.softmax(x[:m], dim=-1)


def sdpa_batch_case(heads, seq, dim, dtype, device, seed, max_b):
    """out[0] of causal SDPA over batches 1..max_b (q, k, v prefixes of one batch)."""
    import torch
    import torch.nn.functional as F

    gen = _gen(device, seed)
    tdt = getattr(torch, dtype)
    q, k, v = (torch.randn((max_b, heads, seq, dim), device=device, generator=gen).to(tdt) for _ in range(3))
    return lambda b: F.scaled_dot_product_attention(q[:b], k[:b], v[:b], is_causal=True)


def sdpa_seq_case(heads, max_seq, dim, dtype, device, seed, positions=32):
    """The first `positions` query rows of causal SDPA over sequence lengths S (prefixes of one sequence):
    causality makes them depend on keys 0..positions-1 only."""
    import torch
    import torch.nn.functional as F

    gen = _gen(device, seed)
    tdt = getattr(torch, dtype)
    q, k, v = (torch.randn((1, heads, max_seq, dim), device=device, generator=gen).to(tdt) for _ in range(3))

    def run(s):
        out = F.scaled_dot_product_attention(q[:, :, :s], k[:, :, :s], v[:, :, :s], is_causal=True)
        return out[0, :, :positions].transpose(0, 1)  # [positions, heads, dim]: "row 0" = query 0 ... rows
    return run
