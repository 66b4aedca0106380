"""Continuous batching's packed attention call, rebuilt for the tests and the timing script.

transformers' paged sdpa path (integrations/sdpa_paged.py) calls torch SDPA once per layer with every
scheduled request packed: the query tokens of all requests in one row of Lq (request r's q_len tokens at
offset qoff_r), their keys (cached ones, then the new ones) in one row of Lk (request r's k_len keys at
koff_r), and a block-diagonal causal additive mask (generation/continuous_batching/utils.py
build_attention_mask): query t of request r attends keys koff_r .. koff_r + k_len - q_len + t, every
other key holds finfo(dtype).min. `pack` builds exactly that from a list of `Request`s whose tensors
come from their own seeds, so one request has the same data wherever it is packed.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Request", "request_tensors", "pack", "PackedCall"]


@dataclass(frozen=True)
class Request:
    """One request of a packed step: q_len new query tokens, k_len keys in all (k_len >= q_len >= 1)."""
    q_len: int
    k_len: int
    seed: int


@dataclass
class PackedCall:
    q: object      # [1, Hq, Lq, D]
    k: object      # [1, Hk, Lk, D]
    v: object      # [1, Hk, Lk, D]
    mask: object   # [1, 1, Lq, Lk] additive (q's dtype) or bool
    q_offsets: list  # request r's query rows start here
    k_offsets: list  # request r's keys start here


def request_tensors(req, *, hq, hk, d, dtype, device="cpu", scale=1.0):
    """(q [hq, q_len, d], k [hk, k_len, d], v [hk, k_len, d]) of a request, drawn on `device` from its seed
    (the same request has the same tensors on the same device wherever it is packed)."""
    import torch

    if not 1 <= req.q_len <= req.k_len:
        raise ValueError(f"request {req}: needs 1 <= q_len <= k_len")
    g = torch.Generator(device=device).manual_seed(req.seed)
    q = torch.randn((hq, req.q_len, d), generator=g, device=device) * scale
    k = torch.randn((hk, req.k_len, d), generator=g, device=device)
    v = torch.randn((hk, req.k_len, d), generator=g, device=device)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def pack(requests, *, hq, hk, d, dtype, device="cpu", bool_mask=False, pad_q=0, pad_k=0, scale=1.0):
    """The packed SDPA inputs of one continuous-batching step (see the module docstring). pad_q / pad_k
    add rows / keys after the requests' (fully masked, as the engine's padded buffers are)."""
    import torch

    lq = sum(r.q_len for r in requests) + pad_q
    lk = sum(r.k_len for r in requests) + pad_k
    q = torch.zeros((1, hq, lq, d), dtype=dtype, device=device)
    k = torch.zeros((1, hk, lk, d), dtype=dtype, device=device)
    v = torch.zeros((1, hk, lk, d), dtype=dtype, device=device)
    allowed = torch.zeros((lq, lk), dtype=torch.bool, device=device)
    q_offsets, k_offsets = [], []
    qo = ko = 0
    for r in requests:
        rq, rk, rv = request_tensors(r, hq=hq, hk=hk, d=d, dtype=dtype, device=device, scale=scale)
        q[0, :, qo:qo + r.q_len] = rq
        k[0, :, ko:ko + r.k_len] = rk
        v[0, :, ko:ko + r.k_len] = rv
        # query t sees the request's keys 0 .. k_len - q_len + t
        allowed[qo:qo + r.q_len, ko:ko + r.k_len] = torch.ones((r.q_len, r.k_len), dtype=torch.bool,
                                                               device=device).tril(r.k_len - r.q_len)
        q_offsets.append(qo)
        k_offsets.append(ko)
        qo += r.q_len
        ko += r.k_len
    if bool_mask:
        mask = allowed
    else:
        mask = torch.zeros((lq, lk), dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)
    return PackedCall(q, k, v, mask[None, None], q_offsets, k_offsets)
