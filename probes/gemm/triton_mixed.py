"""The mixed kernel of the batch-invariant matmul: whole waves of big tiles, the rest in small ones.

At M = 1400, N = 4096 there are 176 tiles of 128x256 (1.33 waves on 132 SMs: the last wave leaves 88 SMs
idle for a whole big tile) or 352 of 128x128 (2.67 waves of a less efficient tile). Here the columns
[0, N_BIG) are cut in big tiles, N_BIG chosen (by the wrapper, from M) so that they make whole waves: 12 x 11
= 132 tiles of 128x256, one wave; the columns [N_BIG, N) in small tiles (8 x 11 = 88 of 128x128), dealt
round robin after the big ones. Every tile of either size sums k-tiles 0, 1, 2 ... with tl.dot (the same
k16 chain per element as every other config), so which size covers a column does not change its bits.
"""
import triton
import triton.language as tl

from probes.gemm.triton_tiles import grid_shape, walk_tiles


@triton.jit(do_not_specialize=["M", "N_BIG"])
def bi_matmul_mixed_kernel(x_desc, wb_desc, yb_desc, ws_desc, ys_desc, M, N, K, N_BIG,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, N_SMALL: tl.constexpr,
                           BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, NUM_SMS: tl.constexpr,
                           FLATTEN: tl.constexpr, SUBTILE: tl.constexpr):
    """Big tiles (BLOCK_M x BLOCK_N) over columns [0, N_BIG), round robin; then small tiles (BLOCK_M x N_SMALL)
    over [N_BIG, N), continuing the round robin where the big ones stopped."""
    pid = tl.program_id(0)
    num_pid_m, big_tiles, big_group, k_tiles = grid_shape(M, N_BIG, K, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M)
    _, small_tiles, small_group, _ = grid_shape(M, N - N_BIG, K, BLOCK_M, N_SMALL, BLOCK_K, GROUP_M)
    walk_tiles(x_desc, wb_desc, yb_desc, pid, big_tiles, NUM_SMS, big_group, num_pid_m, k_tiles, 0,
               BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, FLATTEN, SUBTILE, False)
    first_small = (pid + NUM_SMS - big_tiles % NUM_SMS) % NUM_SMS
    walk_tiles(x_desc, ws_desc, ys_desc, first_small, small_tiles, NUM_SMS, small_group, num_pid_m, k_tiles, N_BIG,
               BLOCK_M, N_SMALL, BLOCK_K, GROUP_M, FLATTEN, SUBTILE, False)


def big_columns(m, n, block_m, block_n, programs):
    """N_BIG: the columns cut in big tiles, a multiple of block_n, as many as make whole waves of `programs`
    tiles (0 when the big tiles do not fill one wave: then every tile is small)."""
    row_tiles = triton.cdiv(m, block_m)
    waves = row_tiles * (n // block_n) // programs
    return min(waves * programs // row_tiles, n // block_n) * block_n
