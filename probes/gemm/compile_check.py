"""Compile the batch-invariant Triton matmul for a GPU target without a GPU (Triton's own ptxas):
`python -m probes.gemm.compile_check [--all] [--arch 90]` prints one line per config and dtype with the
shared memory it needs and its count of wgmma / TMA instructions; exit status 1 if any fails.
Must run with TRITON_INTERPRET unset (the interpreter replaces the compiler)."""
import argparse
import sys
import time


def compile_config(c, dtype, arch=90):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from probes.gemm import triton_matmul as T

    dt = {"bfloat16": "bf16", "float16": "fp16"}[dtype]
    meta = dict(BLOCK_M=c["BLOCK_M"], BLOCK_N=c["BLOCK_N"], BLOCK_K=c["BLOCK_K"], GROUP_M=c["GROUP_M"],
                FLATTEN=c["FLATTEN"])
    if c["impl"] == "tma":
        fn = T.bi_matmul_tma_kernel
        sig = {"x_desc": f"tensordesc<{dt}[{c['BLOCK_M']}, {c['BLOCK_K']}]>",
               "w_desc": f"tensordesc<{dt}[{c['BLOCK_N']}, {c['BLOCK_K']}]>",
               "y_desc": f"tensordesc<{dt}[{c['BLOCK_M']}, {c['BLOCK_N']}]>"}
    else:
        fn = T.bi_matmul_ptr_kernel
        sig = {"x_ptr": f"*{dt}", "w_ptr": f"*{dt}", "y_ptr": f"*{dt}"}
    sig.update({"M": "i32", "N": "i32", "K": "i32", "num_programs": "i32"})
    if c["impl"] != "tma":
        sig.update({"stride_xm": "i32", "stride_wn": "i32", "stride_ym": "i32"})
    sig.update({k: "constexpr" for k in meta})
    kernel = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=meta), target=GPUTarget("cuda", arch, 32),
                            options={"num_warps": c["num_warps"], "num_stages": c["num_stages"]})
    ptx = kernel.asm["ptx"]
    return {"shared": kernel.metadata.shared, "wgmma": ptx.count("wgmma.mma_async"),
            "tma": ptx.count("cp.async.bulk.tensor")}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m probes.gemm.compile_check", description=__doc__)
    parser.add_argument("--all", action="store_true", help="every candidate (default: each class's default)")
    parser.add_argument("--arch", type=int, default=90)
    args = parser.parse_args(argv)
    from probes.gemm import triton_matmul as T

    if T.INTERPRETED:
        print("error: TRITON_INTERPRET is set; unset it to compile", file=sys.stderr)
        return 2
    configs = {}
    for cands in list(T.CANDIDATES.values()) + [[T.GENERIC]]:
        for c in (cands if args.all else cands[:1]):
            configs.setdefault(T.config_name(c), c)
    failed = 0
    for name, c in configs.items():
        for dtype in ("bfloat16", "float16"):
            t = time.perf_counter()
            try:
                r = compile_config(c, dtype, args.arch)
                print(f"OK   {name:36s} {dtype:9s} shared={r['shared']:6d} wgmma={r['wgmma']} tma={r['tma']} "
                      f"({time.perf_counter() - t:.1f} s)")
            except Exception as exc:
                failed += 1
                print(f"FAIL {name:36s} {dtype:9s} {type(exc).__name__}: {str(exc)[:300]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
