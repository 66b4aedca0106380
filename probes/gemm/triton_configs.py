"""Configurations of the batch-invariant Triton matmul, the M buckets, and the measured choices.

Why a config may depend on M and the bits still not: on sm_90 every candidate's tl.dot lowers to wgmma
(BLOCK of the instruction's M side >= 64, num_warps a multiple of 4, bf16/fp16 inputs, fp32 accumulator).
One output element is then a chain over k in steps of k16 (one wgmma each), k = 0, 16, 32 ... in order,
starting from 0 and carried in fp32 registers; BLOCK_M / BLOCK_N / BLOCK_K / warps / stages / grouping /
persistence / epilogue subtiling / swapped operands (Y^T = W X^T) / handing the float32 accumulator from one
program to the next mid-chain ('handoff': stored and reloaded exactly, the next k16 step goes on from it)
change which program computes an element and how many k16 steps one loop iteration issues, not that chain.
A split-K sum (partial sums added at the end) is another chain: so a config's SPLIT_K (the number of K
slices, `triton_splitk`) is its bit class, and one shape's table has ONE split count for all its buckets
(`check_table` refuses a mix): a split fixed by (N, K), never by M. Within a class the configs of
different M buckets are expected to give identical bits, and that expectation is MEASURED, not assumed: the
bench compares every candidate's output bits with its class's anchor config's (`anchor_for(split)`: ANCHOR,
or ANCHOR's tiles with the split summed in one program), one config for every M, batch invariant by
construction, and only a candidate with identical bits can be chosen; the GPU tests then check every M of
the sweep, across each bucket boundary, bit for bit.

Buckets (`BUCKETS`, `bucket_of`): M <= 8 (decode), 9..16, 17..32, 33..64, 65..128, 129..256, 257..512,
513..1024, 1025..1536, 1537..2048, > 2048, each measured at one M (1, 16, 32, 64, 128, 256, 512, 1024, 1400,
2048, 4096). `CHOICES[(N, K, dtype)]` holds one config per bucket: the tables set explicitly (`choose`,
`load_choices`, the file named by GEMM_TRITON_CHOICES, which replaces the shipped tables). Otherwise the
tables measured on this GPU ship with the package (`choices/*.json`, `SHIPPED`, picked by the GPU's name
and compute capability as probes.device's fingerprint gives them, `select_shipped`): a GPU without its own
measurement takes its compute capability's default (sm_90: the H200's tables), any other GPU ANCHOR for
every M; `ACTIVE` says which, and the probes' reports record it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

#: (largest M of the bucket or None for no limit, the M the bench measures the bucket at)
BUCKETS = ((8, 1), (16, 16), (32, 32), (64, 64), (128, 128), (256, 256), (512, 512), (1024, 1024), (1536, 1400),
           (2048, 2048), (None, 4096))


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


#: Slice boundaries of a split-K config are multiples of this many k (triton_splitk.SPLIT_ALIGN).
SPLIT_ALIGN = 256


def cfg(impl, bm, bn, bk, *, stages=4, warps=8, group_m=8, flatten=True, subtile=False, ws=False, parts=None,
        small=None, split=1, inline=False):
    """impl: 'tma' (Y tile = X tile @ W tile^T), 'swap' (Y^T tile = W tile @ X tile^T: the small M side is
    the instruction's N, for small M), 'handoff' (as 'tma', the last partial wave balanced over every SM by
    handing accumulators on), 'wide' (as 'tma' with a tile of `parts` columns, powers of two each, summing
    to BLOCK_N: 128 + 32 + 16 = 176), 'mixed' (whole waves of BLOCK_M x BLOCK_N tiles, the other columns in
    BLOCK_M x `small` tiles), 'ptr' (pointer loads; any GPU and the interpreter).
    split > 1 ('tma', 'swap', 'ptr'): K in `split` slices summed apart and added in slice order
    (triton_splitk), by one program per tile (inline) or by a team of `split` programs per tile (the
    nested-loop fusion of Triton 3.6 fails on that kernel's combine branch: not flattened)."""
    c = {"impl": impl, "BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group_m,
         "num_stages": stages, "num_warps": warps, "FLATTEN": flatten, "SUBTILE": subtile, "WS": ws}
    if split != 1:
        if impl not in ("tma", "swap", "ptr") or not isinstance(split, int) or split < 2:
            raise ValueError(f"split-K config: split {split!r} must be an integer >= 2 with impl tma, swap or ptr, "
                             f"not {impl!r}")
        if SPLIT_ALIGN % bk:
            raise ValueError(f"split-K config: BLOCK_K {bk} must divide the slice alignment {SPLIT_ALIGN}")
        if flatten and not inline:
            raise ValueError("split-K config: the parallel split kernel cannot be flattened (flatten=False)")
        c["SPLIT_K"] = split
        c["SPLIT_INLINE"] = bool(inline)
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
    split = f"-k{c['SPLIT_K']}{'i' if c.get('SPLIT_INLINE') else ''}" if split_of(c) > 1 else ""
    return (f"{c['impl']}-{c['BLOCK_M']}x{c['BLOCK_N']}{parts}x{c['BLOCK_K']}-g{c['GROUP_M']}-s{c['num_stages']}"
            f"-w{c['num_warps']}{'' if c['FLATTEN'] else '-nf'}{'-sub' if c.get('SUBTILE') else ''}"
            f"{'-ws' if c.get('WS') else ''}{split}")


def split_of(c):
    """A config's bit class: its number of K slices (1: one chain per element)."""
    return int(c.get("SPLIT_K", 1))


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

#: Candidates per bucket of the one-chain class (the same list for every shape; the bench measures each at the
#: bucket's M). Trimmed to the configs that won or came close on the H100 and H200 (docs/results) and their
#: neighbours: a tuning run compiles each once.
BUCKET_CANDIDATES = (
    _SWAP_16 + [_THIN],                                                                   # M <= 8 (at 1)
    _SWAP_16 + [_THIN] + _NARROW[:1],                                                     # 9..16
    [_SWAP_64[1], _DEEP[0], _SWAP_64[0], _NARROW[0], _THIN],                              # 17..32
    _SWAP_64 + _DEEP[:2] + _NARROW + [_THIN, _MID[0], ANCHOR],                            # 33..64
    _SWAP_64[:1] + _NARROW + [_MID[0], _MID[2], ANCHOR] + _DEEP[2:],                      # 65..128
    _NARROW + _MID + [ANCHOR, _BIG[2], _BIG[3]] + _DEEP[2:] + _HANDOFF[3:4],              # 129..256
    _NARROW[1:] + _MID + _BIG[:4] + _DEEP[2:] + _DEEP128[:1],                             # 257..512
    [_MID[0], _MID[2]] + _BIG[:4] + _DEEP128 + _HANDOFF[:3],                              # 513..1024
    [_NARROW[1], _MID[0], _MID[2]] + _BIG[:4] + _NOFLAT + _DEEP128 + _HANDOFF + _WIDE + _MIXED,  # 1025..1536
    _BIG + _NOFLAT + _DEEP128 + _HANDOFF[:2] + _MIXED[:1],                                # 1537..2048
    _BIG + _NOFLAT,                                                                       # > 2048
)


def _split_candidates(split):
    """Candidates of the split-K class `split`, per bucket: a team of `split` programs per tile where M leaves
    SMs idle (small M: more programs streaming W; q_o and k_v at M = 1400: 11 row tiles x 16 (or 8) column
    tiles x 3 slices = 4 (2) whole waves on 132 SMs), one program summing the slices where M fills the GPU
    (two float32 tiles in registers: 128x128 at most, 128x256 spills)."""
    def par(impl, bm, bn, bk, **kw):
        return cfg(impl, bm, bn, bk, flatten=False, split=split, **kw)

    def inl(bm, bn, bk, **kw):
        return cfg("tma", bm, bn, bk, split=split, inline=True, **kw)

    small = [par("swap", 16, 64, 256, stages=5, warps=4), par("swap", 16, 64, 128, stages=6, warps=4),
             par("swap", 16, 128, 128, stages=5, warps=4), par("tma", 64, 16, 256, stages=4, warps=4)]
    mid = [par("swap", 32, 64, 256, stages=4, warps=4), par("swap", 64, 64, 128, stages=5, warps=4),
           par("tma", 64, 32, 256, stages=4, warps=4), par("tma", 64, 64, 128, stages=4, warps=4)]
    medium = [par("tma", 64, 128, 64, stages=4, warps=4), par("tma", 128, 64, 128, stages=4, warps=4),
              par("tma", 64, 128, 128, stages=4, warps=4), par("tma", 128, 128, 64, stages=4)]
    big = [par("tma", 128, 128, 64, stages=6, subtile=True), par("tma", 128, 128, 64, stages=4),
           par("tma", 128, 256, 64, stages=3, subtile=True), par("tma", 128, 256, 64, stages=4, subtile=True)]
    inline = [inl(128, 128, 64, stages=4), inl(128, 128, 64, stages=5, subtile=True),
              inl(128, 128, 64, stages=6, subtile=True)]
    return (small, small, mid[:1] + mid[2:] + small[:1], mid, mid[1:] + medium[:2], medium,
            medium[2:3] + big[:2], big + inline[1:2], big + inline[1:2], big[::2] + inline[:2], big[2:] + inline)


#: Split counts the tuner tries per shape class (N, K) besides 1 (the others: 1 only). 3 = 132 / 44: with
#: M = 1400 (11 row tiles of 128) it makes whole waves of q_o's 128x256 tiles, k_v's 128x128 tiles and
#: down's 128x256 tiles on 132 SMs (stop 12's two misses).
SPLIT_TRIALS = {(4096, 4096): (3,), (1024, 4096): (3,), (4096, 14336): (3,)}


def split_trials(n, k):
    """The split classes the tuner measures for (N, K): 1 and SPLIT_TRIALS'."""
    return (1,) + tuple(SPLIT_TRIALS.get((int(n), int(k)), ()))


def candidates(n, k, m, split=1):
    """The candidates the bench measures for shape class (N, K) at M in split class `split`."""
    if split == 1:
        return list(BUCKET_CANDIDATES[bucket_of(m)])
    return list(_split_candidates(split)[bucket_of(m)])


def anchor_for(split):
    """The bit reference of a split class: ANCHOR (one chain), or ANCHOR's tiles with the split summed by one
    program (a config for every M: batch invariant by construction)."""
    return ANCHOR if split == 1 else cfg("tma", 128, 128, 64, stages=4, warps=8, split=split, inline=True)


def all_candidates(splits=None):
    """Every candidate of the split classes `splits` (default: 1 and every SPLIT_TRIALS count), anchors too."""
    splits = splits or sorted({1, *(s for v in SPLIT_TRIALS.values() for s in v)})
    seen = {}
    for split in splits:
        for cs in (BUCKET_CANDIDATES if split == 1 else _split_candidates(split)):
            for c in cs:
                seen.setdefault(config_name(c), c)
        seen.setdefault(config_name(anchor_for(split)), anchor_for(split))
    return list(seen.values())


#: Small tiles for the interpreter (CPU): one config for every M.
INTERPRETER_CONFIG = cfg("ptr", 16, 16, 16, group_m=2, stages=1, warps=1)

#: Tables set explicitly (bench `choose`, `load_choices`, GEMM_TRITON_CHOICES): {(N, K, dtype): [config per bucket]}.
CHOICES: dict = {}
#: The shipped tables of this GPU (`use_gpu_tables`), used where CHOICES has none.
SHIPPED: dict = {}
#: Which tables are in use: None until decided (`use_gpu_tables`), then {"source", "file", "gpu", "reason", ...}.
ACTIVE = None
#: Folder of the measured tables shipped with the package (package data: probes/gemm/choices/*.json).
CHOICES_DIR = Path(__file__).with_name("choices")
#: Compute capability -> shipped file used by a GPU of that capability that has no table of its own.
DEFAULT_BY_CC = {"9.0": "h200.json"}
ENV_VAR = "GEMM_TRITON_CHOICES"
FILE_FORMAT = "driftscope-triton-choices/2"


def config_by_name(name):
    for c in [ANCHOR, INTERPRETER_CONFIG] + all_candidates():
        if config_name(c) == name:
            return c
    raise KeyError(f"no Triton matmul config named {name!r}")


def _dtype_key(dtype):
    return str(dtype).replace("torch.", "")


def config_for(n, k, dtype, m, device_type="cuda", interpreted=False):
    """The kernel config for shape class (N, K, dtype) at M: the table of M's bucket (CHOICES, else SHIPPED);
    a dtype without its own table borrows bfloat16's (same kernels); else ANCHOR for every M."""
    if device_type == "cpu" or interpreted:
        return INTERPRETER_CONFIG
    key, bf16 = (int(n), int(k), _dtype_key(dtype)), (int(n), int(k), "bfloat16")
    table = CHOICES.get(key) or CHOICES.get(bf16) or SHIPPED.get(key) or SHIPPED.get(bf16)
    if table:
        return table[bucket_of(m)]
    return ANCHOR


def check_table(configs, where="table"):
    """A table is one config per bucket, all of one split class (else the bits would change with M)."""
    if len(configs) != len(BUCKETS):
        raise ValueError(f"{where}: {len(configs)} configs for {len(BUCKETS)} buckets")
    splits = sorted({split_of(c) for c in configs})
    if len(splits) != 1:
        raise ValueError(f"{where}: mixes split counts {splits} over its buckets (a split must not depend on M)")
    return configs


def remap(configs, limits):
    """A table written for other bucket limits (e.g. the 5 buckets of the first runs), on BUCKETS: each
    bucket takes the config of the old bucket that holds its measurement M. Bit-safe: the configs of one
    table share one split class, so any of them gives the same bits."""
    if len(configs) != len(limits) or limits[-1] is not None:
        raise ValueError(f"bucket limits {limits} do not fit {len(configs)} configs (the last must be None)")
    out = []
    for _, at in BUCKETS:
        out.append(configs[next(i for i, hi in enumerate(limits) if hi is None or at <= hi)])
    return out


def save_choices(path, tables=None, *, gpu=None, note=None, measured=None):
    """Write tables ({(N, K, dtype): configs}; default CHOICES) as a choices file. gpu: {name,
    compute_capability} of the GPU they were measured on; measured: {(N, K, dtype): [per-bucket dict of
    measurements]} (optional, kept beside each bucket's config)."""
    tables = CHOICES if tables is None else tables
    rows = []
    for (n, k, d), cs in tables.items():
        check_table(cs, f"N={n} K={k} {d}")
        extra = (measured or {}).get((n, k, d)) or [{}] * len(cs)
        rows.append({"N": n, "K": k, "dtype": d, "split_k": split_of(cs[0]),
                     "buckets": [dict(e, bucket=bucket_range(i), max_m=BUCKETS[i][0], measured_at_m=e.get(
                         "measured_at_m", BUCKETS[i][1]), name=config_name(c), config=c)
                                 for i, (c, e) in enumerate(zip(cs, extra))]})
    doc = {"format": FILE_FORMAT, "gpu": gpu or {}, "note": note or "", "buckets": [list(b) for b in BUCKETS],
           "rows": rows}
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)


def read_choices(path):
    """({(N, K, dtype): configs on BUCKETS}, header) from a choices file: the current format, or a list of
    rows as the first runs wrote (remapped when its bucket limits are not BUCKETS; the header says so)."""
    with open(path) as f:
        doc = json.load(f)
    rows = doc["rows"] if isinstance(doc, dict) else doc
    header = {k: v for k, v in doc.items() if k != "rows"} if isinstance(doc, dict) else {"format": "rows (v1)"}
    tables, remapped = {}, set()
    for row in rows:
        where = f"{path}: N={row['N']} K={row['K']} {row['dtype']}"
        bs = row["buckets"]
        limits = [b["max_m"] for b in bs]
        configs = [b["config"] for b in bs]
        if limits != [hi for hi, _ in BUCKETS]:
            try:
                configs = remap(configs, limits)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            remapped.add(tuple(limits))
        check_table(configs, where)
        if "split_k" in row and row["split_k"] != split_of(configs[0]):
            raise ValueError(f"{where}: split_k {row['split_k']} but the configs have {split_of(configs[0])}")
        tables[(int(row["N"]), int(row["K"]), row["dtype"])] = configs
    header["remapped_from"] = sorted(remapped, key=len) if remapped else None
    return tables, header


def load_choices(path):
    """Read a choices file (`read_choices`) into CHOICES; returns its header."""
    tables, header = read_choices(path)
    CHOICES.update(tables)
    return header


def shipped_files():
    """{file name: gpu header} of the tables shipped in CHOICES_DIR."""
    out = {}
    for p in sorted(CHOICES_DIR.glob("*.json")):
        with open(p) as f:
            doc = json.load(f)
        out[p.name] = doc.get("gpu", {}) if isinstance(doc, dict) else {}
    return out


def select_shipped(name, compute_capability):
    """(file name or None, kind, reason): the shipped table for a GPU of this name and compute capability
    (as probes.device's fingerprint gives them: 'NVIDIA H200', '9.0'): its own measurement, else its compute
    capability's default (DEFAULT_BY_CC), else none (ANCHOR for every M)."""
    files = shipped_files()
    for fname, gpu in files.items():
        if name and gpu.get("name") == name:
            return fname, "measured", f"measured on this GPU ({name})"
    cc = str(compute_capability) if compute_capability is not None else None
    default = DEFAULT_BY_CC.get(cc)
    if default in files:
        return default, "default", (f"no table measured on {name or 'this GPU'}: the sm_{cc.replace('.', '')} "
                                    f"default, measured on {files[default].get('name')}")
    return None, "none", (f"no table measured on {name or 'this GPU'} (compute capability {cc}) and no default "
                          f"for it: ANCHOR ({config_name(ANCHOR)}) for every M")


def use_gpu_tables(name, compute_capability):
    """Decide once per process which tables serve this GPU: GEMM_TRITON_CHOICES (loaded at import) when set,
    else the shipped table `select_shipped` picks (loaded into SHIPPED). Returns ACTIVE."""
    global ACTIVE
    if ACTIVE is not None:
        return ACTIVE
    if os.environ.get(ENV_VAR):
        ACTIVE = {"source": ENV_VAR, "file": os.environ[ENV_VAR], "kind": "override", "gpu": name,
                  "compute_capability": compute_capability,
                  "reason": f"{ENV_VAR} names the tables (the shipped ones are not used)"}
        return ACTIVE
    fname, kind, reason = select_shipped(name, compute_capability)
    ACTIVE = {"source": "shipped" if fname else "none", "file": fname, "kind": kind, "gpu": name,
              "compute_capability": compute_capability, "reason": reason}
    if fname:
        tables, header = read_choices(CHOICES_DIR / fname)
        SHIPPED.clear()
        SHIPPED.update(tables)
        ACTIVE["measured_on"] = header.get("gpu")
        ACTIVE["remapped_from"] = header.get("remapped_from")
    return ACTIVE


def table_status(gpu, device="cuda"):
    """What a report records about the tables: ACTIVE for this GPU (a fingerprint's "gpu" entry: name,
    compute_capability) and the config names per bucket of every table in use."""
    if device == "cpu" or not gpu:
        return {"source": "interpreter", "kind": "cpu", "reason": f"no GPU: {config_name(INTERPRETER_CONFIG)} "
                "in Triton's interpreter for every M"}
    status = dict(use_gpu_tables(gpu.get("name"), gpu.get("compute_capability")))
    tables = dict(SHIPPED)
    tables.update(CHOICES)
    status["tables"] = {f"N={n},K={k},{d}": [config_name(c) for c in cs] for (n, k, d), cs in tables.items()}
    return status


def reset_tables():
    """Forget the decision of use_gpu_tables and the shipped tables (tests; a new GPU)."""
    global ACTIVE
    ACTIVE = None
    SHIPPED.clear()


if os.environ.get(ENV_VAR):
    load_choices(os.environ[ENV_VAR])
