"""NumPy <-> torch without value changes (bit views, bfloat16 and fp8 included): a probe feeds the same bits
to every backend, compares outputs with the numerics model bit for bit, and stores outputs in reports.
torch is imported on first use (probes that run without it import this module too)."""
import functools

import ml_dtypes
import numpy as np


@functools.lru_cache(maxsize=None)
def _views():
    """({torch dtype: (raw torch dtype, NumPy dtype)}, {NumPy dtype: (raw NumPy dtype, torch dtype)})."""
    import torch

    pairs = [(torch.bfloat16, torch.int16, ml_dtypes.bfloat16, np.int16),
             (torch.float8_e4m3fn, torch.uint8, ml_dtypes.float8_e4m3fn, np.uint8),
             (torch.float8_e5m2, torch.uint8, ml_dtypes.float8_e5m2, np.uint8)]
    return ({tt: (raw, npt) for tt, raw, npt, _ in pairs},
            {np.dtype(npt): (raw_np, tt) for tt, _, npt, raw_np in pairs})


def to_numpy(t):
    """A torch tensor (any device) as a NumPy array with the same bits."""
    t = t.detach().cpu().contiguous()
    view = _views()[0].get(t.dtype)
    if view:
        return t.view(view[0]).numpy().view(view[1])
    return t.numpy()


def torch_dtype(name):
    """The torch dtype of a format name: float32, float16, bfloat16, float8_e4m3fn, float8_e5m2, and tf32 (float32
    storage; its rounding is the matmul's business)."""
    import torch

    return {"float32": torch.float32, "tf32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
            "float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2}[name]


def to_torch(a, device="cpu"):
    """A NumPy array as a torch tensor on `device` with the same bits."""
    import torch

    a = np.ascontiguousarray(a)
    back = _views()[1].get(a.dtype)
    if back:
        return torch.from_numpy(a.view(back[0])).view(back[1]).to(device)
    return torch.from_numpy(a).to(device)
