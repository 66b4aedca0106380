"""Compile every Triton dequant kernel to PTX for sm_90 without a GPU (frontend + ptxas check).
Run: python -m probes.dequant.ptx_check"""
import sys
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from probes.dequant import triton_dequant as td, triton_fused as tf
tgt = GPUTarget("cuda", 90, 32)
def comp(fn, sig, consts, name):
    try:
        k = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts), target=tgt)
        print("OK", name, len(k.asm["ptx"]))
        return k
    except Exception as e:
        print("FAIL", name, type(e).__name__, str(e)[:1500])
for F in (0,1,2):
  for C16 in (False, True):
    for ob in ("bf16","fp16","fp32"):
      od = {"bf16": tl.bfloat16, "fp16": tl.float16, "fp32": tl.float32}[ob]
      sig = {"packed_ptr":"*u8","scales_ptr":"*fp16","zeros_ptr":"*fp16","out_ptr":"*"+ob,"total_bytes":"i32","half_k":"i32","groups":"i32","group":"i32","symmetric":"i32",
             "FORMULA":"constexpr","COMPUTE16":"constexpr","OUT_DTYPE":"constexpr","OUT_BF16":"constexpr","INTERP":"constexpr","BLOCK":"constexpr"}
      k = comp(td.dequant_int4_kernel, sig, {"FORMULA":F,"COMPUTE16":C16,"OUT_DTYPE":od,"OUT_BF16":ob=="bf16","INTERP":False,"BLOCK":1024}, f"int4 {F} {C16} {ob}")
      if F == 1 and not C16 and ob == "fp32" and k:
          ptx = k.asm["ptx"]; print("   mul_sub f32: fma in ptx:", "fma.rn.f32" in ptx, "mul.rn.f32:", ptx.count("mul.rn.f32"), "sub.rn.f32:", ptx.count("sub.rn.f32"))
      if F == 2 and not C16 and ob == "fp32" and k:
          ptx = k.asm["ptx"]; print("   fma f32: fma in ptx:", ptx.count("fma.rn.f32"))
for q41 in (False, True):
    comp(td.dequant_q4_kernel, {"blocks_ptr":"*u8","out_ptr":"*fp32","n_blocks":"i32","Q4_1":"constexpr","WIDTH":"constexpr","FIRST":"constexpr","INTERP":"constexpr","BLOCKS":"constexpr"},
         {"Q4_1":q41,"WIDTH":20 if q41 else 18,"FIRST":4 if q41 else 2,"INTERP":False,"BLOCKS":128}, f"q4 {q41}")
for e5 in (False, True):
  for of in (False, True):
    comp(td.dequant_fp8_kernel, {"q_ptr":"*u8","scales_ptr":"*fp32","out_ptr":"*fp32" if of else "*bf16","total":"i32","k":"i32","blocks_per_row":"i32","scaling":"i32","via_bf16":"i32","E5M2":"constexpr","OUT_F32":"constexpr","INTERP":"constexpr","BLOCK":"constexpr"},
         {"E5M2":e5,"OUT_F32":of,"INTERP":False,"BLOCK":2048}, f"fp8 {e5} {of}")
for fused in (True, False):
  for F in (0, 2):
    for C16 in (False, True):
      comp(tf.fused_int4_matmul_kernel, {"x_ptr":"*bf16","w_ptr":"*u8" if fused else "*bf16","s_ptr":"*fp16" if fused else "*bf16","z_ptr":"*fp16" if fused else "*bf16","y_ptr":"*fp32","M":"i32","N":"i32","K":"i32","GROUP":"i32",
         "FORMULA":"constexpr","COMPUTE16":"constexpr","SYMMETRIC":"constexpr","FUSED":"constexpr","INTERP":"constexpr","BM":"constexpr","BN":"constexpr","BK":"constexpr"},
         {"FORMULA":F,"COMPUTE16":C16,"SYMMETRIC":False,"FUSED":fused,"INTERP":False,"BM":16,"BN":64,"BK":64}, f"fused {fused} {F} {C16}")
