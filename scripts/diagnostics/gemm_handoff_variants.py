"""Where the handoff kernel's time goes (GPU; not part of the package's tests).

Builds variants of probes/gemm/triton_handoff.py by editing its source (so they are exactly the shipped kernel
but for the edit), swaps each into the matmul's launcher and times it against cuBLAS with the bench's timer
(probes.timing.cold_gpu_times). Variants (all but `base` give wrong bits on purpose; timing only):
  base       the shipped kernel
  fakeio     the handed-over accumulator is not stored/loaded (one float of it is: the head is still computed)
  storeonly  stored, not loaded            loadonly   loaded, not stored
  nohead     no head segments and no waiting: what the schedule costs without any hand-over
Usage: PYTHONPATH=. python3 scripts/diagnostics/gemm_handoff_variants.py OUT.json
"""
import importlib.util
import json
import sys

import torch
import torch.nn.functional as F

from probes.gemm import triton_configs as C
from probes.gemm import triton_matmul as T
from probes.timing import cold_gpu_times, median

SRC = open("probes/gemm/triton_handoff.py").read()
STORE = "    tl.store(_slot(ws_ptr, slot, BLOCK_M, BLOCK_N), acc)\n"
LOAD = '    return tl.load(_slot(ws_ptr, slot, BLOCK_M, BLOCK_N), cache_modifier=".cg")'
ONE_STORED = "    tl.store(ws_ptr + slot, tl.sum(tl.sum(acc, 1), 0))\n"
ONE_LOADED = "    return tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32) + tl.load(ws_ptr + slot, cache_modifier='.cg')"
HEAD = "    if (end > start) & (end % k_tiles != 0) & (t_last * k_tiles >= start):"
WAIT_1 = "    while tl.load(flag, volatile=True) != epoch:\n        pass\n"
WAIT_2 = ('    while tl.atomic_cas(flag, epoch, epoch, sem="acquire", scope="gpu") != epoch:  # once (its result is used:\n'
          '        pass                                                                      # an unused one is dropped)\n')
EDITS = {"base": [], "fakeio": [(STORE, ONE_STORED), (LOAD, ONE_LOADED)], "storeonly": [(LOAD, ONE_LOADED)],
         "loadonly": [(STORE, ONE_STORED)],
         "nohead": [(HEAD, HEAD.replace(":", " & (start < 0):")), (WAIT_1, ""), (WAIT_2, "")]}
CASES = [("q_o", 1400, ["handoff-128x256x64-g8-s3-w8", "handoff-128x256x64-g8-s4-w8-sub"]),
         ("k_v", 1400, ["handoff-128x64x128-g8-s4-w4", "handoff-64x128x128-g8-s4-w4"]),
         ("down", 1400, ["handoff-128x256x64-g8-s3-w8"])]


def variant(name, edits):
    s = SRC
    for a, b in edits:
        if a not in s:
            raise SystemExit(f"variant {name}: the source no longer has {a!r}")
        s = s.replace(a, b)
    path = f"/tmp/driftscope_handoff_{name}.py"
    with open(path, "w") as f:
        f.write(s)
    spec = importlib.util.spec_from_file_location(f"driftscope_handoff_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.bi_matmul_handoff_kernel


def main(out_path):
    kernels = {name: variant(name, edits) for name, edits in EDITS.items()}
    shipped = T.bi_matmul_handoff_kernel
    rows = []
    g = torch.Generator(device="cuda").manual_seed(0)
    try:
        for shape, m, names in CASES:
            n, k = C.MISTRAL_SHAPES[shape]
            w = (torch.randn((n, k), device="cuda", generator=g) * k ** -0.5).to(torch.bfloat16)
            x = torch.randn((m, k), device="cuda", generator=g).to(torch.bfloat16)
            for name in names:
                c = C.config_by_name(name)
                out = torch.empty((m, n), dtype=torch.bfloat16, device="cuda")
                for vn, kernel in kernels.items():
                    T.bi_matmul_handoff_kernel = kernel
                    ct, tt = cold_gpu_times([lambda: F.linear(x, w),
                                             lambda: T.batch_invariant_matmul(x, w, config=c, out=out)], 30)
                    t, cub = median(tt), median(ct)
                    rows.append(dict(shape=shape, M=m, config=name, variant=vn, us=t * 1e3, cublas_us=cub * 1e3))
                    print(f"{shape:6s} {m:5d} {name:36s} {vn:10s} {t * 1e3:8.1f} us  cublas {cub * 1e3:7.1f}  "
                          f"ratio {cub / t:.3f}", flush=True)
    finally:
        T.bi_matmul_handoff_kernel = shipped
    with open(out_path, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
