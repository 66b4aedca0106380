"""GPU speed of the standalone dequantisers: bytes read + written per second, as a fraction of the
device copy bandwidth measured in the same run (probes.timing). Weights: 4096 x 14336 (a Mistral MLP
matrix), big enough that the kernels stream from HBM. Target: >= 80% of the copy rate on an H100."""
import numpy as np
import torch

from numerics import dequant as dq
from probes.report import TIMINGS
from probes.timing import copy_bandwidth_gbps, median, time_runs


N, K = 14336, 4096
RUNS = 30
REPEAT = 10  # launches per timed run: the CPU queues ahead, so Python/launch overhead is not counted
TARGET = 0.80


def _cases(device, live):
    g = torch.Generator(device="cpu").manual_seed(0)
    packed = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, generator=g).to(device)
    scales = (torch.rand((N, K // 128), generator=g) * 0.01 + 1e-3).half().to(device)
    zeros = torch.randint(0, 16, (N, K // 128), generator=g).half().to(device)
    nb = N * K // 32
    blocks = {}
    for qt, width in (("Q4_0", 18), ("Q4_1", 20)):
        b = torch.randint(0, 256, (nb, width), dtype=torch.uint8, generator=g)
        b[:, :2] = torch.full((nb, 1), 0.01, dtype=torch.float16).view(torch.uint8)
        if qt == "Q4_1":
            b[:, 2:4] = torch.full((nb, 1), -0.05, dtype=torch.float16).view(torch.uint8)
        blocks[qt] = b.to(device)
    q8 = torch.randn((N, K), generator=g).to(torch.float8_e4m3fn).to(device)
    s8 = (torch.rand((N // 128, K // 128), generator=g) + 0.5).to(device)
    int4_bytes = packed.numel() + 2 * scales.numel() + 2 * zeros.numel()
    cases = []
    if "cuda_ext" in live:
        from . import kernels as k

        for f, c in (("sub_mul", "float32"), ("fma", "float16")):
            out = torch.empty((N, K), dtype=torch.bfloat16, device=device)
            cases.append((f"cuda_ext int4 {f}/{c} -> bf16", int4_bytes + out.numel() * 2,
                          lambda i, f=f, c=c, out=out: k.dequant_int4(packed, scales, zeros, group_size=128, formula=f,
                                                                      compute=c, out="bfloat16", check_scales=False,
                                                                      result=out)))
        for qt, b in blocks.items():
            out = torch.empty((nb, 32), dtype=torch.float32, device=device)
            cases.append((f"cuda_ext {qt} -> f32", b.numel() + out.numel() * 4,
                          lambda i, qt=qt, b=b, out=out: k.dequant_q4(b, qt, result=out)))
        out8 = torch.empty((N, K), dtype=torch.bfloat16, device=device)
        cases.append(("cuda_ext fp8 e4m3 block -> bf16", q8.numel() + 4 * s8.numel() + 2 * out8.numel(),
                      lambda i: k.dequant_fp8(q8, s8, "block", check_scales=False, result=out8)))
    if "triton" in live:
        from . import triton_dequant as td

        for f, c in (("sub_mul", "float32"), ("fma", "float16")):
            cases.append((f"triton int4 {f}/{c} -> bf16", int4_bytes + N * K * 2,
                          lambda i, f=f, c=c: td.dequant_int4(packed, scales, zeros, group_size=128, formula=f,
                                                              compute=c, out="bfloat16")))
        for qt, b in blocks.items():
            cases.append((f"triton {qt} -> f32", b.numel() + nb * 32 * 4, lambda i, qt=qt, b=b: td.dequant_q4(b, qt)))
        cases.append(("triton fp8 e4m3 block -> bf16", q8.numel() + 4 * s8.numel() + 2 * N * K,
                      lambda i: td.dequant_fp8(q8, s8, "block")))
    if "torch" in live:
        from . import torch_dequant as tdq

        cases.append(("torch int4 sub_mul/float32 -> bf16 (many kernels)", int4_bytes + N * K * 2,
                      lambda i: tdq.dequant_int4(packed, scales, zeros, group_size=128, formula="sub_mul",
                                                 compute="float32", out="bfloat16")))
    return cases


def speed_experiments(device, live, add, log):
    torch.cuda.set_device(torch.device(device))
    cases = _cases(device, live)
    copy_gbps = copy_bandwidth_gbps(N * K * 2, device=device)
    log(f"copy bandwidth: {copy_gbps:.0f} GB/s (read + write of {N * K * 2 / 1e6:.0f} MB)")
    add(key="speed/copy", inputs={"nbytes": N * K * 2}, params={"kind": "speed"},
        metrics={"gbps": copy_gbps, "runs": 30}, compares=TIMINGS)
    for name, nbytes, launch in cases:
        def batch(i, launch=launch):
            for _ in range(REPEAT):
                launch(i)

        ms = median(time_runs(batch, RUNS, device=device)) / REPEAT
        gbps = nbytes / (ms * 1e-3) / 1e9
        frac = gbps / copy_gbps
        status = "ok" if (frac >= TARGET or name.startswith("torch")) else "error"
        msg = "" if status == "ok" else f"below {TARGET:.0%} of the copy bandwidth"
        add(key=f"speed/{name}", inputs={"seed": 0, "shape": [N, K]}, params={"kind": "speed"},
            metrics={"ms": ms, "bytes": nbytes, "gbps": gbps, "fraction_of_copy": frac, "runs": RUNS, "repeat": REPEAT,
                     "target": TARGET},
            status=status, message=msg, compares=TIMINGS)
        log(f"{name}: {ms:.3f} ms, {gbps:.0f} GB/s = {frac:.0%} of copy")
