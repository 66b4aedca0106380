"""The Triton backend: one ``tl.dot`` matmul kernel with an fp32 accumulator, K walked in
``BLOCK_K = 32`` tiles in order (``acc = tl.dot(a, b, acc)``: the tile's products are added to the
running accumulator by the matrix unit itself, so the block-FMA chain runs across tiles too).
On a CPU (TRITON_INTERPRET=1) ``tl.dot`` is a NumPy matmul of the tile, not tensor-core arithmetic:
what the probe then detects is NumPy's (BLAS's) float32 arithmetic inside 32-wide tiles."""
import numpy as np
import triton
import triton.language as tl

BLOCK_M = 64
BLOCK_N = 64
BLOCK_K = 32


@triton.jit
def dot_kernel(a_ptr, b_ptr, c_ptr, M, N, stride_am, stride_bk, stride_cm,
               K_TILES: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_K: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kt in range(K_TILES):
        k = kt * BLOCK_K + rk
        a = tl.load(a_ptr + rm[:, None] * stride_am + k[None, :])     # host-padded: no masks
        b = tl.load(b_ptr + k[:, None] * stride_bk + rn[None, :])
        if INPUT_PRECISION == "default":
            acc = tl.dot(a, b, acc)
        else:
            acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
    tl.store(c_ptr + rm[:, None] * stride_cm + rn[None, :], acc)


def triton_matmul(A, B, fmt, device):
    """C = A @ B through ``dot_kernel``; A (M, K), B (K, N) float64 values of ``fmt``."""
    import torch

    from probes.convert import torch_dtype

    M, K = A.shape
    N = B.shape[1]
    Kp = -(-K // BLOCK_K) * BLOCK_K                  # zero products at the end change nothing
    Mp = -(-M // BLOCK_M) * BLOCK_M
    Np = -(-N // BLOCK_N) * BLOCK_N
    Ap = np.zeros((Mp, Kp)); Ap[:M, :K] = A
    Bp = np.zeros((Kp, Np)); Bp[:K, :N] = B
    dt = torch_dtype(fmt)
    a = torch.from_numpy(Ap).float().to(device).to(dt).contiguous()   # float64 -> fp32 exact, then the format
    b = torch.from_numpy(Bp).float().to(device).to(dt).contiguous()
    c = torch.empty((Mp, Np), dtype=torch.float32, device=device)
    prec = {"tf32": "tf32", "float32": "ieee"}.get(fmt, "default")
    grid = (Mp // BLOCK_M, Np // BLOCK_N)
    dot_kernel[grid](a, b, c, Mp, Np, a.stride(0), b.stride(0), c.stride(0), K_TILES=Kp // BLOCK_K,
                     BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, INPUT_PRECISION=prec)
    if device != "cpu":
        torch.cuda.synchronize(device)
    return c[:M, :N].cpu().numpy().astype(np.float64)
