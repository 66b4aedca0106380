"""Kernel-only times of the batch-invariant Triton matmul and cuBLAS (GPU; not part of the package's tests).

probes.timing.cold_gpu_times brackets each call with CUDA events: the time from the start event to the end
event, launch latency included. Here the same protocol (L2 flushed, GPU asleep before the call, Triton and
cuBLAS alternating) runs under torch.profiler, whose CUPTI records give each kernel's own start and end on
the GPU; the table shows both ratios (cuBLAS / Triton) side by side, from the same run.
Usage: PYTHONPATH=. python3 scripts/diagnostics/gemm_kernel_times.py OUT.json
"""
import json
import statistics
import sys

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from probes.gemm import triton_configs as C
from probes.gemm import triton_matmul as T
from probes.timing import cold_gpu_times

CASES = [("q_o", 1400, ["tma-128x128x64-g8-s6-w8-sub", "handoff-128x256x64-g8-s3-w8", "mixed-128x256/128x64-g8-s4-w8-sub",
                        "tma-128x256x64-g8-s3-w8"]),
         ("k_v", 1400, ["tma-128x128x64-g8-s6-w8-sub", "tma-128x128x64-g8-s5-w8-sub"]),
         ("down", 1400, ["handoff-128x256x64-g8-s3-w8"]),
         ("gate_up", 256, ["tma-128x256x64-g8-s4-w8-sub"]),
         ("q_o", 4096, ["tma-128x256x64-g16-s3-w8"])]
REPS = 20


def kernel_times(fns, reps):
    """Per function, the GPU durations (us) of the kernels it launched, one sum per call, from
    cold_gpu_times's own calls (flush, sleep, call) run under the profiler."""
    cold_gpu_times(fns, 1)  # compiles, calibrates the sleep: no extra kernels inside the profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        cold_gpu_times(fns, reps)
    kernels = sorted((e for e in prof.events() if e.device_type.name == "CUDA"), key=lambda e: e.time_range.start)
    # the calls' kernels are those after each sleep (the warm-up calls come before the first; the flush fills
    # and the sleeps are the rest)
    per_call, current = [], None
    for e in kernels:
        if "sleep" in e.name.lower() or "spin" in e.name.lower():
            current = []
            per_call.append(current)
        elif current is not None and not any(s in e.name.lower() for s in ("fill", "zero", "memset")):
            current.append((e.name, e.time_range.elapsed_us()))
    out = [[] for _ in fns]
    names = [set() for _ in fns]
    for j, call in enumerate(per_call):
        out[j % len(fns)].append(sum(d for _, d in call))
        names[j % len(fns)].update(n[:60] for n, _ in call)
    return out, names


def main(out_path):
    g = torch.Generator(device="cuda").manual_seed(0)
    rows = []
    for shape, m, configs in CASES:
        n, k = C.MISTRAL_SHAPES[shape]
        w = (torch.randn((n, k), device="cuda", generator=g) * k ** -0.5).to(torch.bfloat16)
        x = torch.randn((m, k), device="cuda", generator=g).to(torch.bfloat16)
        for name in configs:
            c = C.config_by_name(name)
            out = torch.empty((m, n), dtype=torch.bfloat16, device="cuda")
            fns = [lambda: F.linear(x, w), lambda: T.batch_invariant_matmul(x, w, config=c, out=out)]
            (kc, kt), kn = kernel_times(fns, REPS)
            ec, et = cold_gpu_times(fns, REPS)
            kc_, kt_ = statistics.median(kc), statistics.median(kt)
            ec_, et_ = statistics.median(ec) * 1e3, statistics.median(et) * 1e3
            rows.append(dict(shape=shape, M=m, config=name, kernel_us=dict(cublas=kc_, triton=kt_),
                             event_us=dict(cublas=ec_, triton=et_), kernels=[sorted(s) for s in kn],
                             calls=[len(kc), len(kt)]))
            print(f"{shape:7s} {m:5d} {name:36s} kernel: cuBLAS {kc_:6.1f} Triton {kt_:6.1f} us ratio {kc_ / kt_:.3f}"
                  f" | events: cuBLAS {ec_:6.1f} Triton {et_:6.1f} us ratio {ec_ / et_:.3f} | calls {len(kc)}/{len(kt)}"
                  f" | {sorted(kn[0])[:2]} {sorted(kn[1])[:2]}", flush=True)
    with open(out_path, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
