"""The dequantisation probe's inputs, each defined exactly by its seed (and shape), so that any machine
regenerates the same bits: int4 group-wise weights with their scales and zero points, random GGUF Q4 blocks,
and FP8 weights."""
import numpy as np

from numerics import dequant as dq


def sizes(device):
    """(N, K) of the int4 and FP8 weights: small on a CPU."""
    return (32, 512) if device == "cpu" else (256, 4096)


def int4_inputs(n, k, g, zeros, seed):
    """(packed int4 (n, k // 2), float16 scales (n, k // g), zero points or None): zeros "sym" (none), "int"
    (integers in float16) or "float" (in [0, 15))."""
    rng = np.random.default_rng(seed)
    packed = dq.pack_int4(rng.integers(0, 16, size=(n, k), dtype=np.uint8))
    scales = (np.abs(rng.standard_normal((n, k // g))) * 0.01 + 1e-3).astype(np.float16)
    if zeros == "sym":
        z = None
    elif zeros == "int":
        z = rng.integers(0, 16, size=(n, k // g)).astype(np.float16)
    else:
        z = (rng.random((n, k // g)) * 15).astype(np.float16)
    return packed, scales, z


def q4_random_blocks(seed, device):
    """{"Q4_0": blocks, "Q4_1": blocks}: random blocks (uint8, one row per block) whose scale (and min) are
    small positive float16 values, drawn in this order from one generator."""
    rng = np.random.default_rng(seed)
    out = {}
    for qt, width, off in (("Q4_0", 18, 2), ("Q4_1", 20, 4)):
        nb = 512 if device == "cpu" else 65536
        blocks = rng.integers(0, 256, size=(nb, width), dtype=np.uint8)
        d = (np.abs(rng.standard_normal((nb, off // 2))) * 0.01).astype(np.float16)
        blocks[:, :off] = d.view(np.uint8).reshape(nb, off)
        out[qt] = blocks
    return out


def fp8_weights(seed, device):
    """float32 weights (N, K) ~ normal(0, 0.05), to be quantised to FP8."""
    n, k = sizes(device)
    return (np.random.default_rng(seed).standard_normal((n, k)) * 0.05).astype(np.float32)
