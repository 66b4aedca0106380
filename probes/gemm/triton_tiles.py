"""Tile walks shared by the batch-invariant Triton matmul kernels (triton_matmul, triton_handoff,
triton_wide): grouped tile order, the TMA epilogue, and the persistent walk over whole tiles whose k loop is
k-tile 0, 1, 2 ... (the per-element chain every config shares)."""
import triton
import triton.language as tl


@triton.jit
def grid_shape(M, N, K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """(row tiles, output tiles, tiles per group of GROUP_M row tiles, k-tiles) of an M x N x K product."""
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    return num_pid_m, num_pid_m * num_pid_n, GROUP_M * num_pid_n, tl.cdiv(K, BLOCK_K)


@triton.jit
def tile_coords(tile_id, num_pid_in_group, num_pid_m, GROUP_M: tl.constexpr):
    """Grouped ordering: GROUP_M row-tiles share each column of W while it is in L2."""
    group_id = tile_id // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + (tile_id % group_size_m)
    pid_n = (tile_id % num_pid_in_group) // group_size_m
    return pid_m, pid_n


@triton.jit
def store_tile(y_desc, acc, offs_m, offs_n, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SUBTILE: tl.constexpr):
    """The epilogue: the float32 tile cast once to the output dtype, stored by TMA."""
    if SUBTILE:  # two half-width stores: less shared memory for the epilogue, more for the stages
        halves = tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1))
        acc0, acc1 = tl.split(halves)
        y_desc.store([offs_m, offs_n], acc0.to(y_desc.dtype))
        y_desc.store([offs_m, offs_n + BLOCK_N // 2], acc1.to(y_desc.dtype))
    else:
        y_desc.store([offs_m, offs_n], acc.to(y_desc.dtype))


@triton.jit
def walk_tiles(x_desc, w_desc, y_desc, first, last, step, num_pid_in_group, num_pid_m, k_tiles, n_offset,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
               FLATTEN: tl.constexpr, SUBTILE: tl.constexpr, WS: tl.constexpr):
    """Whole tiles first, first + step, ... < last in grouped order, over the columns from n_offset on; each
    sums k-tiles 0, 1, 2 ... with tl.dot (wgmma) into a float32 accumulator."""
    tile_id_c = first - step  # the epilogue's own counter (tutorial 09's pipelining work-around)
    for tile_id in tl.range(first, last, step, flatten=FLATTEN, warp_specialize=WS):
        pid_m, pid_n = tile_coords(tile_id, num_pid_in_group, num_pid_m, GROUP_M)
        offs_m = pid_m * BLOCK_M
        offs_n = n_offset + pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for ki in range(k_tiles):  # fixed order: k-tile 0, 1, 2, ...
            a = x_desc.load([offs_m, ki * BLOCK_K])
            b = w_desc.load([offs_n, ki * BLOCK_K])
            acc = tl.dot(a, b.T, acc)
        tile_id_c += step
        pid_m, pid_n = tile_coords(tile_id_c, num_pid_in_group, num_pid_m, GROUP_M)
        store_tile(y_desc, acc, pid_m * BLOCK_M, n_offset + pid_n * BLOCK_N, BLOCK_M, BLOCK_N, SUBTILE)
