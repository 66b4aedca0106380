"""The wide kernel of the batch-invariant matmul: a tile of power-of-two parts (e.g. 128 + 32 + 16 = 176
columns), one accumulator and one tl.dot per part."""
import triton
import triton.language as tl

from probes.gemm.triton_tiles import grid_shape, tile_coords


@triton.jit(do_not_specialize=["M"])
def bi_matmul_wide_kernel(x_desc, w1_desc, w2_desc, w3_desc, y1_desc, y2_desc, y3_desc, M, N, K,
                          BLOCK_M: tl.constexpr, BN1: tl.constexpr, BN2: tl.constexpr, BN3: tl.constexpr,
                          BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, NUM_SMS: tl.constexpr,
                          FLATTEN: tl.constexpr):
    """Persistent TMA matmul whose tile is BN1 + BN2 (+ BN3) columns wide, e.g. 128 + 32 + 16 = 176: Triton's
    blocks are powers of two, the tile that fills the SMs in whole waves often is not (cuBLAS runs 128x176
    at M = 1400, N = 4096: 11 x 24 = 264 tiles = 2 waves of 132). One accumulator and one tl.dot per part,
    sharing the X tile; each part is a wgmma chain over k16 steps in order like every other config, the
    instruction's N (128, 32, 16) does not enter an element's sum. Parts beyond N read zeros and are not
    stored (TMA bounds)."""
    BLOCK_N: tl.constexpr = BN1 + BN2 + BN3
    pid = tl.program_id(0)
    num_pid_m, num_tiles, num_pid_in_group, k_tiles = grid_shape(M, N, K, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M)
    tile_id_c = pid - NUM_SMS  # the epilogue's own counter (tutorial 09's pipelining work-around)
    for tile_id in tl.range(pid, num_tiles, NUM_SMS, flatten=FLATTEN):
        pid_m, pid_n = tile_coords(tile_id, num_pid_in_group, num_pid_m, GROUP_M)
        offs_m = pid_m * BLOCK_M
        offs_n = pid_n * BLOCK_N
        acc1 = tl.zeros((BLOCK_M, BN1), dtype=tl.float32)
        acc2 = tl.zeros((BLOCK_M, BN2), dtype=tl.float32)
        if BN3 > 0:
            acc3 = tl.zeros((BLOCK_M, BN3), dtype=tl.float32)
        for ki in range(k_tiles):  # fixed order: k-tile 0, 1, 2, ...
            a = x_desc.load([offs_m, ki * BLOCK_K])
            acc1 = tl.dot(a, w1_desc.load([offs_n, ki * BLOCK_K]).T, acc1)
            acc2 = tl.dot(a, w2_desc.load([offs_n + BN1, ki * BLOCK_K]).T, acc2)
            if BN3 > 0:
                acc3 = tl.dot(a, w3_desc.load([offs_n + BN1 + BN2, ki * BLOCK_K]).T, acc3)
        tile_id_c += NUM_SMS
        pid_m, pid_n = tile_coords(tile_id_c, num_pid_in_group, num_pid_m, GROUP_M)
        offs_m = pid_m * BLOCK_M
        offs_n = pid_n * BLOCK_N
        y1_desc.store([offs_m, offs_n], acc1.to(y1_desc.dtype))
        y2_desc.store([offs_m, offs_n + BN1], acc2.to(y2_desc.dtype))
        if BN3 > 0:
            y3_desc.store([offs_m, offs_n + BN1 + BN2], acc3.to(y3_desc.dtype))
