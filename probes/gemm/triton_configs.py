"""Configurations of the batch-invariant Triton matmul, the M buckets, and the measured choices.

Why a config may depend on M and the bits still not: on sm_90 every candidate's tl.dot lowers to wgmma
(BLOCK of the instruction's M side >= 64, num_warps a multiple of 4, bf16/fp16 inputs, fp32 accumulator).
One output element is then a chain over k in steps of k16 (one wgmma each), k = 0, 16, 32 ... in order,
starting from 0 and carried in fp32 registers; BLOCK_M / BLOCK_N / BLOCK_K / warps / stages / grouping /
persistence / epilogue subtiling / swapped operands (Y^T = W X^T) / handing the float32 accumulator from one
program to the next mid-chain ('handoff': stored and reloaded exactly, the next k16 step goes on from it)
change which program computes an element and how many k16 steps one loop iteration issues, not that chain.
No split-K: a split-K sum (partial sums added at the end) is another chain. So the configs of different M
buckets are expected to give identical bits, and that expectation is MEASURED, not assumed: the bench compares every candidate's output bits with the anchor config's (ANCHOR,
one config for every M, batch invariant by construction) and only a candidate with identical bits can be
chosen; the GPU tests then check every M of the sweep, across each bucket boundary, bit for bit.

Buckets (`BUCKETS`, `bucket_of`): M <= 16, 17..128, 129..512, 513..2048, > 2048, each measured at one M
(16, 64, 256, 1400, 4096). `CHOICES[(N, K, dtype)]` holds one config per bucket once measured (`choose`,
JSON via save_choices / load_choices / GEMM_TRITON_CHOICES); without a measurement every bucket uses ANCHOR.
"""
from __future__ import annotations

import json
import os

#: (largest M of the bucket or None for no limit, the M the bench measures the bucket at)
BUCKETS = ((16, 16), (128, 64), (512, 256), (2048, 1400), (None, 4096))


def bucket_of(m):
    """Index into BUCKETS of the bucket that holds M (M >= 1)."""
    m = int(m)
    if m < 1:
        raise ValueError(f"M must be >= 1, got {m}")
    for i, (hi, _) in enumerate(BUCKETS):
        if hi is None or m <= hi:
            return i
    raise AssertionError("the last bucket has no upper limit")


def bucket_range(i):
    lo = 1 if i == 0 else BUCKETS[i - 1][0] + 1
    hi = BUCKETS[i][0]
    return f"{lo}-{hi}" if hi is not None else f">={lo}"


def cfg(impl, bm, bn, bk, *, stages=4, warps=8, group_m=8, flatten=True, subtile=False, ws=False, parts=None,
        small=None):
    """impl: 'tma' (Y tile = X tile @ W tile^T), 'swap' (Y^T tile = W tile @ X tile^T: the small M side is
    the instruction's N, for small M), 'handoff' (as 'tma', the last partial wave balanced over every SM by
    handing accumulators on), 'wide' (as 'tma' with a tile of `parts` columns, powers of two each, summing
    to BLOCK_N: 128 + 32 + 16 = 176), 'mixed' (whole waves of BLOCK_M x BLOCK_N tiles, the other columns in
    BLOCK_M x `small` tiles), 'ptr' (pointer loads; any GPU and the interpreter)."""
    c = {"impl": impl, "BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group_m,
         "num_stages": stages, "num_warps": warps, "FLATTEN": flatten, "SUBTILE": subtile, "WS": ws}
    if impl == "wide":
        if not parts or sum(parts) != bn or len(parts) not in (2, 3) or any(p < 16 or p & (p - 1) for p in parts):
            raise ValueError(f"wide config: parts {parts} must be 2 or 3 powers of two >= 16 summing to {bn}")
        c["N_PARTS"] = list(parts)
    if impl == "mixed":
        if not small or small & (small - 1) or not 16 <= small < bn:
            raise ValueError(f"mixed config: small tile width {small} must be a power of two, 16 <= small < {bn}")
        c["N_SMALL"] = small
    return c


def config_name(c):
    parts = f"({'+'.join(map(str, c['N_PARTS']))})" if c.get("N_PARTS") else ""
    parts += f"/{c['N_SMALL']}" if c.get("N_SMALL") else ""
    return (f"{c['impl']}-{c['BLOCK_M']}x{c['BLOCK_N']}{parts}x{c['BLOCK_K']}-g{c['GROUP_M']}-s{c['num_stages']}"
            f"-w{c['num_warps']}{'' if c['FLATTEN'] else '-nf'}{'-sub' if c.get('SUBTILE') else ''}"
            f"{'-ws' if c.get('WS') else ''}")


#: Mistral-7B's linear layers: name -> (N, K) of F.linear(x [M, K], W [N, K]).
MISTRAL_SHAPES = {
    "q_o": (4096, 4096),
    "k_v": (1024, 4096),
    "gate_up": (14336, 4096),
    "down": (4096, 14336),
    "lm_head": (32000, 4096),
}

#: The reference config of the bit check: one config for every M (batch invariant by construction, and bit
#: for bit invariant over the whole sweep in the first H100 run), also the default of every bucket.
ANCHOR = cfg("tma", 128, 128, 64, stages=4, warps=8)

# Shared memory per stage = (BLOCK_M + BLOCK_N) * BLOCK_K * 2 bytes, plus the epilogue tile; the H100 has
# 227 KiB per block. Small M is bound by reading W: many programs, deep pipelines (large BLOCK_K, 5-6
# stages) and, with 'swap', no shared memory wasted on X rows beyond M (the M side is the wgmma N, >= 16).
_SWAP_16 = [cfg("swap", 16, 64, 256, stages=5, warps=4), cfg("swap", 16, 128, 128, stages=5, warps=4),
            cfg("swap", 16, 64, 128, stages=6, warps=4)]
_SWAP_64 = [cfg("swap", 64, 64, 128, stages=5, warps=4), cfg("swap", 32, 64, 256, stages=4, warps=4),
            cfg("swap", 64, 128, 64, stages=4, warps=4)]
_NARROW = [cfg("tma", 64, 32, 256, stages=4, warps=4), cfg("tma", 64, 64, 128, stages=4, warps=4)]
_THIN = cfg("tma", 64, 16, 256, stages=4, warps=4)  # k_v (N = 1024) at small M: 64 programs
_MID = [cfg("tma", 64, 128, 64, stages=4, warps=4), cfg("tma", 64, 128, 128, stages=4, warps=4),
        cfg("tma", 128, 64, 128, stages=4, warps=4)]
_BIG = [ANCHOR, cfg("tma", 128, 128, 64, stages=5, subtile=True),
        cfg("tma", 128, 256, 64, stages=3), cfg("tma", 128, 256, 64, stages=4, subtile=True),
        cfg("tma", 128, 256, 64, stages=3, group_m=16)]
# tl.range(..., warp_specialize=True) on sm_90 in Triton 3.6 (its docstring: Blackwell only): with 8 warps
# the loop compiles unpartitioned (no setmaxnreg in the PTX), with 4 warps the NVGPUWarpSpecialization pass
# fails; so no -ws candidate (the kernel keeps the WS switch), flatten off instead.
_NOFLAT = [cfg("tma", 128, 256, 64, stages=3, flatten=False), cfg("tma", 128, 128, 64, stages=4, flatten=False)]
# 128x128 tiles deeper (M = 1400: 3 waves of 128x128 beat 2 of 128x256 on 132 SMs).
_DEEP128 = [cfg("tma", 128, 128, 64, stages=6, subtile=True), cfg("tma", 128, 128, 128, stages=3, subtile=True)]

# 'handoff': whole waves round robin, the last partial wave balanced over all SMs by handing a tile's float32
# accumulator from one program to the next mid-chain (bi_matmul_handoff_kernel; one k chain, not split-K).
# It fills the SMs where whole tiles cannot: M = 1400 gives 176 tiles of 128x256 (1.33 waves), 176 of 128x64
# for k_v. Measured on the H100 it wins only down at M = 1400 (docs/results/h100-2026-11-23, README).
_HANDOFF = [cfg("handoff", 128, 256, 64, stages=3), cfg("handoff", 128, 256, 64, stages=4, subtile=True),
            cfg("handoff", 128, 128, 64, stages=4), cfg("handoff", 128, 64, 128, stages=4, warps=4),
            cfg("handoff", 64, 128, 128, stages=4, warps=4)]
# More pipeline depth for the small-M buckets, where reading W bounds the time.
_DEEP = [cfg("swap", 32, 64, 128, stages=8, warps=4), cfg("swap", 64, 64, 64, stages=8, warps=4),
         cfg("tma", 128, 64, 64, stages=6, warps=4), cfg("tma", 128, 64, 128, stages=4, warps=8)]

# 'wide': a tile of power-of-two parts whose sum fills the SMs in whole waves where no power of two does:
# 176 = 128 + 32 + 16 at M = 1400, N = 4096 (11 x 24 = 264 tiles = 2 waves; cuBLAS's own tile there),
# 96 = 64 + 32 for k_v (11 x 11 = 121 tiles, one wave), 224 = 128 + 64 + 32 for gate_up at M = 256
# (2 x 64 = 128 tiles) and lm_head at M = 1400 (11 x 143 = 1573 tiles = 11.9 waves).
# Not flattened: with several accumulators zeroed inside a flattened tile loop ptxas serialises the wgmmas
# (its warning C7515; measured at half the speed), which compile_check refuses. Measured slower than the
# power-of-two tiles everywhere (the narrow n16 / n32 wgmmas), kept so that the bench keeps showing it.
_WIDE = [cfg("wide", 128, 176, 64, stages=4, flatten=False, parts=(128, 32, 16)),
         cfg("wide", 128, 176, 64, stages=3, flatten=False, parts=(128, 32, 16)),
         cfg("wide", 128, 96, 64, stages=5, flatten=False, parts=(64, 32)),
         cfg("wide", 128, 96, 128, stages=3, warps=4, flatten=False, parts=(64, 32)),
         cfg("wide", 128, 224, 64, stages=3, flatten=False, parts=(128, 64, 32))]

# 'mixed': whole waves of 128x256 tiles, the remaining columns in 128x128 (or 128x64) tiles: at M = 1400,
# N = 4096, one wave of 132 big tiles then 88 small ones, about one big plus one small tile per SM instead
# of two big (1.33 waves) or three small.
_MIXED = [cfg("mixed", 128, 256, 64, stages=4, subtile=True, small=128),
          cfg("mixed", 128, 256, 64, stages=3, small=128), cfg("mixed", 128, 256, 64, stages=4, subtile=True, small=64)]

#: Candidates per bucket (same list for every shape class; the bench measures each at the bucket's M).
BUCKET_CANDIDATES = (
    _SWAP_16 + _NARROW + [_THIN],                                  # M <= 16
    _SWAP_64 + _DEEP[:2] + _NARROW + [_THIN, _MID[0], ANCHOR],     # 17..128
    _NARROW + _MID + [ANCHOR, _BIG[2], _BIG[3]] + _DEEP[2:] + _HANDOFF[3:4] + _WIDE[4:],  # 129..512
    [_NARROW[1], _MID[0], _MID[2]] + _BIG[:4] + _NOFLAT + _DEEP128 + _HANDOFF + _WIDE + _MIXED,  # 513..2048
    _BIG + _NOFLAT,                                                # > 2048
)


def candidates(n, k, m):
    """The candidates the bench measures for shape class (N, K) at M."""
    return list(BUCKET_CANDIDATES[bucket_of(m)])


def all_candidates():
    seen = {}
    for cs in BUCKET_CANDIDATES:
        for c in cs:
            seen.setdefault(config_name(c), c)
    return list(seen.values())


#: Small tiles for the interpreter (CPU): one config for every M.
INTERPRETER_CONFIG = cfg("ptr", 16, 16, 16, group_m=2, stages=1, warps=1)

#: Chosen config per bucket of shape class (N, K, dtype): {(N, K, dtype): [config of bucket 0, 1, ...]}.
CHOICES: dict = {}


def config_by_name(name):
    for c in [ANCHOR, INTERPRETER_CONFIG] + all_candidates():
        if config_name(c) == name:
            return c
    raise KeyError(f"no Triton matmul config named {name!r}")


def _dtype_key(dtype):
    return str(dtype).replace("torch.", "")


def config_for(n, k, dtype, m, device_type="cuda", interpreted=False):
    """The kernel config for shape class (N, K, dtype) at M: the measured choice of M's bucket; a dtype
    without its own measurement borrows bfloat16's (same kernels); else ANCHOR for every M."""
    if device_type == "cpu" or interpreted:
        return INTERPRETER_CONFIG
    key = (int(n), int(k), _dtype_key(dtype))
    table = CHOICES.get(key) or CHOICES.get((int(n), int(k), "bfloat16"))
    if table:
        return table[bucket_of(m)]
    return ANCHOR


def save_choices(path):
    rows = [{"N": n, "K": k, "dtype": d,
             "buckets": [{"bucket": bucket_range(i), "max_m": BUCKETS[i][0], "name": config_name(c), "config": c}
                         for i, c in enumerate(cs)]} for (n, k, d), cs in CHOICES.items()]
    with open(path, "w") as f:
        json.dump(rows, f, indent=1)


def load_choices(path):
    """Read a file written by `save_choices`; the bucket limits must be this module's BUCKETS."""
    with open(path) as f:
        rows = json.load(f)
    for row in rows:
        bs = row["buckets"]
        if [b["max_m"] for b in bs] != [hi for hi, _ in BUCKETS]:
            raise ValueError(f"{path}: bucket limits {[b['max_m'] for b in bs]} are not {[hi for hi, _ in BUCKETS]}")
        CHOICES[(int(row["N"]), int(row["K"]), row["dtype"])] = [b["config"] for b in bs]


if os.environ.get("GEMM_TRITON_CHOICES"):
    load_choices(os.environ["GEMM_TRITON_CHOICES"])
