"""Python face of the compiled dequantisation kernels (csrc/dequant): argument checks on torch tensors
(dtype, device, contiguity, shapes), output allocation, then probes._C on the tensors' device: the CUDA
kernels for CUDA tensors, the C++ reference for CPU tensors."""
import torch

from probes import ext
from probes.ext import KernelInputError

OUT_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def _check(t, name, dtype, ndim=None, device=None):
    if not isinstance(t, torch.Tensor):
        raise KernelInputError(f"{name}: expected a torch tensor, got {type(t).__name__}")
    if t.dtype != dtype:
        raise KernelInputError(f"{name}: dtype {t.dtype} is not {dtype}")
    if ndim is not None and t.dim() != ndim:
        raise KernelInputError(f"{name}: expected {ndim}-D, got shape {tuple(t.shape)}")
    if not t.is_contiguous():
        raise KernelInputError(f"{name}: tensor is not contiguous")
    if t.numel() == 0:
        raise KernelInputError(f"{name}: empty tensor")
    if device is not None and t.device != device:
        raise KernelInputError(f"{name}: is on {t.device} but the weights are on {device}")
    if t.device.type not in ("cpu", "cuda"):
        raise KernelInputError(f"{name}: device {t.device} is not supported (cpu or cuda)")


def _dev(t):
    return t.device.index if t.device.type == "cuda" else -1


def dequant_int4(packed, scales, zeros, *, group_size, formula="sub_mul", compute="float32", out="bfloat16",
                 check_scales=True, result=None):
    """packed (N, K/2) uint8, scales / zeros (N, K/g) float16 (zeros None: symmetric) -> (N, K) `out`."""
    _check(packed, "packed", torch.uint8, 2)
    n, k = packed.shape[0], packed.shape[1] * 2
    _check(scales, "scales", torch.float16, 2, packed.device)
    if group_size <= 0 or k % group_size:
        raise KernelInputError(f"group_size: {group_size} does not divide the row length {k}")
    if tuple(scales.shape) != (n, k // group_size):
        raise KernelInputError(f"scales: shape {tuple(scales.shape)}, expected {(n, k // group_size)}")
    if zeros is not None:
        _check(zeros, "zeros", torch.float16, 2, packed.device)
        if zeros.shape != scales.shape:
            raise KernelInputError(f"zeros: shape {tuple(zeros.shape)}, expected {tuple(scales.shape)}")
    if out not in OUT_DTYPES:
        raise KernelInputError(f"out: must be one of {', '.join(OUT_DTYPES)}, got {out!r}")
    if result is None:
        result = torch.empty((n, k), dtype=OUT_DTYPES[out], device=packed.device)
    _check(result, "result", OUT_DTYPES[out], 2, packed.device)
    ext.call("dequant_int4", packed.data_ptr(), scales.data_ptr(), 0 if zeros is None else zeros.data_ptr(),
             result.data_ptr(), n, k, group_size, formula, compute, out, _dev(packed), ext.stream_of(packed),
             check_scales)
    return result


def dequant_q4(blocks, qtype, *, result=None):
    """GGUF blocks (n, 18 | 20) uint8 -> (n, 32) float32."""
    _check(blocks, "blocks", torch.uint8, 2)
    width = {"Q4_0": 18, "Q4_1": 20}.get(qtype)
    if width is None:
        raise KernelInputError(f"qtype: must be Q4_0 or Q4_1, got {qtype!r}")
    if blocks.shape[1] != width:
        raise KernelInputError(f"blocks: {qtype} blocks are {width} bytes, got shape {tuple(blocks.shape)}")
    if result is None:
        result = torch.empty((blocks.shape[0], 32), dtype=torch.float32, device=blocks.device)
    _check(result, "result", torch.float32, 2, blocks.device)
    ext.call("dequant_q4", blocks.data_ptr(), result.data_ptr(), blocks.shape[0], qtype, _dev(blocks),
             ext.stream_of(blocks))
    return result


FP8_TORCH = {"float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2}


def dequant_fp8(q, scales, scaling, *, via="float32", check_scales=True, result=None):
    """q (N, K) torch float8 (K % 16 == 0), float32 scales -> (N, K) bfloat16."""
    fmt = {v: k for k, v in FP8_TORCH.items()}.get(getattr(q, "dtype", None))
    if fmt is None:
        raise KernelInputError(f"q: dtype {getattr(q, 'dtype', type(q))} is not float8_e4m3fn / float8_e5m2")
    _check(q, "q", q.dtype, 2)
    _check(scales, "scales", torch.float32, 2, q.device)
    n, k = q.shape
    bn, bk = -(-n // 128), -(-k // 128)
    want = {"tensor": (1, 1), "channel": (n, 1), "block": (bn, bk)}.get(scaling)
    if want is None:
        raise KernelInputError(f"scaling: must be tensor, channel or block, got {scaling!r}")
    if tuple(scales.shape) != want:
        raise KernelInputError(f"scales: shape {tuple(scales.shape)}, expected {want} for {scaling} scaling")
    if result is None:
        result = torch.empty((n, k), dtype=torch.bfloat16, device=q.device)
    _check(result, "result", torch.bfloat16, 2, q.device)
    ext.call("dequant_fp8", q.data_ptr(), scales.data_ptr(), result.data_ptr(), n, k, fmt, scaling, via,
             _dev(q), ext.stream_of(q), check_scales)
    return result
