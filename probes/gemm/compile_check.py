"""Compile the batch-invariant Triton matmul for a GPU target without a GPU (Triton's own ptxas):
`python -m probes.gemm.compile_check [--all] [--arch 90]` prints one line per config and dtype with the
shared memory it needs and its count of wgmma / mma.sync / TMA instructions; exit status 1 if any fails to
compile, has no wgmma, any mma.sync (another instruction: other bits), a wgmma other than m64*k16 with fp32
accumulation of the input type (WGMMA_KIND), no TMA, too much shared memory, or wgmma instructions that
ptxas serialises (its warning C7515).
Must run with TRITON_INTERPRET unset (the interpreter replaces the compiler)."""
import argparse
import re
import sys
import time


def compile_config(c, dtype, arch=90, num_sms=132):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from probes.gemm import triton_matmul as T

    dt = {"bfloat16": "bf16", "float16": "fp16"}[dtype]
    bm, bn, bk = c["BLOCK_M"], c["BLOCK_N"], c["BLOCK_K"]
    meta = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=c["GROUP_M"], NUM_SMS=num_sms, FLATTEN=c["FLATTEN"])
    if c.get("SPLIT_K", 1) > 1:
        swap, tma = c["impl"] == "swap", c["impl"] != "ptr"
        sub = bool(c.get("SUBTILE")) and not swap
        sig = ({"x": f"tensordesc<{dt}[{bm}, {bk}]>", "w": f"tensordesc<{dt}[{bn}, {bk}]>",
                "y": f"tensordesc<{dt}[{bm}, {bn // 2 if sub else bn}]>"} if tma else
               {"x": f"*{dt}", "w": f"*{dt}", "y": f"*{dt}"})
        sig.update({"ws_ptr": "*fp32", "flag_ptr": "*i32"})
        fn = T.bi_matmul_splitk_kernel
        meta.update(SPLIT_K=c["SPLIT_K"], INLINE=bool(c.get("SPLIT_INLINE")), SWAP=swap, TMA=tma, SUBTILE=sub)
    elif c["impl"] == "wide":
        parts = list(c["N_PARTS"]) + [0] * (3 - len(c["N_PARTS"]))
        sig = {"x_desc": f"tensordesc<{dt}[{bm}, {bk}]>"}
        sig.update({f"w{i + 1}_desc": f"tensordesc<{dt}[{p or parts[1]}, {bk}]>" for i, p in enumerate(parts)})
        sig.update({f"y{i + 1}_desc": f"tensordesc<{dt}[{bm}, {p or parts[1]}]>" for i, p in enumerate(parts)})
        fn = T.bi_matmul_wide_kernel
        del meta["BLOCK_N"]
        meta.update(BN1=parts[0], BN2=parts[1], BN3=parts[2])
    elif c["impl"] == "mixed":
        y_bn, y_ns = (bn // 2, c["N_SMALL"] // 2) if c.get("SUBTILE") else (bn, c["N_SMALL"])
        sig = {"x_desc": f"tensordesc<{dt}[{bm}, {bk}]>", "wb_desc": f"tensordesc<{dt}[{bn}, {bk}]>",
               "yb_desc": f"tensordesc<{dt}[{bm}, {y_bn}]>", "ws_desc": f"tensordesc<{dt}[{c['N_SMALL']}, {bk}]>",
               "ys_desc": f"tensordesc<{dt}[{bm}, {y_ns}]>"}
        fn = T.bi_matmul_mixed_kernel
        meta.update(N_SMALL=c["N_SMALL"], SUBTILE=c.get("SUBTILE", False))
    elif c["impl"] in ("tma", "swap", "handoff"):
        y_bn = bn // 2 if c.get("SUBTILE") else bn
        sig = {"x_desc": f"tensordesc<{dt}[{bm}, {bk}]>", "w_desc": f"tensordesc<{dt}[{bn}, {bk}]>",
               "y_desc": f"tensordesc<{dt}[{bm}, {y_bn}]>"}
        if c["impl"] == "tma":
            fn = T.bi_matmul_tma_kernel
            meta.update(SUBTILE=c.get("SUBTILE", False), WS=c.get("WS", False))
        elif c["impl"] == "handoff":
            fn = T.bi_matmul_handoff_kernel
            sig.update({"ws_ptr": "*fp32", "flag_ptr": "*i32"})
            meta.update(SUBTILE=c.get("SUBTILE", False))
        else:
            fn = T.bi_matmul_swap_kernel
    else:
        fn = T.bi_matmul_ptr_kernel
        sig = {"x_ptr": f"*{dt}", "w_ptr": f"*{dt}", "y_ptr": f"*{dt}"}
    sig.update({"M": "i32", "N": "i32", "K": "i32"})
    if c.get("SPLIT_K", 1) > 1:
        sig.update({"SLICE_K": "i32", "stride_x": "i32", "stride_w": "i32", "stride_y": "i32"})
    elif c["impl"] == "handoff":
        sig["EPOCH"] = "i32"
    if c["impl"] == "mixed":
        sig["N_BIG"] = "i32"
    if c["impl"] == "ptr" and c.get("SPLIT_K", 1) == 1:
        sig.update({"stride_xm": "i32", "stride_wn": "i32", "stride_ym": "i32"})
    sig.update({k: "constexpr" for k in meta})
    kernel = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=meta), target=GPUTarget("cuda", arch, 32),
                            options={"num_warps": c["num_warps"], "num_stages": c["num_stages"]})
    ptx = kernel.asm["ptx"]
    # e.g. "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16": the k step and the types must be the same
    # for every candidate (the per-element k16 chain), whatever the N of the instruction.
    kinds = sorted({re.sub(r"\.n\d+|n\d+(?=k)", "", m) for m in re.findall(r"wgmma\.mma_async\.\S+?(?=\s)", ptx)})
    serialized, spill = ptxas_verdict(ptx, arch)
    return {"shared": kernel.metadata.shared, "wgmma": ptx.count("wgmma.mma_async"), "wgmma_kinds": kinds,
            "mma_sync": ptx.count("mma.sync"), "tma": ptx.count("cp.async.bulk.tensor"),
            "setmaxnreg": ptx.count("setmaxnreg"), "wgmma_serialized": serialized, "spill_bytes": spill}


def ptxas_verdict(ptx, arch=90):
    """ptxas's own verdict (Triton's bundled ptxas, -v): warning C7515 'wgmma.mma_async instructions are
    serialized' (e.g. several accumulators zeroed inside a flattened tile loop) costs about half the speed;
    and the bytes of registers spilled to local memory (stores), reported, not refused."""
    import subprocess
    import tempfile

    from triton.backends.nvidia.compiler import get_ptxas

    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
        f.write(ptx)
        f.flush()
        r = subprocess.run([get_ptxas(arch).path, f"-arch=sm_{arch}a", "-v", f.name, "-o", "/dev/null"],
                           capture_output=True, text=True, timeout=300)
    spill = sum(int(n) for n in re.findall(r"(\d+) bytes spill stores", r.stderr))
    return "C7515" in r.stderr, spill


def wgmma_serialized(ptx, arch=90):
    """ptxas's warning C7515 (ptxas_verdict)."""
    return ptxas_verdict(ptx, arch)[0]


#: The one wgmma kind (instruction N removed) every candidate must use: m64, k16, fp32 accumulator.
WGMMA_KIND = {"bfloat16": "wgmma.mma_async.sync.aligned.m64k16.f32.bf16.bf16",
              "float16": "wgmma.mma_async.sync.aligned.m64k16.f32.f16.f16"}

#: Shared memory one block may use on sm_90 (227 KiB).
SHARED_LIMIT = 232448


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m probes.gemm.compile_check", description=__doc__)
    parser.add_argument("--all", action="store_true", help="every candidate (default: ANCHOR only)")
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--dtypes", default="bfloat16,float16", help="comma-separated (default bfloat16,float16)")
    args = parser.parse_args(argv)
    from probes.gemm import triton_configs as _configs
    from probes.gemm import triton_matmul as T

    if T.INTERPRETED:
        print("error: TRITON_INTERPRET is set; unset it to compile", file=sys.stderr)
        return 2
    configs = {}
    for c in ([T.ANCHOR] + (_configs.all_candidates() if args.all else [])):
        configs.setdefault(T.config_name(c), c)
    failed = 0
    for name, c in configs.items():
        for dtype in args.dtypes.split(","):
            t = time.perf_counter()
            try:
                r = compile_config(c, dtype, args.arch)
                bad = [why for why, cond in (("no wgmma", r["wgmma"] == 0), ("mma.sync", r["mma_sync"] > 0),
                                             ("no TMA", c["impl"] != "ptr" and r["tma"] == 0),
                                             ("shared memory", r["shared"] > SHARED_LIMIT),
                                             ("wgmma serialized (ptxas C7515)", r["wgmma_serialized"]),
                                             (f"wgmma kind {r['wgmma_kinds']}", r["wgmma_kinds"] != [WGMMA_KIND[dtype]]))
                       if cond]
                failed += bool(bad)
                print(f"{'BAD ' if bad else 'OK  '} {name:40s} {dtype:9s} shared={r['shared']:6d} wgmma={r['wgmma']} "
                      f"mma.sync={r['mma_sync']} tma={r['tma']} {','.join(r['wgmma_kinds'])} setmaxnreg={r['setmaxnreg']} "
                      f"spill={r['spill_bytes']} "
                      f"({time.perf_counter() - t:.1f} s){' ' + ', '.join(bad) if bad else ''}")
            except Exception as exc:
                failed += 1
                print(f"FAIL {name:36s} {dtype:9s} {type(exc).__name__}: {str(exc)[:300]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
