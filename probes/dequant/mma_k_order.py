"""In which order a Triton mma v2 (``mma.sync.m16n8k16``) dot walks K - the reason a fused dequant
matmul and dequant-then-matmul differ on the GPU.

Triton picks the dot operands' register layout per kernel: ``kWidth`` = contiguous K elements a thread
holds. For 16-bit operands loaded as such, kWidth = 2 (natural: mma instruction r of a 64-wide K tile
takes k = 16r .. 16r+15). When an operand is computed from 8-bit loads (the int4 bytes of the fused
kernel), Triton sets kWidth = 8 so the bytes can be unpacked in wide chunks; the lowering
(``getValuesFromDotOperandLayoutStruct``, "largeK") then feeds mma instruction r of each 64-wide K
tile with k = 8t + 2r + e (hardware k = 2t + e) and 32 + 8t + 2r + e (hardware k = 8 + 2t + e),
t = 0..3, e = 0..1 - a permutation of K, the same for both operands, so exact in real arithmetic but
not in the tensor core's block-FMA chain (numerics.matmul: blocks of 16 products aligned and truncated
together with the accumulator). With wgmma (sm_90, BM >= 64, 4 warps) both operands come from shared
memory and K is walked in order. ``k_order`` gives the order; ``dot_k_widths`` reads kWidth from a
compiled kernel's TTGIR."""
import re

import numpy as np


def tile_order(k_width, bitwidth=16):
    """Logical k (within one kWidth*8-wide K tile) in the order the mma.m16n8k16 chain consumes it:
    entry 16r + h = the k at hardware position h of instruction r."""
    per_reg = 32 // bitwidth                      # elements per 32-bit register (2 for bf16)
    if k_width <= per_reg:
        return np.arange(16)                      # natural layout: one instruction per 16 consecutive k
    span = k_width * 8                            # K covered by one tile of the dot-operand layout
    order = []
    for r in range(k_width // per_reg):           # mma instruction r of the tile
        for half in (0, span // 2):               # hardware k 0..7, then 8..15
            for t in range(4):                    # thread in the quad
                for e in range(per_reg):
                    order.append(half + k_width * t + per_reg * r + e)
    return np.array(order)


def k_order(K, bk, k_width, bitwidth=16):
    """Order of all K products of one output of a kernel walking K in BK-wide tiles (acc = dot(x, w, acc))."""
    t = tile_order(k_width, bitwidth)
    if bk % len(t) or K % bk:
        raise ValueError(f"K={K}, BK={bk} must be multiples of the layout tile ({len(t)})")
    return np.concatenate([k0 + j0 + t for k0 in range(0, K, bk) for j0 in range(0, bk, len(t))])


def dot_k_widths(ttgir):
    """kWidth of every dot operand in a TTGIR text (mma v2 dots), e.g. [8, 8]; [] for wgmma dots."""
    return [int(v) for v in re.findall(r"#ttg\.dot_op<\{opIdx = \d, parent = #mma\d*, kWidth = (\d+)\}>",
                                       "\n".join(l for l in ttgir.splitlines() if "tt.dot " in l))]


def mma_kind(ttgir):
    """'wgmma' (warp_group_dot), 'mma_v2' (tt.dot lowered to mma.sync) or None."""
    if "warp_group_dot" in ttgir:
        return "wgmma"
    return "mma_v2" if "tt.dot " in ttgir else None
