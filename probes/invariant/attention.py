"""Batch-invariant attention in Triton, with torch SDPA's layout and semantics, for prefill and decode over
a packed (continuous-batching) KV cache.

Why: in continuous batching, transformers' paged sdpa path packs ALL requests' query tokens into one row of
length Lq and all their cached keys into Lk, with a block-diagonal causal float mask, and calls torch's
SDPA. Which keys a token sees is fixed by the mask, but the SDPA kernel's split of the key range (and its
tiles) follow the packed tensor: a request's keys sit at another offset, in another tile, in every batch,
and so a token's output changes with the traffic around it.

The kernels: (1) `mask_interval_kernel`, one program per mask row, derives on the device the row's allowed
keys [start, end) (first and one past the last allowed key) and flags a row whose allowed keys are not one
interval, or whose allowed additive values are not exactly 0 (a bias this kernel would drop): not covered.
No host sync: the count of such rows comes back as a device tensor, to be checked later (CUDA-graph
capture works). is_causal alone gives [0, min(i + 1, Lk)) (torch's top-left alignment).
(2) `attn_split_kernel`, one program per (batch, query row, kv head (or query head if the mask is per
head), split slot p): its rows are the G query heads sharing the kv head, padded to 16 for tl.dot; it
computes the row's KV splits p, p + SPLIT_PROGRAMS, ... (which program computes a split changes nothing
in it; the bound only keeps the grid small when Lk, the packed key count, is large). Split s covers keys
[start + s SPLIT, start + (s + 1) SPLIT) ∩ [start, end): the split count depends on the row's own key
count only. Keys are visited in blocks of BLOCK_N aligned to the split's first key (never
to 0 of the packed tensor); online softmax in float32: scores by tl.dot, keys at or after the split's
end -inf, the block's p summed by the explicit halving tree (not tl.sum), p @ v by tl.dot with float32
accumulation. Writes the split's (m, l, acc) to a workspace. (3) `attn_combine_kernel`, one program per
(batch, query row, query head), merges the row's splits in order 0, 1, 2 ... (always, also for one
split) and writes acc / l in q's dtype; a row with no allowed key gets zeros. No atomics anywhere.
SPLIT and BLOCK_N are constants (numerics.attention.SPLIT, BLOCK_N): never chosen from the shapes.
The workspace holds B * Lq * Hq * ceil(Lk / SPLIT) states of D + 2 floats (Lk: the packed key count), e.g.
about 130 MB for 64 decode rows over 64k packed keys with Mistral's 32 heads.

The wrapper `attention(q, k, v, attn_mask=None, is_causal=False, scale=None)` checks its inputs
(probes.ext.KernelInputError naming the argument; dropout is refused) and returns
AttentionResult(out, uncovered).

The reference check: numerics.attention models the three kernels bit for bit in Triton's interpreter
(tl.dot through probes.gemm's interpreter_dot_shim: a fixed k order); on a GPU the tests check
invariance (a row's bits alone, in a batch, at any offset of a packed call) and closeness to torch SDPA.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import triton
import triton.language as tl

from numerics.attention import BLOCK_N, SPLIT
from probes.ext import KernelInputError
from probes.invariant.common import INTERPRETED, cast_rne, check_device, check_tensor, prepare
from probes.reduction.triton_sum import halving_tree_rows

__all__ = ["attention", "AttentionResult", "attn_split_kernel", "attn_tiled_split_kernel", "tile_heads",
           "attn_combine_kernel", "mask_interval_kernel", "TILE_M",
           "kernel_meta", "SPLIT", "BLOCK_N", "SPLIT_PROGRAMS", "MASK_BLOCK"]

MASK_BLOCK = 1024  # keys per step of the interval kernel (integer min/max/sum: any order gives the same)
#: Programs per (row, head group) on the grid's split axis (at most): a row's splits beyond it are taken by
#: the same programs in turn. 16 x 8 kv heads keeps a 132-SM GPU busy for one long decode row.
SPLIT_PROGRAMS = 16


@triton.jit(do_not_specialize=["Lk", "smb", "smh", "sml", "smk"])
def mask_interval_kernel(mask_ptr, start_ptr, end_ptr, bad_ptr, Lk, smb, smh, sml, smk, Hm, Lqm, fmin,
                         IS_BOOL: tl.constexpr, BLOCK: tl.constexpr):
    """Row r = (b, h, i) of the mask [Bm, Hm, Lqm, Lk]: start = first allowed key, end = last + 1 (0, 0 if
    none), bad = 1 if the allowed keys are not [start, end) or an allowed additive value is not 0."""
    r = tl.program_id(0).to(tl.int64)
    i = r % Lqm
    h = (r // Lqm) % Hm
    b = r // (Lqm * Hm)
    base = mask_ptr + b * smb + h * smh + i * sml
    lanes = tl.arange(0, BLOCK)
    lo = tl.full([BLOCK], Lk, tl.int32)
    hi = tl.full([BLOCK], -1, tl.int32)
    cnt = tl.zeros([BLOCK], tl.int32)
    biased = tl.zeros([BLOCK], tl.int32)
    for k0 in range(0, Lk, BLOCK):
        kn = k0 + lanes
        inside = kn < Lk
        val = tl.load(base + kn * smk, mask=inside, other=0)
        if IS_BOOL:
            allowed = inside & (val != 0)
        else:
            val = val.to(tl.float32)
            allowed = inside & ~(val <= fmin)
            biased = tl.maximum(biased, (allowed & (val != 0.0)).to(tl.int32))
        lo = tl.minimum(lo, tl.where(allowed, kn, Lk))
        hi = tl.maximum(hi, tl.where(allowed, kn, -1))
        cnt += allowed.to(tl.int32)
    first = tl.min(lo, 0)
    last = tl.max(hi, 0)
    count = tl.sum(cnt, 0)
    some = count > 0
    bad = some & ((count != last - first + 1) | (tl.max(biased, 0) > 0))
    one = tl.arange(0, 1)
    tl.store(start_ptr + r + one, tl.full([1], 0, tl.int32) + tl.where(some, first, 0))
    tl.store(end_ptr + r + one, tl.full([1], 0, tl.int32) + tl.where(some, last + 1, 0))
    tl.store(bad_ptr + r + one, tl.full([1], 0, tl.int32) + bad.to(tl.int32))


@triton.jit
def _row_interval(start_ptr, end_ptr, b, ih, row, sib, sih, sil):
    off = b * sib + ih * sih + row * sil
    return tl.load(start_ptr + off), tl.load(end_ptr + off)


@triton.jit
def _split_state_rows(q, k_base, v_base, lo, hi_row, hi_tile, skl, svl, d, dmask, scale, TM: tl.constexpr,
                      BLOCK_N: tl.constexpr, LOG2_BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, IEEE: tl.constexpr,
                      INTERP: tl.constexpr):
    """Online softmax for TM dot rows that share the split's first key `lo` but end at their own hi_row [TM]: the
    keys [lo, hi_tile) in blocks of BLOCK_N from lo, each row's keys at or after its hi_row -inf. Both split kernels
    use it (_split_state: every row ends at hi_tile). For a row ending before hi_tile, a block past its end adds
    p = 0 with alpha = 1, which leaves m, l and acc bit for bit (a row with keys in the split has m finite after its
    first block): the row's bits are those of the blocks up to its own end."""
    m = tl.full([TM], float("-inf"), tl.float32)
    l = tl.zeros([TM], tl.float32)
    acc = tl.zeros([TM, BLOCK_D], tl.float32)
    for j in range(0, tl.cdiv(hi_tile - lo, BLOCK_N)):
        kn = lo + j * BLOCK_N + tl.arange(0, BLOCK_N)
        load = kn < hi_tile
        valid = kn[None, :] < hi_row[:, None]
        kt = tl.load(k_base + kn[None, :] * skl + d[:, None], mask=load[None, :] & dmask[:, None], other=0.0)
        if IEEE:
            scores = tl.dot(q, kt, input_precision="ieee")
        else:
            scores = tl.dot(q, kt)
        scores = tl.where(valid, scores * scale, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, 1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m - m_use)
        p = tl.exp(scores - m_use[:, None])
        l = l * alpha + halving_tree_rows(p, TM, BLOCK_N, LOG2_BLOCK_N)
        vb = tl.load(v_base + kn[:, None] * svl + d[None, :], mask=load[:, None] & dmask[None, :], other=0.0)
        pv = cast_rne(p, vb.dtype, INTERP)
        if IEEE:
            acc = tl.dot(pv, vb, acc * alpha[:, None], input_precision="ieee")
        else:
            acc = tl.dot(pv, vb, acc * alpha[:, None])
        m = m_new
    return m, l, acc


@triton.jit
def _split_state(q, k_base, v_base, lo, hi, skl, svl, d, dmask, scale, GP: tl.constexpr, BLOCK_N: tl.constexpr,
                 LOG2_BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, IEEE: tl.constexpr, INTERP: tl.constexpr):
    """Online softmax over keys [lo, hi) in blocks of BLOCK_N from lo: (m, l, acc) (numerics.attention): the GP
    rows of one query row, all ending at hi."""
    return _split_state_rows(q, k_base, v_base, lo, tl.zeros([GP], tl.int32) + hi, hi, skl, svl, d, dmask, scale,
                             GP, BLOCK_N, LOG2_BLOCK_N, BLOCK_D, IEEE, INTERP)


@triton.jit
def _store_state(m_ptr, l_ptr, acc_ptr, slot, m, l, acc, d, mask, BLOCK_D: tl.constexpr):
    """A split's (m, l, acc) of each dot row into its workspace slot, where `mask`."""
    tl.store(m_ptr + slot, m, mask=mask)
    tl.store(l_ptr + slot, l, mask=mask)
    tl.store(acc_ptr + slot[:, None] * BLOCK_D + d[None, :], acc, mask=mask[:, None])


@triton.jit(do_not_specialize=["Lq", "S_MAX", "S_GRID", "sqb", "sqh", "sql", "skb", "skh", "skl", "svb", "svh",
                               "svl", "sib", "sih", "sil"])
def attn_split_kernel(q_ptr, k_ptr, v_ptr, start_ptr, end_ptr, m_ptr, l_ptr, acc_ptr, scale,
                      Lq, S_MAX, S_GRID, sqb, sqh, sql, skb, skh, skl, svb, svh, svl, sib, sih, sil, Hq, D,
                      G: tl.constexpr, HEADS: tl.constexpr, GP: tl.constexpr, PER_HEAD: tl.constexpr,
                      SPLIT: tl.constexpr, BLOCK_N: tl.constexpr, LOG2_BLOCK_N: tl.constexpr,
                      BLOCK_D: tl.constexpr, IEEE: tl.constexpr, INTERP: tl.constexpr):
    """(m, l, acc) of splits s = pid2, pid2 + S_GRID, ... of the row for the HEADS query heads of program
    (b, row, head group), each into its own workspace slot s. Which program computes a split changes
    nothing in its arithmetic; S_GRID only bounds the grid."""
    bq = tl.program_id(0).to(tl.int64)
    hg = tl.program_id(1)
    b = bq // Lq
    row = bq % Lq
    h0 = hg * HEADS                          # first query head of this program
    start, end = _row_interval(start_ptr, end_ptr, b, hg if PER_HEAD else 0, row, sib, sih, sil)
    n_split = tl.cdiv(tl.maximum(end - start, 0), SPLIT)
    if tl.program_id(2) < n_split:
        g = tl.arange(0, GP)
        d = tl.arange(0, BLOCK_D)
        dmask = d < D
        heads = g < HEADS
        q = tl.load(q_ptr + b * sqb + (h0 + g)[:, None] * sqh + row * sql + d[None, :],
                    mask=heads[:, None] & dmask[None, :], other=0.0)
        kv_head = h0 // G
        k_base = k_ptr + b * skb + kv_head * skh
        v_base = v_ptr + b * svb + kv_head * svh
        for s in range(tl.program_id(2), n_split, S_GRID):
            lo = start + s * SPLIT
            m, l, acc = _split_state(q, k_base, v_base, lo, tl.minimum(end, lo + SPLIT), skl, svl, d, dmask, scale,
                                     GP, BLOCK_N, LOG2_BLOCK_N, BLOCK_D, IEEE, INTERP)
            slot = (bq * Hq + h0 + g) * S_MAX + s
            _store_state(m_ptr, l_ptr, acc_ptr, slot, m, l, acc, d, heads, BLOCK_D)


@triton.jit(do_not_specialize=["Lq", "S_MAX", "S_GRID", "sqb", "sqh", "sql", "skb", "skh", "skl", "svb", "svh",
                               "svl", "sib", "sih", "sil"])
def attn_tiled_split_kernel(q_ptr, k_ptr, v_ptr, start_ptr, end_ptr, tile_ptr, m_ptr, l_ptr, acc_ptr, scale,
                            Lq, S_MAX, S_GRID, sqb, sqh, sql, skb, skh, skl, svb, svh, svl, sib, sih, sil, Hq, D,
                            G: tl.constexpr, HEADS: tl.constexpr, R: tl.constexpr, TM: tl.constexpr,
                            HEADED: tl.constexpr,
                            PER_HEAD: tl.constexpr, SPLIT: tl.constexpr, BLOCK_N: tl.constexpr,
                            LOG2_BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, IEEE: tl.constexpr,
                            INTERP: tl.constexpr):
    """attn_split_kernel for a tile of R consecutive query rows x HEADS heads (dot row i = row i // HEADS, head
    i % HEADS; TM dot rows, the rest padding), the same (m, l, acc) per (row, head, split) into the same slots.
    Prefill: when every row of the tile with keys starts at the same key (the rows of one request), the tile
    loads each key block once for all its rows. Otherwise (rows of several requests: decode, a tile on a
    request boundary) the rows go one at a time through the same TM-row dot, the others zeroed. Either way a
    row's arithmetic is its own: blocks aligned to its start, its own split count, the same dot shape, so its
    bits do not depend on which rows share its tile (tested against attn_split_kernel and numerics.attention
    in the interpreter; on a GPU by the invariance tests).
    Tiles: HEADED = False: rows 0..R-1, R..2R-1, ... of each batch entry (grid B * cdiv(Lq, R)). HEADED = True (the
    default tiling, tile_rows='auto'): tile_ptr[b * Lq + row] names the first row of the row's tile, R rows at
    most of one run of rows that start at the same key (one request's rows), so a tile never mixes requests;
    the grid has a program per row, and a program whose row heads no tile has no live row and does nothing."""
    pt = tl.program_id(0).to(tl.int64)
    hg = tl.program_id(1)
    if HEADED:
        b = pt // Lq
        row0 = pt % Lq
    else:
        n_tiles = tl.cdiv(Lq, R)
        b = pt // n_tiles
        row0 = (pt % n_tiles) * R
    h0 = hg * HEADS
    i = tl.arange(0, TM)
    r = i // HEADS
    g = i % HEADS
    row = row0 + r
    live = (i < R * HEADS) & (row < Lq)
    if HEADED:
        live = live & (tl.load(tile_ptr + b * Lq + row, mask=live, other=-1) == row0)
    off = b * sib + (hg if PER_HEAD else 0) * sih + row * sil
    start = tl.load(start_ptr + off, mask=live, other=0)
    end = tl.load(end_ptr + off, mask=live, other=0)
    n_split = tl.where(live, tl.cdiv(tl.maximum(end - start, 0), SPLIT), 0)
    keyed = n_split > 0
    s_top = tl.max(n_split, 0)
    s_lo = tl.min(tl.where(keyed, start, 2147483647), 0)
    s_hi = tl.max(tl.where(keyed, start, -1), 0)
    d = tl.arange(0, BLOCK_D)
    dmask = d < D
    q = tl.load(q_ptr + b * sqb + (h0 + g)[:, None] * sqh + row[:, None] * sql + d[None, :],
                mask=live[:, None] & dmask[None, :], other=0.0)
    kv_head = h0 // G
    k_base = k_ptr + b * skb + kv_head * skh
    v_base = v_ptr + b * svb + kv_head * svh
    slot0 = ((b * Lq + row) * Hq + h0 + g) * S_MAX
    if s_lo >= s_hi:                       # every row with keys starts at s_lo (or no row has keys)
        for s in range(tl.program_id(2), s_top, S_GRID):
            lo = s_lo + s * SPLIT
            hi_row = tl.minimum(end, lo + SPLIT)
            mine = keyed & (s < n_split)
            hi_tile = tl.max(tl.where(mine, hi_row, lo), 0)
            m, l, acc = _split_state_rows(q, k_base, v_base, lo, hi_row, hi_tile, skl, svl, d, dmask, scale, TM,
                                          BLOCK_N, LOG2_BLOCK_N, BLOCK_D, IEEE, INTERP)
            _store_state(m_ptr, l_ptr, acc_ptr, slot0 + s, m, l, acc, d, mine, BLOCK_D)
    else:
        for rr in range(0, R):
            sel = keyed & (r == rr)
            st = tl.max(tl.where(sel, start, -1), 0)
            n_rr = tl.max(tl.where(sel, n_split, 0), 0)
            q_rr = tl.where(sel[:, None], q, 0.0).to(q.dtype)
            for s in range(tl.program_id(2), n_rr, S_GRID):
                lo = st + s * SPLIT
                hi_row = tl.minimum(end, lo + SPLIT)
                hi_tile = tl.max(tl.where(sel, hi_row, lo), 0)
                m, l, acc = _split_state_rows(q_rr, k_base, v_base, lo, hi_row, hi_tile, skl, svl, d, dmask,
                                              scale, TM, BLOCK_N, LOG2_BLOCK_N, BLOCK_D, IEEE, INTERP)
                _store_state(m_ptr, l_ptr, acc_ptr, slot0 + s, m, l, acc, d, sel, BLOCK_D)


@triton.jit(do_not_specialize=["Lq", "S_MAX", "sib", "sih", "sil", "sob", "soh", "sol"])
def attn_combine_kernel(m_ptr, l_ptr, acc_ptr, start_ptr, end_ptr, o_ptr, Lq, S_MAX, sib, sih, sil,
                        sob, soh, sol, Hq, D, PER_HEAD: tl.constexpr, SPLIT: tl.constexpr,
                        BLOCK_D: tl.constexpr, INTERP: tl.constexpr):
    """out[b, hq, row] = the row's splits merged in order 0, 1, 2 ..., acc / l; zeros without keys."""
    bq = tl.program_id(0).to(tl.int64)
    hq = tl.program_id(1)
    b = bq // Lq
    row = bq % Lq
    start, end = _row_interval(start_ptr, end_ptr, b, hq if PER_HEAD else 0, row, sib, sih, sil)
    n_split = tl.cdiv(tl.maximum(end - start, 0), SPLIT)
    d = tl.arange(0, BLOCK_D)
    slot = (bq * Hq + hq) * S_MAX
    some = n_split > 0                       # no key: the workspace was not written; read 0 / 1
    M = tl.where(some, tl.load(m_ptr + slot), 0.0)
    L = tl.where(some, tl.load(l_ptr + slot), 1.0)
    A = tl.where(some, tl.load(acc_ptr + slot * BLOCK_D + d), 0.0)
    for s in range(1, n_split):
        m = tl.load(m_ptr + slot + s)
        l = tl.load(l_ptr + slot + s)
        a = tl.load(acc_ptr + (slot + s) * BLOCK_D + d)
        m_new = tl.maximum(M, m)
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        ca = tl.exp(M - m_use)
        cb = tl.exp(m - m_use)
        L = L * ca + l * cb
        A = A * ca + a * cb
        M = m_new
    out = tl.div_rn(A, L)
    tl.store(o_ptr + b * sob + hq * soh + row * sol + d, cast_rne(out, o_ptr.dtype.element_ty, INTERP), mask=d < D)


class AttentionResult(NamedTuple):
    """out: [B, Hq, Lq, D] in q's dtype. uncovered: 0-d int64 device tensor, the number of mask rows the
    kernels do not cover (allowed keys not one interval, or a non-zero additive value); 0 = exact SDPA
    semantics (up to rounding), else those rows' outputs are not SDPA's."""
    out: object
    uncovered: object


def _pow2(n):
    return 1 << max(0, int(n) - 1).bit_length()


def kernel_meta(*, G, D, per_head, fp32, split=SPLIT, block_n=BLOCK_N):
    """The constexprs and warps of (attn_split_kernel, attn_combine_kernel) for G query heads per kv head,
    head dim D, a per-head mask or not, float32 inputs or not: functions of the model only."""
    heads = 1 if per_head else G
    block_d = max(16, _pow2(D))
    split_meta = dict(G=G, HEADS=heads, GP=max(16, _pow2(heads)), PER_HEAD=per_head, SPLIT=split, BLOCK_N=block_n,
                      LOG2_BLOCK_N=block_n.bit_length() - 1, BLOCK_D=block_d, IEEE=fp32, INTERP=INTERPRETED,
                      num_warps=4)
    combine_meta = dict(PER_HEAD=per_head, SPLIT=split, BLOCK_D=block_d, INTERP=INTERPRETED, num_warps=1)
    return split_meta, combine_meta


def _check(q, k, v, attn_mask, dropout_p, is_causal, scale):
    import torch

    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, t, ndim=4)
        check_device(name, t)
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise KernelInputError(f"{name}: dtype {t.dtype} differs from q's {q.dtype}")
        if t.device != q.device:
            raise KernelInputError(f"{name}: on {t.device}, q on {q.device}")
    B, Hq, Lq, D = q.shape
    if k.shape != v.shape:
        raise KernelInputError(f"v: shape {tuple(v.shape)} differs from k's {tuple(k.shape)} (one [B, Hk, Lk, D])")
    if k.shape[0] != B or k.shape[3] != D:
        raise KernelInputError(f"k: shape {tuple(k.shape)} does not fit q {tuple(q.shape)}: batch and head dim "
                               f"must be q's ({B}, {D})")
    if k.shape[1] == 0 or Hq % k.shape[1]:
        raise KernelInputError(f"k: {k.shape[1]} kv heads do not divide q's {Hq} heads (Hq % Hk must be 0)")
    for name, t in (("q", q), ("k", k)):
        if t.numel() == 0:
            raise KernelInputError(f"{name}: empty tensor of shape {tuple(t.shape)}")
    if dropout_p != 0.0:
        raise KernelInputError(f"dropout_p: {dropout_p} is not supported (batch-invariant attention has no dropout)")
    if is_causal and attn_mask is not None:
        raise KernelInputError("is_causal: True together with attn_mask (torch SDPA refuses this too)")
    if scale is not None and not (isinstance(scale, (int, float)) and math.isfinite(scale)):
        raise KernelInputError(f"scale: must be a finite number or None, got {scale!r}")
    if attn_mask is not None:
        check_tensor("attn_mask", attn_mask, dtypes=(torch.bool, torch.bfloat16, torch.float16, torch.float32))
        if attn_mask.device != q.device:
            raise KernelInputError(f"attn_mask: on {attn_mask.device}, q on {q.device}")
        if attn_mask.dim() > 4 or attn_mask.dim() < 1:
            raise KernelInputError(f"attn_mask: must have 1 to 4 dims, got shape {tuple(attn_mask.shape)}")
        full = (B, Hq, Lq, k.shape[2])
        shape = (1,) * (4 - attn_mask.dim()) + tuple(attn_mask.shape)
        if any(s not in (1, f) for s, f in zip(shape, full)):
            raise KernelInputError(f"attn_mask: shape {tuple(attn_mask.shape)} does not broadcast to "
                                   f"[B, Hq, Lq, Lk] = {list(full)}")


def _intervals(attn_mask, is_causal, Lq, Lk, device):
    """(start, end, (sib, sih, sil), per_head, uncovered) for the attention kernels."""
    import torch

    if attn_mask is None:
        end = torch.full((1,), Lk, dtype=torch.int32, device=device)
        start = torch.zeros_like(end)
        strides = (0, 0, 0)
        if is_causal:  # torch's is_causal: query i sees keys 0..i (top-left), whatever Lk - Lq
            end = torch.clamp(torch.arange(1, Lq + 1, dtype=torch.int32, device=device), max=Lk)
            start = torch.zeros_like(end)
            strides = (0, 0, 1)
        return start, end, strides, False, torch.zeros((), dtype=torch.int64, device=device)
    m = attn_mask.reshape((1,) * (4 - attn_mask.dim()) + tuple(attn_mask.shape))
    Bm, Hm, Lqm, _ = m.shape
    m = m.expand(Bm, Hm, Lqm, Lk)
    is_bool = m.dtype == torch.bool
    fmin = 0.0 if is_bool else float(torch.finfo(m.dtype).min)
    if is_bool:
        m = m.view(torch.uint8)
    rows = Bm * Hm * Lqm
    start = torch.empty(rows, dtype=torch.int32, device=device)
    end = torch.empty_like(start)
    bad = torch.empty_like(start)
    mask_interval_kernel[(rows,)](m, start, end, bad, Lk, *m.stride(), Hm, Lqm, fmin, IS_BOOL=is_bool,
                                  BLOCK=MASK_BLOCK)
    strides = (Hm * Lqm if Bm > 1 else 0, Lqm if Hm > 1 else 0, 1 if Lqm > 1 else 0)
    return start, end, strides, Hm > 1, bad.sum()


#: Dot rows of the tiled split kernel (attention(..., tiled=True)): R = TILE_M // HEADS query rows a tile.
TILE_M = 64


def tile_heads(start, strides, B, Lq, rows):
    """The tiles of tile_rows='auto', on the device and without a host sync (CUDA-graph safe): int32 [B, Lq], for
    each query row the first row of its tile. A run is a maximal stretch of consecutive rows whose first allowed
    key (start, the kv-head-group 0 interval; strides (sib, sil)) is the same; a run is cut into tiles of `rows`
    rows from its first row."""
    import torch
    sib, sil = strides
    s = start.as_strided((B, Lq), (sib, sil))
    idx = torch.arange(Lq, device=start.device, dtype=torch.int64).expand(B, Lq)
    new = torch.ones((B, Lq), dtype=torch.bool, device=start.device)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    first = torch.cummax(torch.where(new, idx, torch.zeros_like(idx)), dim=1).values
    return (first + (idx - first) // rows * rows).to(torch.int32).contiguous()


def attention(q, k, v, *, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, split=SPLIT,
              block_n=BLOCK_N, split_programs=SPLIT_PROGRAMS, tiled=False, tile_rows=None):
    """torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal, scale)
    with q [B, Hq, Lq, D], k / v [B, Hk, Lk, D] (Hq % Hk == 0: grouped-query attention, query head h
    reads kv head h // (Hq / Hk)), bf16 / fp16 / fp32, in a batch-invariant order (see the module
    docstring). attn_mask broadcastable to [B, Hq, Lq, Lk]: bool (True = attend) or additive float (a
    value <= finfo(mask dtype).min, -inf included, masks; allowed values must be 0: others are counted in
    `uncovered` and treated as 0). A row with no allowed key outputs zeros. `split` and `block_n` are the
    kernels' constants: leave them (the tests change them to reach several splits at small sizes).
    split_programs bounds the grid's split axis (program p computes splits p, p + split_programs, ...):
    scheduling only, the bits do not depend on it. tiled=True: attn_tiled_split_kernel, R query rows a program
    sharing each key block when they start at the same key (prefill). tile_rows: 'auto' (the default) cuts each
    run of rows that start at the same key (one request's rows) into tiles of 64 // heads-per-kv-head rows, so a
    tile never mixes requests and a decode row (a request's one row) has a program of its own (tile_heads); an
    int R (1 .. 64 // heads) tiles rows 0..R-1, R..2R-1, ... whatever their requests, and a tile whose rows start at
    different keys computes them one after another. Scheduling only: the bits do not depend on it (each row keeps
    its own blocks and the same 64-row dot).
    Returns AttentionResult(out [B, Hq, Lq, D] in q's dtype, uncovered: 0-d int64 device tensor)."""
    import torch

    _check(q, k, v, attn_mask, dropout_p, is_causal, scale)
    if not (isinstance(split_programs, int) and split_programs >= 1):
        raise KernelInputError(f"split_programs: must be an int >= 1, got {split_programs!r}")
    if not (block_n >= 16 and block_n & (block_n - 1) == 0 and split >= block_n and split % block_n == 0):
        raise KernelInputError(f"split / block_n: block_n must be a power of two >= 16 dividing split, got "
                               f"split={split}, block_n={block_n}")
    prepare()
    B, Hq, Lq, D = q.shape
    Hk, Lk = k.shape[1], k.shape[2]
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    start, end, (sib, sih, sil), per_head, uncovered = _intervals(attn_mask, is_causal, Lq, Lk, q.device)
    split_meta, combine_meta = kernel_meta(G=Hq // Hk, D=D, per_head=per_head, fp32=q.dtype == torch.float32,
                                           split=split, block_n=block_n)
    heads, block_d = split_meta["HEADS"], split_meta["BLOCK_D"]
    s_max = triton.cdiv(Lk, split)
    s_grid = min(s_max, split_programs)
    slots = B * Lq * Hq * s_max
    ws_m = torch.empty(slots, dtype=torch.float32, device=q.device)
    ws_l = torch.empty_like(ws_m)
    ws_acc = torch.empty((slots, block_d), dtype=torch.float32, device=q.device)
    out = torch.empty((B, Hq, Lq, D), dtype=q.dtype, device=q.device)
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    if tiled:
        if heads > TILE_M:
            raise KernelInputError(f"q: {heads} query heads a kv head exceed the tiled kernel's {TILE_M} dot rows")
        auto = tile_rows is None or tile_rows == "auto"
        rows = TILE_M // heads if auto else tile_rows
        if not (isinstance(rows, int) and not isinstance(rows, bool) and 1 <= rows <= TILE_M // heads):
            raise KernelInputError(f"tile_rows: must be 'auto' or an int in 1..{TILE_M // heads} ({TILE_M} dot rows / "
                                   f"{heads} heads a kv head), got {tile_rows!r}")
        tile = tile_heads(start, (sib, sil), B, Lq, rows) if auto else start   # start: a placeholder, not read
        meta = {k_: v_ for k_, v_ in split_meta.items() if k_ != "GP"}
        attn_tiled_split_kernel[(B * (Lq if auto else triton.cdiv(Lq, rows)), Hq // heads, s_grid)](
            q, k, v, start, end, tile, ws_m, ws_l, ws_acc, scale, Lq, s_max, s_grid, *q.stride()[:3],
            *k.stride()[:3], *v.stride()[:3], sib, sih, sil, Hq, D, R=rows, TM=TILE_M, HEADED=auto, **meta)
    else:
        attn_split_kernel[(B * Lq, Hq // heads, s_grid)](
            q, k, v, start, end, ws_m, ws_l, ws_acc, scale, Lq, s_max, s_grid, *q.stride()[:3], *k.stride()[:3],
            *v.stride()[:3], sib, sih, sil, Hq, D, **split_meta)
    attn_combine_kernel[(B * Lq, Hq)](
        ws_m, ws_l, ws_acc, start, end, out, Lq, s_max, sib, sih, sil, *out.stride()[:3], Hq, D, **combine_meta)
    return AttentionResult(out, uncovered)
