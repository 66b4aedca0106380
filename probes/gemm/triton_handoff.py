"""The handoff kernel of the batch-invariant matmul: stream-K's balance without its split sums.

A partial last wave of whole tiles leaves SMs idle (M = 1400, N = 4096: 176 tiles of 128x256 on 132 SMs).
Stream-K cuts the k range of tiles between programs and adds the partial sums: another chain per element,
so other bits. Here a cut tile's chain is run by two programs one after the other: the first stores its
float32 accumulator (exact), the second loads it and goes on with the next k-tile, so every element is the
same k16 chain 0, 16, 32 ... as in one program (tests: bit-equal to the anchor config, GPU and interpreter).
"""
import triton
import triton.language as tl

from probes.gemm.triton_tiles import grid_shape, store_tile, tile_coords, walk_tiles


@triton.jit
def _k_chain(x_desc, w_desc, acc, offs_m, offs_n, k_lo, k_hi, BLOCK_K: tl.constexpr):
    """k-tiles k_lo, k_lo + 1, ... k_hi - 1 of one output tile, in order, onto acc."""
    for ki in range(k_lo, k_hi):
        a = x_desc.load([offs_m, ki * BLOCK_K])
        b = w_desc.load([offs_n, ki * BLOCK_K])
        acc = tl.dot(a, b.T, acc)
    return acc


@triton.jit
def _slot(ws_ptr, slot, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rm = tl.arange(0, BLOCK_M)
    rn = tl.max_contiguous(tl.multiple_of(tl.arange(0, BLOCK_N), BLOCK_N), BLOCK_N)
    base = tl.multiple_of(slot * (BLOCK_M * BLOCK_N), BLOCK_M * BLOCK_N)  # < 2^31: NUM_SMS slots
    return ws_ptr + base + rm[:, None] * BLOCK_N + rn[None, :]


#: int32s between two programs' flags: one 128-byte line each, so that a program polling its flag does not
#: queue behind atomics on its neighbours' flags in the same L2 line.
FLAG_STRIDE = tl.constexpr(32)


@triton.jit
def _hand_over(acc, ws_ptr, flag_ptr, slot, epoch, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Store the float32 accumulator (exact) in the slot, then publish it: flag = this launch's epoch."""
    tl.store(_slot(ws_ptr, slot, BLOCK_M, BLOCK_N), acc)
    tl.debug_barrier()  # every thread's part is written before the release
    tl.atomic_xchg(flag_ptr + slot * FLAG_STRIDE, epoch, sem="release", scope="gpu")


@triton.jit
def _take_over(ws_ptr, flag_ptr, slot, epoch, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Wait until the slot holds this launch's accumulator (plain volatile loads while waiting, then one
    acquire read-modify-write that synchronises with the release), lower the flag, then load the accumulator
    (from L2, past L1). Lowered (each slot is handed over once per launch): a CUDA graph replays the epoch it
    captured, and a flag left at that epoch would pass the next replay's wait before its producer's store."""
    flag = flag_ptr + slot * FLAG_STRIDE
    while tl.load(flag, volatile=True) != epoch:
        pass
    while tl.atomic_cas(flag, epoch, epoch, sem="acquire", scope="gpu") != epoch:  # once (its result is used:
        pass                                                                      # an unused one is dropped)
    tl.debug_barrier()  # every thread has seen the flag raised before it is lowered
    tl.store(flag, 0)
    return tl.load(_slot(ws_ptr, slot, BLOCK_M, BLOCK_N), cache_modifier=".cg")


@triton.jit(do_not_specialize=["M", "EPOCH"])
def bi_matmul_handoff_kernel(x_desc, w_desc, y_desc, ws_ptr, flag_ptr, M, N, K, EPOCH,
                             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                             GROUP_M: tl.constexpr, NUM_SMS: tl.constexpr, FLATTEN: tl.constexpr,
                             SUBTILE: tl.constexpr):
    """Persistent TMA matmul balanced like stream-K, but with ONE k chain per output element.

    The whole waves but the last are walked round robin (as bi_matmul_tma_kernel). The k-tiles of the
    remaining tiles form one list (tile by tile, k in order) cut into NUM_SMS equal contiguous ranges, one
    per program, so every SM gets the same work where whole tiles would leave a partial wave. A tile cut
    between programs p and p + 1 is NOT split-K: p sums its first k-tiles from 0 and stores the float32
    accumulator (exact); p + 1 loads it and goes on with the next k-tile, so the element is the same k16 chain
    0, 16, 32 ... as in one program, bit for bit. Program p does its head (the start of the tile its range
    ends in) first and the tail (the rest of the tile its range starts in) last, so the accumulator it
    waits for was published long before. All NUM_SMS programs must be resident at once (grid = SM count,
    one block per SM); a producer raises its flag to the launch's EPOCH and the consumer lowers it to 0, so a
    stale flag is never taken for a fresh one, neither by a later launch nor by a CUDA graph's replay."""
    pid = tl.program_id(0)
    num_pid_m, num_tiles, num_pid_in_group, k_tiles = grid_shape(M, N, K, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M)
    dp_tiles = tl.maximum(num_tiles // NUM_SMS - 1, 0) * NUM_SMS
    if num_tiles % NUM_SMS == 0:
        dp_tiles = num_tiles
    sk_iters = (num_tiles - dp_tiles) * k_tiles
    start = dp_tiles * k_tiles + (pid * sk_iters) // NUM_SMS
    end = dp_tiles * k_tiles + ((pid + 1) * sk_iters) // NUM_SMS
    body_end = end
    # 1. head: the first k-tiles of the tile my range ends inside, when my range holds that tile's start
    t_last = (end - 1) // k_tiles
    if (end > start) & (end % k_tiles != 0) & (t_last * k_tiles >= start):
        pid_m, pid_n = tile_coords(t_last, num_pid_in_group, num_pid_m, GROUP_M)
        acc = _k_chain(x_desc, w_desc, tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32), pid_m * BLOCK_M,
                       pid_n * BLOCK_N, 0, end - t_last * k_tiles, BLOCK_K)
        _hand_over(acc, ws_ptr, flag_ptr, pid, EPOCH, BLOCK_M, BLOCK_N)
        body_end = t_last * k_tiles
    # 2. whole waves, round robin; 3. the whole tiles of my range
    walk_tiles(x_desc, w_desc, y_desc, pid, dp_tiles, NUM_SMS, num_pid_in_group, num_pid_m, k_tiles, 0,
               BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, FLATTEN, SUBTILE, False)
    walk_tiles(x_desc, w_desc, y_desc, tl.cdiv(start, k_tiles), body_end // k_tiles, 1, num_pid_in_group,
               num_pid_m, k_tiles, 0, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, FLATTEN, SUBTILE, False)
    # 4. tail: the tile my range starts inside goes on from program pid - 1's accumulator
    if (start % k_tiles != 0) & (start < body_end):
        t = start // k_tiles
        k_hi = tl.minimum(k_tiles, body_end - t * k_tiles)
        pid_m, pid_n = tile_coords(t, num_pid_in_group, num_pid_m, GROUP_M)
        acc = _take_over(ws_ptr, flag_ptr, pid - 1, EPOCH, BLOCK_M, BLOCK_N)
        acc = _k_chain(x_desc, w_desc, acc, pid_m * BLOCK_M, pid_n * BLOCK_N, start - t * k_tiles, k_hi, BLOCK_K)
        if k_hi == k_tiles:
            store_tile(y_desc, acc, pid_m * BLOCK_M, pid_n * BLOCK_N, BLOCK_M, BLOCK_N, SUBTILE)
        else:  # my range lies inside the tile: pass the chain on to pid + 1
            _hand_over(acc, ws_ptr, flag_ptr, pid, EPOCH, BLOCK_M, BLOCK_N)


_HANDOFF = {}


def handoff_workspace(device, block_m, block_n, programs):
    """The handoff kernel's float32 accumulator slots (one per program) and flags, kept per device, stream
    and tile size, and the epoch of the next launch (flags of earlier launches hold smaller epochs). Under
    CUDA-graph capture: the capture's own, zeroed at every replay (triton_splitk.capture_workspace), epoch 1."""
    import torch

    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        from probes.gemm.triton_splitk import capture_workspace
        return (*capture_workspace(device, programs * block_m * block_n, programs * FLAG_STRIDE.value), 1)
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
    key = (device.type, device.index, stream, block_m, block_n, programs)
    entry = _HANDOFF.get(key)
    if entry is None or entry[2] >= 2 ** 31 - 2:
        entry = [torch.empty(programs * block_m * block_n, dtype=torch.float32, device=device),
                 torch.zeros(programs * FLAG_STRIDE.value, dtype=torch.int32, device=device), 0]
        _HANDOFF[key] = entry
    entry[2] += 1
    return entry[0], entry[1], entry[2]
