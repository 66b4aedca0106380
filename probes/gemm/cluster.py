"""Bitwise clustering of outputs and their errors against a float64 reference.

Outputs that are the same product computed by different kernels are grouped by their bits (uint views,
torch.equal on the device, never allclose). Only one representative per group is kept, so hundreds of
large outputs can be clustered on a GPU. Errors: relative error max|y - ref| / max|ref| (normwise, in
float64) and the largest ulp distance to the reference rounded to y's dtype, with the ulp distance of
`numerics.formats.ulp_distance` (tested against it on the CPU).
"""
from __future__ import annotations

import numpy as np

_INT_OF = {2: "int16", 4: "int32", 8: "int64"}


def bits(y):
    """The integer view of a torch tensor (same shape), for bit-for-bit comparison."""
    import torch

    return y.contiguous().view(getattr(torch, _INT_OF[y.element_size()]))


def ulp_distance_torch(a, b):
    """Element-wise |pos(a) - pos(b)| as int64, pos as in numerics.formats.ulp_distance (sign-magnitude
    ordinals: -0 and +0 are 0 apart, crossing zero adds both magnitudes). a, b: same dtype float tensors."""
    import torch

    if a.dtype != b.dtype or a.shape != b.shape:
        raise ValueError(f"ulp_distance_torch: need the same dtype and shape, got {a.dtype}{tuple(a.shape)} "
                         f"and {b.dtype}{tuple(b.shape)}")
    if torch.isnan(a).any() or torch.isnan(b).any():
        raise ValueError("ulp_distance_torch: NaN has no position")
    nbits = a.element_size() * 8
    mask = (1 << (nbits - 1)) - 1
    ia, ib = bits(a).to(torch.int64), bits(b).to(torch.int64)
    mag_a, mag_b = ia & mask, ib & mask
    neg_a, neg_b = ia < 0, ib < 0
    return torch.where(neg_a == neg_b, (mag_a - mag_b).abs(), mag_a + mag_b)


def errors(y, ref64):
    """{rel_error, max_ulp} of y against the float64 reference ref64 (same shape)."""
    import torch

    yd = y.double()
    denom = ref64.abs().max().item()
    diff = (yd - ref64).abs().max().item()
    rounded = ref64.to(torch.float32).to(y.dtype) if y.dtype != torch.float32 else ref64.to(torch.float32)
    return {"rel_error": diff / denom if denom else diff,
            "max_ulp": int(ulp_distance_torch(y, rounded).max().item()),
            "ulp_reference": "float64 reference rounded to the output dtype (through float32 for 16-bit types)"}


class Clusterer:
    """Feed outputs one by one; `add` returns the index of the bitwise-identical group."""

    def __init__(self):
        self.reps = []      # one bits view per group
        self.members = []   # indices per group

    def add(self, y, index=None):
        import torch

        b = bits(y)
        index = len(sum(self.members, [])) if index is None else index
        for g, rep in enumerate(self.reps):
            if rep.shape == b.shape and rep.dtype == b.dtype and torch.equal(rep, b):
                self.members[g].append(index)
                return g
        self.reps.append(b.clone())
        self.members.append([index])
        return len(self.reps) - 1

    def representative(self, g):
        """The group's output, as the original float dtype is lost in the view: caller re-views it."""
        return self.reps[g]


def cluster(outputs):
    """Groups (lists of indices, first-appearance order) of bitwise-identical outputs (torch or NumPy)."""
    import torch

    c = Clusterer()
    for i, y in enumerate(outputs):
        if isinstance(y, np.ndarray):
            y = torch.from_numpy(np.ascontiguousarray(y).view(getattr(np, "u" + _INT_OF[y.itemsize])).view(
                getattr(np, _INT_OF[y.itemsize])))
        c.add(y, i)
    return c.members
