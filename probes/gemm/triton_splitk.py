"""The split-K kernel of the batch-invariant matmul: K cut in slices fixed by (N, K), combined in a fixed order.

Where one k chain per output element leaves SMs idle (q_o M = 1400: 176 tiles of 128x256 on 132 SMs;
k_v: 88 tiles of 128x128), cutting K in S slices gives S times the work units. A split-K sum is another
arithmetic than the one-chain sum (each slice's chain starts from 0), so it is batch invariant only if
the split never depends on M: the split count S belongs to the shape's table (triton_configs: one S for
every bucket of an (N, K)), and the slices are `numerics.matmul.split_k_slices(K, S, SPLIT_ALIGN)`:
contiguous, ceil(K / S) rounded up to a multiple of 256 (every BLOCK_K divides it, so a k-tile never
straddles two slices whatever the config). Per output element:

    part_s = the k16 chain over slice s, from 0, k in order (one wgmma per k16 step, as every config)
    y      = cast(((part_0 + part_1) + part_2) ...)        float32 adds in slice order, one cast

numerics.matmul.MatmulModel(split_k=S, split_align=SPLIT_ALIGN) is that order (the interpreter tests
check it bit for bit). Two ways to run it give the same bits:
  * INLINE: one program per tile sums the slices one after the other (two float32 tiles live: the running
    sum and the slice being summed): no more parallelism, no traffic; for large M.
  * parallel: a team of S programs per tile, program s of the team sums slice s; programs 0 .. S-2 store
    their float32 partial (exact) in the tile's slot and raise its flag; program S-1 waits for the flags,
    adds the partials in slice order, then its own, casts and stores. No atomics on data. Flags are
    reset to 0 by the reader, so every launch starts from zeroed flags: safe to replay in a CUDA graph
    (a flag holds no launch counter baked into the captured arguments). Every wait is on a program of
    lower id in the same team, so it also runs in Triton's interpreter (programs one after the other)
    and needs the whole grid resident on the GPU (grid <= SM count; one team of S per S SMs).
Swapped operands (small M: Y^T tile = W tile @ X tile^T) and pointer loads (no TMA: any GPU, the
interpreter) are constexpr switches of the same kernel.
"""
import triton
import triton.language as tl

from numerics.matmul import split_k_slices
from probes.gemm.triton_tiles import grid_shape, store_tile, tile_coords

#: Slice boundaries are multiples of this many k (a multiple of every candidate's BLOCK_K).
SPLIT_ALIGN = 256

#: int32s between two flags (one 128-byte line each, as the handoff kernel's).
SPLIT_FLAG_STRIDE = tl.constexpr(32)


def slice_len(k, split_k):
    """Products per slice (the last slice may be shorter), and the number of slices."""
    slices = split_k_slices(k, split_k, SPLIT_ALIGN)
    return slices[0][1] - slices[0][0], len(slices)


@triton.jit
def _operand(src, stride, rows, cols, off_r, off_c, BR: tl.constexpr, BC: tl.constexpr, TMA: tl.constexpr):
    """A [BR, BC] tile at (off_r, off_c): TMA (out of bounds reads zeros) or masked pointer loads."""
    if TMA:
        return src.load([off_r, off_c])
    else:
        r = off_r + tl.arange(0, BR)
        c = off_c + tl.arange(0, BC)
        return tl.load(src + r[:, None] * stride + c[None, :], mask=(r[:, None] < rows) & (c[None, :] < cols),
                       other=0.0)


@triton.jit
def _slice_sum(x, w, stride_x, stride_w, M, N, K, offs_m, offs_n, k_lo, k_hi,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SWAP: tl.constexpr,
               TMA: tl.constexpr):
    """One slice's partial tile: k-tiles k_lo, k_lo + BLOCK_K, ... < k_hi in order, from 0 ([BLOCK_N, BLOCK_M]
    with SWAP: W's rows on the wgmma's 64-row side)."""
    if SWAP:
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(k_lo, k_hi, BLOCK_K):
        a = _operand(x, stride_x, M, K, offs_m, k, BLOCK_M, BLOCK_K, TMA)
        b = _operand(w, stride_w, N, K, offs_n, k, BLOCK_N, BLOCK_K, TMA)
        if SWAP:
            acc = tl.dot(b, a.T, acc)
        else:
            acc = tl.dot(a, b.T, acc)
    return acc


@triton.jit
def _store(y, stride_y, M, N, acc, offs_m, offs_n, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
           SWAP: tl.constexpr, TMA: tl.constexpr, SUBTILE: tl.constexpr):
    """The epilogue: the float32 tile cast once to the output dtype."""
    if SWAP:
        out = tl.trans(acc)
    else:
        out = acc
    if TMA:
        if SWAP:
            y.store([offs_m, offs_n], out.to(y.dtype))
        else:
            store_tile(y, out, offs_m, offs_n, BLOCK_M, BLOCK_N, SUBTILE)
    else:
        r = offs_m + tl.arange(0, BLOCK_M)
        c = offs_n + tl.arange(0, BLOCK_N)
        tl.store(y + r[:, None] * stride_y + c[None, :], out.to(y.dtype.element_ty),
                 mask=(r[:, None] < M) & (c[None, :] < N))


@triton.jit
def _tile_ptrs(ws_ptr, slot, R: tl.constexpr, C: tl.constexpr):
    rr = tl.arange(0, R)
    cc = tl.max_contiguous(tl.multiple_of(tl.arange(0, C), C), C)
    return ws_ptr + slot.to(tl.int64) * (R * C) + rr[:, None] * C + cc[None, :]


@triton.jit
def _slot_ptrs(ws_ptr, slot, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SWAP: tl.constexpr):
    """A slot holds one partial tile in the accumulator's own shape ([BLOCK_N, BLOCK_M] with SWAP)."""
    if SWAP:
        return _tile_ptrs(ws_ptr, slot, BLOCK_N, BLOCK_M)
    else:
        return _tile_ptrs(ws_ptr, slot, BLOCK_M, BLOCK_N)


@triton.jit
def _publish(acc, ws_ptr, flag_ptr, slot, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SWAP: tl.constexpr):
    """Store a partial tile (exact float32) in its slot, then raise the slot's flag (release)."""
    tl.store(_slot_ptrs(ws_ptr, slot, BLOCK_M, BLOCK_N, SWAP), acc)
    tl.debug_barrier()  # every thread's part is written before the release
    tl.atomic_xchg(flag_ptr + slot * SPLIT_FLAG_STRIDE, 1, sem="release", scope="gpu")


@triton.jit
def _collect(ws_ptr, flag_ptr, slot, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SWAP: tl.constexpr):
    """Wait for the slot's flag (volatile loads, then one acquire read-modify-write that synchronises with
    the release), load the partial (from L2), and lower the flag for the next launch."""
    flag = flag_ptr + slot * SPLIT_FLAG_STRIDE
    while tl.load(flag, volatile=True) != 1:
        pass
    while tl.atomic_cas(flag, 1, 1, sem="acquire", scope="gpu") != 1:  # once (its result is used)
        pass
    tl.debug_barrier()  # every thread has seen the flag raised before it is lowered
    part = tl.load(_slot_ptrs(ws_ptr, slot, BLOCK_M, BLOCK_N, SWAP), cache_modifier=".cg")
    tl.store(flag, 0)
    return part


@triton.jit(do_not_specialize=["M"])
def bi_matmul_splitk_kernel(x, w, y, ws_ptr, flag_ptr, M, N, K, SLICE_K, stride_x, stride_w, stride_y,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                            GROUP_M: tl.constexpr, NUM_SMS: tl.constexpr, FLATTEN: tl.constexpr,
                            SPLIT_K: tl.constexpr, INLINE: tl.constexpr, SWAP: tl.constexpr, TMA: tl.constexpr,
                            SUBTILE: tl.constexpr):
    """Y = X @ W^T with K in SPLIT_K slices of SLICE_K products (the last one shorter), the float32 partials
    added in slice order (module docstring). x, w, y: TMA descriptors (TMA) or pointers with row strides."""
    pid = tl.program_id(0)
    num_pid_m, num_tiles, num_pid_in_group, _ = grid_shape(M, N, K, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M)
    if INLINE:
        for tile in tl.range(pid, num_tiles, NUM_SMS, flatten=FLATTEN):
            pid_m, pid_n = tile_coords(tile, num_pid_in_group, num_pid_m, GROUP_M)
            offs_m = pid_m * BLOCK_M
            offs_n = pid_n * BLOCK_N
            acc = _slice_sum(x, w, stride_x, stride_w, M, N, K, offs_m, offs_n, 0, SLICE_K,
                             BLOCK_M, BLOCK_N, BLOCK_K, SWAP, TMA)
            for s in tl.static_range(1, SPLIT_K):
                part = _slice_sum(x, w, stride_x, stride_w, M, N, K, offs_m, offs_n, s * SLICE_K,
                                  tl.minimum((s + 1) * SLICE_K, K), BLOCK_M, BLOCK_N, BLOCK_K, SWAP, TMA)
                acc = acc + part
            _store(y, stride_y, M, N, acc, offs_m, offs_n, BLOCK_M, BLOCK_N, SWAP, TMA, SUBTILE)
    else:
        teams = NUM_SMS // SPLIT_K       # tiles in flight; the launcher sizes the grid to teams * SPLIT_K
        team = pid // SPLIT_K
        s = pid % SPLIT_K                # this program's slice, the same for all its tiles
        k_lo = s * SLICE_K
        k_hi = tl.minimum(k_lo + SLICE_K, K)
        for tile in tl.range(team, num_tiles, teams, flatten=FLATTEN):
            pid_m, pid_n = tile_coords(tile, num_pid_in_group, num_pid_m, GROUP_M)
            offs_m = pid_m * BLOCK_M
            offs_n = pid_n * BLOCK_N
            acc = _slice_sum(x, w, stride_x, stride_w, M, N, K, offs_m, offs_n, k_lo, k_hi,
                             BLOCK_M, BLOCK_N, BLOCK_K, SWAP, TMA)
            base = tile * (SPLIT_K - 1)
            if s < SPLIT_K - 1:
                _publish(acc, ws_ptr, flag_ptr, base + s, BLOCK_M, BLOCK_N, SWAP)
            else:
                total = _collect(ws_ptr, flag_ptr, base, BLOCK_M, BLOCK_N, SWAP)
                for j in tl.static_range(1, SPLIT_K - 1):
                    total = total + _collect(ws_ptr, flag_ptr, base + j, BLOCK_M, BLOCK_N, SWAP)
                total = total + acc
                _store(y, stride_y, M, N, total, offs_m, offs_n, BLOCK_M, BLOCK_N, SWAP, TMA, SUBTILE)


_WORKSPACE = {}
_CAPTURE = {}


def splitk_workspace(device, floats, slots):
    """The parallel mode's float32 partial slots and their flags (zeros at rest: every flag raised is lowered by
    its reader), kept per device and stream and grown as needed (a larger M needs more slots). A CUDA graph
    being captured gets its own (`capture_workspace`)."""
    import torch

    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return capture_workspace(device, floats, slots * SPLIT_FLAG_STRIDE.value)
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
    key = (device.type, device.index, stream)
    ws, flags = _WORKSPACE.get(key, (None, None))
    if ws is None or ws.numel() < floats:
        ws = torch.empty(max(floats, 1), dtype=torch.float32, device=device)
    if flags is None or flags.numel() < slots * SPLIT_FLAG_STRIDE.value:
        flags = torch.zeros(max(slots, 1) * SPLIT_FLAG_STRIDE.value, dtype=torch.int32, device=device)
    _WORKSPACE[key] = (ws, flags)
    return ws, flags


def capture_workspace(device, floats, flag_ints):
    """Float32 slots and int32 flags (zeros) of the CUDA-graph capture under way: allocated in the graph's memory
    pool, the flags zeroed by a memset node of the graph at every replay (memory allocated during a capture
    holds nothing until the graph runs, so no other graph and no eager launch may share it). The capture's
    later calls reuse them (kernels of one stream run one after the other, and leave every flag at 0) when
    cudaStreamGetCaptureInfo (CUDA Python) names the capture; else one per call. The handoff kernel's too."""
    import torch

    stream = torch.cuda.current_stream(device).cuda_stream
    cid = capture_id(stream)
    entry = _CAPTURE.get((device.index, stream))
    if cid is not None and entry is not None and entry[0] == cid and entry[1].numel() >= floats \
            and entry[2].numel() >= flag_ints:
        return entry[1], entry[2]
    ws = torch.empty(max(floats, 1), dtype=torch.float32, device=device)
    flags = torch.zeros(max(flag_ints, 1), dtype=torch.int32, device=device)
    if cid is not None:
        _CAPTURE[(device.index, stream)] = (cid, ws, flags)
    return ws, flags


def capture_id(stream):
    """The unique id of the CUDA-graph capture under way on `stream` (a cudaStream_t as an int), or None (none
    under way, or CUDA Python's cuda.bindings is not installed)."""
    try:
        from cuda.bindings import runtime
        out = runtime.cudaStreamGetCaptureInfo(runtime.cudaStream_t(init_value=stream))
        if out[0] != runtime.cudaError_t.cudaSuccess or \
                out[1] != runtime.cudaStreamCaptureStatus.cudaStreamCaptureStatusActive:
            return None
        return int(out[2])
    except Exception:  # no CUDA Python, or another binding: one workspace per call instead
        return None


def launch_splitk(x, w, out, c, sms, tensor_descriptor):
    """Run config c (SPLIT_K > 1; impl 'tma', 'swap' or 'ptr') on x [M, K], w [N, K] into out [M, N].
    tensor_descriptor: Triton's TensorDescriptor class, or None for pointer loads."""
    M, K = x.shape
    N = w.shape[0]
    bm, bn, bk = c["BLOCK_M"], c["BLOCK_N"], c["BLOCK_K"]
    if SPLIT_ALIGN % bk:
        raise ValueError(f"split-K config {c}: BLOCK_K {bk} does not divide the slice alignment {SPLIT_ALIGN}")
    slice_k, split = slice_len(K, c["SPLIT_K"])  # fewer slices than SPLIT_K when K is short
    tiles = triton.cdiv(M, bm) * triton.cdiv(N, bn)
    inline = bool(c.get("SPLIT_INLINE"))
    swap = c["impl"] == "swap"
    use_tma = c["impl"] in ("tma", "swap") and tensor_descriptor is not None and K % 8 == 0 and N % 8 == 0
    sub = bool(c.get("SUBTILE")) and not swap
    if inline:
        grid = max(1, min(sms, tiles))
        ws, flags = out, out  # unused
    else:
        if sms < split:
            raise ValueError(f"split-K {split} needs at least {split} programs, the device has {sms}")
        grid = min(sms // split, tiles) * split
        ws, flags = splitk_workspace(x.device, tiles * (split - 1) * bm * bn, tiles * (split - 1))
    if use_tma:
        xa = tensor_descriptor.from_tensor(x, [bm, bk])
        wa = tensor_descriptor.from_tensor(w, [bn, bk])
        ya = tensor_descriptor.from_tensor(out, [bm, bn // 2 if sub else bn])
    else:
        xa, wa, ya = x, w, out
    bi_matmul_splitk_kernel[(grid,)](
        xa, wa, ya, ws, flags, M, N, K, slice_k, x.stride(0), w.stride(0), out.stride(0),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=c["GROUP_M"], NUM_SMS=sms, FLATTEN=c["FLATTEN"],
        SPLIT_K=split, INLINE=inline, SWAP=swap, TMA=use_tma, SUBTILE=sub,
        num_warps=c["num_warps"], num_stages=c["num_stages"])
    return out


def witness_inputs(dtype, device="cpu", k=608):
    """Inputs on which split 3 and one chain must differ (tests, interpreter and GPU): x [2, k], w [8, k] whose
    row-0 products are 1 (k = 0), 256 of 2^-30 (k = 256..511, the second slice of split 3) and -1 (the last
    k, in the third slice). One chain loses every 2^-30 against the running 1 (16 or 32 of them make 2^-26
    or 2^-25, below half an ulp of 1; wgmma truncates them away) and ends at 0. Split 3 sums them from 0 in
    their own slice (2^-22, exact) and ends at (1 + 2^-22) - 1 = 2^-22. Row 1 is random."""
    import torch

    x = torch.zeros((2, k))
    w = torch.zeros((8, k))
    x[0, 0], x[0, k - 1], w[:, 0], w[:, k - 1] = 1.0, -1.0, 1.0, 1.0
    x[0, 256:512], w[:, 256:512] = 2.0 ** -15, 2.0 ** -15
    x[1] = torch.randn(k, generator=torch.Generator().manual_seed(0))
    return x.to(dtype).to(device), w.to(dtype).to(device)
