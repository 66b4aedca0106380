"""Where the reduction probe's time goes on a GPU (diagnostic; prints seconds per step)."""
import time

import numpy as np
import torch

from numerics import exact, orders
from probes.reduction import triton_sum
from probes.reduction.probe import make_input, to_device


def t(label, fn):
    torch.cuda.synchronize()
    s = time.perf_counter()
    r = fn()
    torch.cuda.synchronize()
    print(f"{label:<50} {time.perf_counter() - s:8.2f} s", flush=True)
    return r


for n, dtype, acc in [(1000, "float32", "float32"), (1000, "float16", "float32"), (1000, "float16", "float16"),
                      (1 << 28, "float32", "float32")]:
    x_host = t(f"make_input n={n} {dtype}", lambda: make_input(0, n, dtype))
    x = to_device(x_host, "cuda")
    tacc = {"float32": torch.float32, "float16": torch.float16}[acc]
    out, ws = torch.zeros(1, dtype=tacc, device="cuda"), torch.zeros(1024, dtype=tacc, device="cuda")
    t(f"triton fixed 1st call {dtype}->{acc} n={n}",
      lambda: triton_sum.fixed_order_sum(x, out, ws, grid=1024, block=1024, acc=acc))
    t(f"triton fixed 2nd call", lambda: triton_sum.fixed_order_sum(x, out, ws, grid=1024, block=1024, acc=acc))
    t(f"triton atomic 1st call", lambda: triton_sum.atomic_sum(x, out, grid=1024, block=1024, acc=acc))
    if n > 1000:
        t("exact_sum", lambda: exact.exact_sum(x_host))
        t("model cuda_ext", lambda: orders.two_pass_tree_sum(x_host, acc=acc, grid=1024, block=256, final_block=256,
                                                              chunk=4, warp=32))
        t("model triton", lambda: orders.two_pass_tree_sum(x_host, acc=acc, grid=1024, block=1024,
                                                            final_block=1024, chunk=1, warp=1024))

for n in [1 << 12, 1 << 16, 1 << 20]:
    for dt in [torch.float32, torch.float16]:
        x = torch.randn(n, device="cuda", dtype=dt)
        idx = torch.zeros(n, dtype=torch.long, device="cuda")
        o = torch.zeros(1, dtype=dt, device="cuda")
        o.index_add_(0, idx, x)
        t(f"index_add {dt} n={n}", lambda: o.index_add_(0, idx, x))
