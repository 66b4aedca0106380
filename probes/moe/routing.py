"""The routing rule of a mixture-of-experts layer: which experts each token's hidden state goes to.

    spec = parse_router("capacity:1.25:drop")       # or "topk", "capacity:FACTOR:reroute"
    r = route(router_logits, top_k=2, spec=spec, token_mask=mask)
    r.indices   # [N, top_k] expert of each slot, n_experts where the slot was dropped
    r.weights   # [N, top_k] float32 gate weight of each slot, 0 where dropped
    r.dropped   # slots dropped (tokens whose every slot was dropped: r.tokens_all_dropped)

`topk` routes every token (padding too, as the model's own forward does); a capacity counts the tokens of
`token_mask` only (a server packs requests without padding).

- `topk` (the default): Mixtral's own dropless rule (transformers' MixtralTopKRouter): softmax of the
  router logits in float32, the top_k experts, their probabilities divided by their sum. Every token
  gets its top_k experts whatever else is in the batch.
- `capacity:FACTOR:drop` / `capacity:FACTOR:reroute`: a GShard / Switch-style expert capacity computed
  per batch, as a server computes it for the tokens of one forward:
  ``capacity = ceil(FACTOR * tokens * top_k / n_experts)`` (tokens: the tokens routed, padding excluded).
  Slots claim their expert in a fixed order, rank-major then token-major (every token's first choice,
  in token order, then every token's second choice, ...; GShard gives first choices priority). A slot
  whose expert is already full overflows:
  - drop: the slot is dropped (weight 0): the token gets fewer experts, or none, and then only its
    residual passes the layer (the experts op returns 0 for it);
  - reroute: after every original slot has claimed, the overflowed slots, in the same order, each go
    to the token's next-best expert (by router probability, outside its own top_k and the experts it
    was already rerouted to) that still has room; dropped only where none has.
  The weight of a slot is the router probability of the expert it ends on, divided by the sum of the
  token's original top_k probabilities (Mixtral's normalisation; a rerouted slot weighs what its new
  expert's probability says).

Whether a token's experts depend on the other tokens of its batch is exactly what capacity changes: with
`topk` they never do (only the arithmetic of the router's logits can flip them); with a capacity, a
token's slots can overflow because of tokens ahead of it in the order.

Pure torch; tests/test_moe_routing.py checks `route` against a plain-Python loop of the same rule.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from probes.errors import UsageError

__all__ = ["RouterSpec", "Routing", "parse_router", "capacity", "route", "MODES", "OVERFLOW"]

MODES = ("topk", "capacity")
OVERFLOW = ("drop", "reroute")


@dataclasses.dataclass(frozen=True)
class RouterSpec:
    mode: str = "topk"          # topk | capacity
    factor: float = 0.0         # capacity factor (capacity mode)
    overflow: str = ""          # drop | reroute (capacity mode)

    @property
    def text(self) -> str:
        return "topk" if self.mode == "topk" else f"capacity:{self.factor:g}:{self.overflow}"


def parse_router(text: str, where: str = "router") -> RouterSpec:
    """`topk` | `capacity:FACTOR:drop` | `capacity:FACTOR:reroute` -> RouterSpec. UsageError names the bad part
    (`where` prefixes the message: the run config that holds it)."""
    text = (text or "").strip()
    if text == "topk":
        return RouterSpec()
    parts = text.split(":")
    if parts[0] != "capacity":
        raise UsageError(f"{where}: router={text!r}: unknown mode {parts[0]!r} "
                         "(topk, capacity:FACTOR:drop or capacity:FACTOR:reroute)")
    if len(parts) != 3:
        raise UsageError(f"{where}: router={text!r} is not capacity:FACTOR:drop|reroute")
    try:
        factor = float(parts[1])
    except ValueError:
        raise UsageError(f"{where}: router={text}: capacity factor {parts[1]!r} is not a number") from None
    if not math.isfinite(factor) or factor <= 0:
        raise UsageError(f"{where}: router={text}: capacity factor must be > 0, got {parts[1]}")
    if parts[2] not in OVERFLOW:
        raise UsageError(f"{where}: router={text}: overflow {parts[2]!r} not one of {', '.join(OVERFLOW)}")
    return RouterSpec("capacity", factor, parts[2])


def capacity(n_tokens: int, top_k: int, n_experts: int, factor: float) -> int:
    """Slots per expert: ceil(factor * tokens * top_k / n_experts)."""
    return int(math.ceil(factor * n_tokens * top_k / n_experts - 1e-9))


@dataclasses.dataclass
class Routing:
    indices: torch.Tensor       # [N, k] int64; n_experts = dropped slot (or a token not routed)
    weights: torch.Tensor       # [N, k] float32; 0 for dropped slots
    logits: torch.Tensor        # [N, E] the router logits it was computed from
    capacity: int | None        # slots per expert (None: dropless)
    tokens: int                 # tokens counted (a capacity: padding excluded)
    dropped: int                # slots dropped
    rerouted: int               # slots moved to another expert
    tokens_all_dropped: int     # tokens none of whose slots got an expert (residual only)
    n_experts: int

    def expert_sets(self) -> torch.Tensor:
        """[N, E] bool: which experts each token's hidden state goes to."""
        n = self.indices.shape[0]
        out = torch.zeros(n, self.n_experts + 1, dtype=torch.bool, device=self.indices.device)
        out.scatter_(1, self.indices, True)
        return out[:, :self.n_experts]


def _topk(logits: torch.Tensor, top_k: int):
    """Mixtral's router on logits [N, E]: float32 softmax, top_k, normalised (transformers' own code)."""
    probs = torch.softmax(logits.float(), dim=-1)
    top_v, top_i = torch.topk(probs, top_k, dim=-1)
    # their sum in rank order, one add at a time: for Mixtral's top-2 the bits of torch.sum (one rounding of
    # a + b), without the aten sum that llm.deterministic()'s audit flags
    total = top_v[:, :1]
    for j in range(1, top_k):
        total = total + top_v[:, j:j + 1]
    return probs, top_i, top_v / total, total


def route(logits: torch.Tensor, top_k: int, spec: RouterSpec = RouterSpec(), token_mask=None) -> Routing:
    """Route the tokens of one batch (logits [N, E], any float dtype) by `spec`. token_mask [N] bool, for a
    capacity: the tokens that count (False: padding, which claims no slot and counts for nothing; indices
    n_experts, weight 0). `topk` routes every token, padding too, as the model's own forward does (its bits)."""
    N, E = logits.shape
    if not 1 <= top_k <= E:
        raise UsageError(f"top_k {top_k} for {E} experts")
    probs, top_i, top_w, top_sum = _topk(logits, top_k)
    if spec.mode == "topk":
        return Routing(top_i, top_w, logits, None, N, 0, 0, 0, E)
    valid = torch.ones(N, dtype=torch.bool, device=logits.device) if token_mask is None \
        else token_mask.reshape(-1).to(device=logits.device, dtype=torch.bool)
    n_tok = int(valid.count_nonzero())
    cap = capacity(n_tok, top_k, E, spec.factor)
    # claim order: rank-major, then token order; padding claims nothing. A slot's place in its expert's queue
    # by a stable sort (exact ops only: no integer sums or cumsums, which llm.deterministic()'s audit flags)
    order_e = top_i.t().reshape(-1)                                   # [k*N], slot (r, t) at r*N + t
    order_ok = valid.repeat(top_k)
    keyed = torch.where(order_ok, order_e, torch.full_like(order_e, E))   # padding queues behind expert E
    sorted_e, perm = torch.sort(keyed, stable=True)
    place = torch.arange(len(keyed), device=keyed.device) - torch.searchsorted(sorted_e, sorted_e, side="left")
    position = torch.empty_like(place)
    position[perm] = place
    kept = order_ok & (position < cap)
    load = torch.bincount(order_e[kept], minlength=E)                 # slots taken per expert
    kept = kept.view(top_k, N).t()                                    # [N, k]
    idx = torch.where(kept, top_i, torch.full_like(top_i, E))
    w = torch.where(kept, top_w, torch.zeros_like(top_w))
    rerouted = 0
    if spec.overflow == "reroute":
        over = (~kept & valid[:, None]).t().reshape(-1).nonzero().flatten().tolist()   # claim order
        if over:
            # the token's experts best first; the rerouting candidates are those outside its top_k
            ranking = torch.sort(probs, dim=-1, descending=True, stable=True).indices.cpu().tolist()
            tops = top_i.cpu().tolist()
            room = (cap - load).cpu().tolist()
            p = probs.cpu()
            denom = top_sum.squeeze(1).cpu()
            idx_c, w_c = idx.cpu(), w.cpu()
            used = {}
            for s in over:
                r, t = divmod(s, N)
                taken = used.setdefault(t, set(tops[t]))
                for e in ranking[t]:
                    if e not in taken and room[e] > 0:
                        room[e] -= 1
                        taken.add(e)
                        idx_c[t, r] = e
                        w_c[t, r] = p[t, e] / denom[t]
                        rerouted += 1
                        break
            idx, w = idx_c.to(logits.device), w_c.to(logits.device)
    dropped_mask = (idx == E) & valid[:, None]
    dropped = int(dropped_mask.count_nonzero())
    all_dropped = int((dropped_mask.all(dim=1) & valid).count_nonzero())
    return Routing(idx, w, logits, cap, n_tok, dropped, rerouted, all_dropped, E)
