"""Compile the Triton dequant kernels to PTX for sm_90 without a GPU (Triton frontend + ptxas), so a
kernel that would not compile on the GPU machine fails here first. Also shows that the float32 formula
ops are the explicit .rn instructions (libdevice links them flush-to-zero: .ftz, see triton_dequant).
Run: python -m probes.dequant.ptx_check"""
import re
import sys
from collections import Counter

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from probes.dequant import triton_dequant as td
from probes.dequant import triton_fused as tf

TARGET = GPUTarget("cuda", 90, 32)
_INT4_SIG = {"packed_ptr": "*u8", "scales_ptr": "*fp16", "zeros_ptr": "*fp16", "n_chunks": "i32",
             "chunks_per_group": "i32", "symmetric": "i32"}
_DT = {"bf16": tl.bfloat16, "fp16": tl.float16, "fp32": tl.float32}


def ptx(fn, sig, consts, stage="ptx"):
    """PTX of fn for sm_90; pointers marked 16-byte aligned, as Triton specialises them at launch (torch
    allocations are), so the vector widths match the GPU run."""
    aligned = {(fn.arg_names.index(k),): [["tt.divisibility", 16]] for k, v in sig.items() if v.startswith("*")}
    sig = {**sig, **{k: "constexpr" for k in consts}}
    return triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=aligned), target=TARGET).asm[stage]


def int4(formula, compute16, out):
    sig = {**_INT4_SIG, "out_ptr": "*" + out}
    sig = {k: sig[k] for k in ("packed_ptr", "scales_ptr", "zeros_ptr", "out_ptr", "n_chunks", "chunks_per_group",
                               "symmetric")}
    return ptx(td.dequant_int4_kernel, sig, {"FORMULA": formula, "COMPUTE16": compute16, "OUT_DTYPE": _DT[out],
                                             "OUT_BF16": out == "bf16", "INTERP": False, "CHUNKS": 256})


def q4(q41):
    return ptx(td.dequant_q4_kernel, {"blocks_ptr": "*u8", "out_ptr": "*fp32", "n_blocks": "i32"},
               {"Q4_1": q41, "WIDTH": 20 if q41 else 18, "FIRST": 4 if q41 else 2, "INTERP": False, "BLOCKS": 128})


def fp8(e5m2, out_f32):
    return ptx(td.dequant_fp8_kernel, {"q_ptr": "*u8", "scales_ptr": "*fp32", "out_ptr": "*fp32" if out_f32 else "*bf16",
                                       "total": "i32", "k": "i32", "blocks_per_row": "i32", "scaling": "i32",
                                       "via_bf16": "i32"},
               {"E5M2": e5m2, "OUT_F32": out_f32, "INTERP": False, "BLOCK": 2048})


def fused(is_fused, formula, compute16, bm=16, stage="ptx"):
    w = "*u8" if is_fused else "*bf16"
    s = "*fp16" if is_fused else "*bf16"
    return ptx(tf.fused_int4_matmul_kernel, {"x_ptr": "*bf16", "w_ptr": w, "s_ptr": s, "z_ptr": s, "y_ptr": "*fp32",
                                             "t_ptr": "*fp32", "M": "i32", "N": "i32", "K": "i32", "GROUP": "i32"},
               {"FORMULA": formula, "COMPUTE16": compute16, "SYMMETRIC": False, "FUSED": is_fused, "INTERP": False,
                "BM": bm, "BN": 64, "BK": 64, "TILE_OUT": False}, stage=stage)


def f32_ops(text):
    return Counter(re.findall(r"\b(?:mul|sub|add|fma)\.[a-z0-9.]*f32\b", text))


def cases():
    for f in (0, 1, 2):
        for c16 in (False, True):
            for out in ("bf16", "fp16", "fp32"):
                yield f"int4 formula={f} compute16={c16} out={out}", lambda f=f, c16=c16, out=out: int4(f, c16, out)
    for q41 in (False, True):
        yield f"q4 Q4_1={q41}", lambda q41=q41: q4(q41)
    for e5 in (False, True):
        for of in (False, True):
            yield f"fp8 e5m2={e5} out_f32={of}", lambda e5=e5, of=of: fp8(e5, of)
    for is_fused in (True, False):
        for f in (0, 2):
            for c16 in (False, True):
                yield (f"matmul fused={is_fused} formula={f} compute16={c16}",
                       lambda is_fused=is_fused, f=f, c16=c16: fused(is_fused, f, c16))


def quick_cases():
    """One of each kernel, for the CPU test suite."""
    yield "int4 mul_sub f32", lambda: int4(1, False, "fp32")
    yield "int4 fma f32 -> bf16", lambda: int4(2, False, "bf16")
    yield "q4 Q4_1", lambda: q4(True)
    yield "fp8 e4m3", lambda: fp8(False, False)
    yield "matmul fused fp16 sub_mul", lambda: fused(True, 0, True)


def dots():
    """The fused / unfused matmul's dot as compiled for sm_90: instruction kind and operand kWidths."""
    from probes.dequant.mma_k_order import dot_k_widths, mma_kind

    for bm in (16, 64):
        for is_fused in (True, False):
            ttgir = fused(is_fused, 0, False, bm=bm, stage="ttgir")
            print(f"DOT fused={is_fused} bm={bm}: {mma_kind(ttgir)} {dot_k_widths(ttgir)}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "--dots" in argv:
        dots()
        return 0
    bad = 0
    for name, make in (quick_cases() if "--quick" in argv else cases()):
        try:
            text = make()
            print(f"OK   {name}: {dict(f32_ops(text))}")
        except Exception as exc:  # report every kernel, then fail
            bad += 1
            print(f"FAIL {name}: {type(exc).__name__}: {str(exc)[:1500]}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
