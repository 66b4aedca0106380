"""Where, inside one launch, the handoff kernel's time goes (GPU; not part of the package's tests).

A variant of probes/gemm/triton_handoff.py (source edits, as gemm_handoff_variants.py) reads the GPU's
%globaltimer (ns) at four points of every program: start, after its head, after its whole tiles, after its
tail, and stores them in the spare words of the program's flag line (the flag is word 0; words 2-9 are
padding). Per program: the k-tiles of each segment (from the same partition formula as the kernel) and the
time it took; then per segment kind the time per k-tile, and the programs that finish last. With `fakeio`
the accumulator is not stored / loaded (wrong bits; timing only).
Usage: PYTHONPATH=. python3 scripts/diagnostics/gemm_handoff_timeline.py OUT.json
       python3 scripts/diagnostics/gemm_handoff_timeline.py --summarize OUT.json   (per kind of program, no GPU)
"""
import importlib.util
import json
import statistics
import sys


def by_kind(record):
    """Lines of a per-kind summary: programs grouped by their segments (H head, W whole tile, T tail), with
    median k-tiles, microseconds and microseconds per k-tile of each segment, and when they end."""
    kinds = {}
    for p, (h, w, t) in enumerate(record["segments"]):
        stamps = record["median_stamps_us"][p]
        kinds.setdefault(("H" if h else "") + "W" * w + ("T" if t else ""), []).append(
            (h, t, [stamps[1] - stamps[0], stamps[2] - stamps[1], stamps[3] - stamps[2], stamps[3]]))
    lines = [f"{record['shape']} M={record['M']} {record['config']} {record['variant']}: span "
             f"{record['span_us']:.1f} us, {record['k_tiles']} k-tiles per tile"]
    for kind, progs in kinds.items():
        h = statistics.median(x[0] for x in progs)
        t = statistics.median(x[1] for x in progs)
        d = [statistics.median(x[2][i] for x in progs) for i in range(4)]
        rate = lambda us, kt: f"{us / kt:.3f} us/k-tile" if kt else "-"
        lines.append(f"  {kind:4s} {len(progs):3d} programs: head {h:5.1f} k-tiles {d[0]:6.1f} us ({rate(d[0], h)}), "
                     f"whole tiles {d[1]:6.1f} us, tail {t:5.1f} k-tiles {d[2]:6.1f} us ({rate(d[2], t)}), "
                     f"ends at {d[3]:6.1f} us")
    return lines


if len(sys.argv) == 3 and sys.argv[1] == "--summarize":
    for rec in json.load(open(sys.argv[2])):
        print("\n".join(by_kind(rec)))
    sys.exit(0)

import torch  # noqa: E402

from probes.gemm import triton_configs as C  # noqa: E402
from probes.gemm import triton_handoff as H  # noqa: E402
from probes.gemm import triton_matmul as T  # noqa: E402

_spec = importlib.util.spec_from_file_location("gemm_handoff_variants", "scripts/diagnostics/gemm_handoff_variants.py")
V = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(V)

STAMP = '''@triton.jit
def _stamp(flag_ptr, pid, i: tl.constexpr):
    t = tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=tl.int64, is_pure=False, pack=1)
    tl.store((flag_ptr + pid * FLAG_STRIDE + 2 + 2 * i).to(tl.pointer_type(tl.int64)), t)


@triton.jit(do_not_specialize=["M", "EPOCH"])'''
TIMELINE = [('@triton.jit(do_not_specialize=["M", "EPOCH"])', STAMP),
            ("    pid = tl.program_id(0)\n", "    pid = tl.program_id(0)\n    _stamp(flag_ptr, pid, 0)\n"),
            ("    # 2. whole waves", "    _stamp(flag_ptr, pid, 1)\n    # 2. whole waves"),
            ("    # 4. tail:", "    _stamp(flag_ptr, pid, 2)\n    # 4. tail:"),
            ("\n\n\n_HANDOFF = {}", "\n    _stamp(flag_ptr, pid, 3)\n\n\n_HANDOFF = {}")]
VARIANTS = {"timeline": TIMELINE, "timeline-fakeio": TIMELINE + V.EDITS["fakeio"]}
CASES = [("q_o", 1400, C.cfg("handoff", 128, 256, 64, stages=3), ["timeline", "timeline-fakeio"]),
         ("down", 1400, C.cfg("handoff", 128, 256, 64, stages=3), ["timeline"]),
         ("k_v", 1400, C.cfg("handoff", 128, 64, 128, stages=4, warps=4), ["timeline"])]


def segments(m, n, k, c, programs):
    """Per program (head k-tiles, whole tiles, tail k-tiles), as the kernel partitions the work."""
    bm, bn, bk = c["BLOCK_M"], c["BLOCK_N"], c["BLOCK_K"]
    tiles = -(-m // bm) * -(-n // bn)
    kt = -(-k // bk)
    dp = max(tiles // programs - 1, 0) * programs if tiles % programs else tiles
    sk = (tiles - dp) * kt
    out = []
    for p in range(programs):
        start, end = dp * kt + p * sk // programs, dp * kt + (p + 1) * sk // programs
        body_end, head = end, 0
        t_last = (end - 1) // kt
        if end > start and end % kt and t_last * kt >= start:
            head, body_end = end - t_last * kt, t_last * kt
        whole = len(range(p, dp, programs)) + max(body_end // kt - -(-start // kt), 0)
        tail = 0
        if start % kt and start < body_end:
            tail = min(kt, body_end - (start // kt) * kt) - start % kt
        out.append((head, whole, tail))
    return out, kt


def main(out_path):
    kernels = {name: V.variant(name, edits) for name, edits in VARIANTS.items()}
    shipped = T.bi_matmul_handoff_kernel
    programs = torch.cuda.get_device_properties(0).multi_processor_count
    g = torch.Generator(device="cuda").manual_seed(0)
    result = []
    try:
        for shape, m, c, variants in CASES:
            n, k = C.MISTRAL_SHAPES[shape]
            w = (torch.randn((n, k), device="cuda", generator=g) * k ** -0.5).to(torch.bfloat16)
            x = torch.randn((m, k), device="cuda", generator=g).to(torch.bfloat16)
            segs, kt = segments(m, n, k, c, programs)
            for vn in variants:
                T.bi_matmul_handoff_kernel = kernels[vn]
                runs = []
                for _ in range(12):
                    T.batch_invariant_matmul(x, w, config=c)
                    torch.cuda.synchronize()
                    key = next(kk for kk in H._HANDOFF if kk[3:] == (c["BLOCK_M"], c["BLOCK_N"], programs))
                    f = H._HANDOFF[key][1].view(programs, H.FLAG_STRIDE.value)[:, 2:10].contiguous()
                    runs.append(f.view(torch.int64).cpu().tolist())  # [program][4] ns
                rows = []
                for run in runs[2:]:
                    t0 = min(r[0] for r in run)
                    rows.append([[(r[i] - t0) / 1e3 for i in range(4)] for r in run])
                med = [[statistics.median(rw[p][i] for rw in rows) for i in range(4)] for p in range(programs)]
                span = statistics.median(max(r[3] for r in rw) for rw in rows)
                kinds = {"head": (0, 0, 1), "whole": (1, 1, 2), "tail": (2, 2, 3)}
                print(f"{shape} M={m} {C.config_name(c)} {vn}: launch span {span:.1f} us (median of {len(rows)}), "
                      f"{kt} k-tiles per tile, start skew max {max(r[0] for r in med):.2f} us", flush=True)
                summary = {}
                for kind, (si, a, b) in kinds.items():
                    per = [(med[p][b] - med[p][a]) / (segs[p][si] * (kt if kind == "whole" else 1))
                           for p in range(programs) if segs[p][si]]
                    if per:
                        summary[kind] = dict(programs=len(per), us_per_ktile_median=statistics.median(per),
                                             us_per_ktile_min=min(per), us_per_ktile_max=max(per))
                        print(f"  {kind:5s}: {len(per):3d} programs, us per k-tile median {statistics.median(per):.3f} "
                              f"(min {min(per):.3f}, max {max(per):.3f})")
                last = sorted(range(programs), key=lambda p: -med[p][3])[:4]
                for p in last:
                    h, wh, tl_ = segs[p]
                    print(f"  program {p:3d} ends {med[p][3]:6.1f} us: head {h:3d} k-tiles {med[p][1] - med[p][0]:5.1f} us,"
                          f" whole {wh} tiles {med[p][2] - med[p][1]:5.1f} us, tail {tl_:3d} k-tiles "
                          f"{med[p][3] - med[p][2]:5.1f} us")
                result.append(dict(shape=shape, M=m, config=C.config_name(c), variant=vn, span_us=span,
                                   k_tiles=kt, segments=segs, median_stamps_us=med, summary=summary))
                print("\n".join(by_kind(result[-1])[1:]), flush=True)
    finally:
        T.bi_matmul_handoff_kernel = shipped
    with open(out_path, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
