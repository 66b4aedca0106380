"""Where the handoff kernel's time goes (GPU; not part of the package's tests).

Builds variants of probes/gemm/triton_handoff.py by editing its source (so they are exactly the shipped kernel
but for the edit), swaps each into the matmul's launcher and times it against cuBLAS with the bench's timer
(probes.timing.cold_gpu_times). Variants (fakeio, storeonly, loadonly and nohead give wrong bits on purpose; timing only):
  base       the shipped kernel
  regio      the accumulator stored / loaded by inline PTX straight from / into the wgmma registers, one
             float per instruction (regio2: two adjacent columns, v2)
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
# Register IO: the accumulator stored / loaded straight from / into the wgmma layout by inline PTX, one
# element (".f32") or two adjacent columns (".v2.f32", pack 2) per instruction, instead of tl.store / tl.load's
# conversion to a blocked layout through shared memory. The load is pure (else layout propagation leaves
# unused copies that still load); its PTX comes after the acquire (checked in the first H200 run's PTX).
_ADDR = "_slot(ws_ptr, slot, BLOCK_M, BLOCK_N).to(tl.int64, bitcast=True)"
REG_STORE = {1: f'    tl.inline_asm_elementwise("st.global.cg.f32 [$1], $2; mov.u32 $0, 0;", "=r,l,f", [{_ADDR}, acc], '
                'dtype=tl.int32, is_pure=False, pack=1)\n',
             2: f'    tl.inline_asm_elementwise("st.global.cg.v2.f32 [$2], {{$4, $5}}; mov.u32 $0, 0; mov.u32 $1, 0;", '
                f'"=r,=r,l,l,f,f", [{_ADDR}, acc], dtype=tl.int32, is_pure=False, pack=2)\n'}
REG_LOAD = {1: f'    return tl.inline_asm_elementwise("ld.global.cg.f32 $0, [$1];", "=f,l", [{_ADDR}], dtype=tl.float32, '
               'is_pure=True, pack=1)',
            2: f'    return tl.inline_asm_elementwise("ld.global.cg.v2.f32 {{$0, $1}}, [$2];", "=f,=f,l,l", [{_ADDR}], '
               'dtype=tl.float32, is_pure=True, pack=2)'}
HEAD = "    if (end > start) & (end % k_tiles != 0) & (t_last * k_tiles >= start):"
WAIT_1 = "    while tl.load(flag, volatile=True) != epoch:\n        pass\n"
WAIT_2 = ('    while tl.atomic_cas(flag, epoch, epoch, sem="acquire", scope="gpu") != epoch:  # once (its result is used:\n'
          '        pass                                                                      # an unused one is dropped)\n')
EDITS = {"base": [], "regio": [(STORE, REG_STORE[1]), (LOAD, REG_LOAD[1])],
         "regio2": [(STORE, REG_STORE[2]), (LOAD, REG_LOAD[2])],
         "fakeio": [(STORE, ONE_STORED), (LOAD, ONE_LOADED)], "storeonly": [(LOAD, ONE_LOADED)],
         "loadonly": [(STORE, ONE_STORED)],
         "nohead": [(HEAD, HEAD.replace(":", " & (start < 0):")), (WAIT_1, ""), (WAIT_2, "")]}
H = C.cfg
ALL = ["base", "regio", "regio2", "fakeio", "nohead"]
#: (shape, M, [(config, variants)]); configs of other kernels are timed as they are (reference).
CASES = [("q_o", 1400, [(H("handoff", 128, 256, 64, stages=3), ALL),
                        (H("handoff", 128, 256, 64, stages=4, subtile=True), ["base", "regio2"]),
                        (H("handoff", 128, 256, 64, stages=3, group_m=4), ["base"]),
                        (H("handoff", 128, 256, 64, stages=3, group_m=16), ["base"]),
                        (H("handoff", 128, 128, 64, stages=4), ALL),
                        (H("handoff", 128, 128, 64, stages=5, subtile=True), ["base"]),
                        (H("handoff", 128, 128, 64, stages=6, subtile=True), ["base", "fakeio"]),
                        (H("mixed", 128, 256, 64, stages=4, subtile=True, small=128), ["-"]),
                        (H("tma", 128, 128, 64, stages=6, subtile=True), ["-"])]),
         ("k_v", 1400, [(H("handoff", 128, 64, 128, stages=4, warps=4), ALL),
                        (H("handoff", 64, 128, 128, stages=4, warps=4), ["base"]),
                        (H("handoff", 128, 64, 64, stages=6), ["base", "fakeio", "nohead"]),
                        (H("handoff", 64, 128, 64, stages=6, warps=4), ["base"]),
                        (H("tma", 128, 128, 64, stages=6, subtile=True), ["-"])]),
         ("down", 1400, [(H("handoff", 128, 256, 64, stages=3), ["base", "regio2", "fakeio"]),
                         (H("handoff", 128, 128, 64, stages=5, subtile=True), ["base"]),
                         (H("handoff", 128, 128, 64, stages=6, subtile=True), ["base"]),
                         (H("mixed", 128, 256, 64, stages=4, subtile=True, small=128), ["-"])])]


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
    kernels["-"] = T.bi_matmul_handoff_kernel
    shipped = T.bi_matmul_handoff_kernel
    rows = []
    g = torch.Generator(device="cuda").manual_seed(0)
    try:
        for shape, m, cases in CASES:
            n, k = C.MISTRAL_SHAPES[shape]
            w = (torch.randn((n, k), device="cuda", generator=g) * k ** -0.5).to(torch.bfloat16)
            x = torch.randn((m, k), device="cuda", generator=g).to(torch.bfloat16)
            ref = F.linear(x, w)
            anchor = T.batch_invariant_matmul(x, w, config=C.ANCHOR)
            for c, variants in cases:
                name = C.config_name(c)
                out = torch.empty((m, n), dtype=torch.bfloat16, device="cuda")
                for vn in variants:
                    T.bi_matmul_handoff_kernel = kernels[vn]
                    T.batch_invariant_matmul(x, w, config=c, out=out)
                    torch.cuda.synchronize()
                    err = (out.float() - ref.float()).abs().max().item()
                    same = torch.equal(out.view(torch.int16), anchor.view(torch.int16))
                    ct, tt = cold_gpu_times([lambda: F.linear(x, w),
                                             lambda: T.batch_invariant_matmul(x, w, config=c, out=out)], 30)
                    t, cub = median(tt), median(ct)
                    rows.append(dict(shape=shape, M=m, config=name, variant=vn, us=t * 1e3, cublas_us=cub * 1e3,
                                     max_abs_vs_cublas=err, bits_equal_anchor=same))
                    print(f"{shape:6s} {m:5d} {name:36s} {vn:10s} {t * 1e3:8.1f} us  cublas {cub * 1e3:7.1f}  "
                          f"ratio {cub / t:.3f}  max|d| {err:.3g}  {'same' if same else 'DIFFER'}", flush=True)
    finally:
        T.bi_matmul_handoff_kernel = shipped
    with open(out_path, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
