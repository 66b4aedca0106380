"""Compile probes.invariant's kernels for a GPU target without a GPU (Triton's own ptxas), with the
constexprs the wrappers launch them with (`kernel_meta`) for the models' shapes:
`python -m probes.invariant.compile_check [--arch 90]` prints one line per kernel variant (shared memory,
mma.sync / wgmma counts) and exits 1 if any fails to compile or needs more shared memory than an H100 /
H200 block gets. Must run with TRITON_INTERPRET unset (the interpreter replaces the compiler)."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

SHARED_LIMIT = 227 * 1024
#: (name, query heads per kv head, head dim): Mistral-7B, SmolLM2-135M, and kv heads repeated (paged sdpa).
SHAPES = [("mistral", 4, 128), ("smollm2", 3, 64), ("repeated", 1, 128)]
DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
I32 = "i32"


def _compile(fn, signature, meta, arch):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    meta = dict(meta)
    options = {"num_warps": meta.pop("num_warps")}
    sig = {name: "constexpr" if name in meta else signature[name] for name in fn.arg_names}
    kernel = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=meta), target=GPUTarget("cuda", arch, 32),
                            options=options)
    ptx = kernel.asm["ptx"]
    return {"shared": kernel.metadata.shared, "mma_sync": ptx.count("mma.sync"),
            "wgmma": ptx.count("wgmma.mma_async")}


def variants():
    """(label, kernel, signature, meta) of every kernel variant the wrappers launch for SHAPES x DTYPES."""
    attn = importlib.import_module("probes.invariant.attention")   # the package's `attention` is the function
    rows = importlib.import_module("probes.invariant.rows")
    out = []
    for dname, dt in DTYPES.items():
        ptrs = {"q_ptr": f"*{dt}", "k_ptr": f"*{dt}", "v_ptr": f"*{dt}", "start_ptr": "*i32", "end_ptr": "*i32",
                "tile_ptr": "*i32", "m_ptr": "*fp32", "l_ptr": "*fp32", "acc_ptr": "*fp32", "scale": "fp32",
                "o_ptr": f"*{dt}"}
        ints = {n: I32 for n in attn.attn_split_kernel.arg_names + attn.attn_combine_kernel.arg_names
                + attn.attn_tiled_split_kernel.arg_names if n not in ptrs}
        for name, g, d in SHAPES:
            for per_head in (False, True):
                split_meta, combine_meta = attn.kernel_meta(G=g, D=d, per_head=per_head, fp32=dname == "float32")
                label = f"{dname} {name} G={g} D={d}{' per-head mask' if per_head else ''}"
                out.append((f"split   {label}", attn.attn_split_kernel, {**ptrs, **ints}, split_meta))
                tiled_meta = {k: v for k, v in split_meta.items() if k != "GP"}
                for headed in (True, False):      # tile_rows='auto' (tiles per request) and an int tile_rows
                    tiled_meta.update(R=attn.TILE_M // split_meta["HEADS"], TM=attn.TILE_M, HEADED=headed)
                    out.append((f"tiled   {label}{'' if headed else ' fixed tiles'}", attn.attn_tiled_split_kernel,
                                {**ptrs, **ints}, dict(tiled_meta)))
                if not per_head:
                    out.append((f"combine {label}", attn.attn_combine_kernel, {**ptrs, **ints}, combine_meta))
        mask_sig = {"mask_ptr": f"*{dt}", "start_ptr": "*i32", "end_ptr": "*i32", "bad_ptr": "*i32", "fmin": "fp32"}
        mask_sig.update({n: I32 for n in ("Lk", "smb", "smh", "sml", "smk", "Hm", "Lqm")})
        out.append((f"mask    {dname}", attn.mask_interval_kernel, mask_sig,
                    dict(IS_BOOL=False, BLOCK=attn.MASK_BLOCK, num_warps=4)))
        for n in (64, 576, 4096, 49152):
            meta = rows.kernel_meta(n)
            out.append((f"mean    {dname} n={n}", rows.row_mean_kernel,
                        {"x_ptr": f"*{dt}", "out_ptr": f"*{dt}", "n": I32, "n_float": "fp32"}, meta))
            for log in (False, True):
                out.append((f"{'log_sm' if log else 'softmax'} {dname} n={n}", rows.softmax_kernel,
                            {"x_ptr": f"*{dt}", "out_ptr": "*fp32", "n": I32}, {**meta, "LOG": log}))
    mask_sig = {"mask_ptr": "*u8", "start_ptr": "*i32", "end_ptr": "*i32", "bad_ptr": "*i32", "fmin": "fp32"}
    mask_sig.update({n: I32 for n in ("Lk", "smb", "smh", "sml", "smk", "Hm", "Lqm")})
    out.append(("mask    bool", attn.mask_interval_kernel, mask_sig, dict(IS_BOOL=True, BLOCK=attn.MASK_BLOCK,
                                                                           num_warps=4)))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m probes.invariant.compile_check", description=__doc__.split("\n")[0])
    ap.add_argument("--arch", type=int, default=90, help="compute capability as an int (90: H100 / H200)")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("error: unset TRITON_INTERPRET (the interpreter replaces the compiler)", file=sys.stderr)
        return 2
    failed = 0
    for label, fn, sig, meta in variants():
        try:
            info = _compile(fn, sig, meta, args.arch)
        except Exception as exc:  # noqa: BLE001 - reported, counted, exit status 1
            failed += 1
            print(f"FAIL {label}: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")
            continue
        big = info["shared"] > SHARED_LIMIT
        failed += big
        print(f"{'FAIL' if big else 'ok  '} {label:42} shared {info['shared']:6d} B  mma.sync {info['mma_sync']:3d}  "
              f"wgmma {info['wgmma']:3d}")
    print(f"{failed} failed" if failed else "all compiled")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
