"""NumPy <-> torch without value changes (bit views, bfloat16 and fp8 included): a probe feeds the same bits
to every backend, compares outputs with the numerics model bit for bit, and stores outputs in reports."""
import ml_dtypes
import numpy as np
import torch

_VIEW = {torch.bfloat16: (torch.int16, ml_dtypes.bfloat16), torch.float8_e4m3fn: (torch.uint8, ml_dtypes.float8_e4m3fn),
         torch.float8_e5m2: (torch.uint8, ml_dtypes.float8_e5m2)}
_BACK = {np.dtype(ml_dtypes.bfloat16): (np.int16, torch.bfloat16),
         np.dtype(ml_dtypes.float8_e4m3fn): (np.uint8, torch.float8_e4m3fn),
         np.dtype(ml_dtypes.float8_e5m2): (np.uint8, torch.float8_e5m2)}


def to_numpy(t):
    t = t.detach().cpu().contiguous()
    if t.dtype in _VIEW:
        raw, npt = _VIEW[t.dtype]
        return t.view(raw).numpy().view(npt)
    return t.numpy()


def to_torch(a, device="cpu"):
    a = np.ascontiguousarray(a)
    if a.dtype in _BACK:
        raw, tt = _BACK[a.dtype]
        return torch.from_numpy(a.view(raw)).view(tt).to(device)
    return torch.from_numpy(a).to(device)
