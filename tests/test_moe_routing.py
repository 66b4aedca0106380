"""probes.moe.routing: the routing rule against a plain-Python loop of the same rule, and its bad input."""
import math

import pytest
import torch

from probes.errors import UsageError
from probes.moe.routing import RouterSpec, capacity, parse_router, route


def reference_route(logits, top_k, factor=None, overflow=None, valid=None):
    """The rule written out slot by slot (module docstring of probes.moe.routing): lists, no tensors."""
    N, E = logits.shape
    probs = torch.softmax(logits.float(), -1).tolist()
    valid = [True] * N if valid is None else [bool(v) for v in valid]
    order = [sorted(range(E), key=lambda e: (-probs[t][e], e)) for t in range(N)]
    tops = [o[:top_k] for o in order]
    denom = [sum(probs[t][e] for e in tops[t]) for t in range(N)]
    idx = [[tops[t][r] if valid[t] else E for r in range(top_k)] for t in range(N)]
    if factor is None:
        return idx, 0
    n_tok = sum(valid)
    cap = math.ceil(factor * n_tok * top_k / E - 1e-9)
    load = [0] * E
    overflowed = []
    for r in range(top_k):                 # rank-major, then token order
        for t in range(N):
            if not valid[t]:
                continue
            e = tops[t][r]
            if load[e] < cap:
                load[e] += 1
            else:
                idx[t][r] = E
                overflowed.append((r, t))
    dropped = len(overflowed)
    if overflow == "reroute":
        used = {}
        for r, t in overflowed:
            taken = used.setdefault(t, set(tops[t]))
            for e in order[t]:
                if e not in taken and load[e] < cap:
                    load[e] += 1
                    taken.add(e)
                    idx[t][r] = e
                    dropped -= 1
                    break
    return idx, dropped, denom, probs


def _logits(n, e, seed, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, e, generator=g) * scale


@pytest.mark.parametrize("n,e,k,factor,overflow", [(37, 8, 2, 1.0, "drop"), (37, 8, 2, 1.0, "reroute"),
                                                   (50, 8, 2, 0.5, "drop"), (50, 8, 2, 0.5, "reroute"),
                                                   (23, 4, 1, 1.25, "reroute"), (64, 8, 3, 2.0, "drop")])
def test_route_matches_the_plain_python_rule(n, e, k, factor, overflow):
    for seed in range(3):
        logits = _logits(n, e, seed)
        valid = torch.ones(n, dtype=torch.bool)
        valid[::7] = False                           # some padding: claims nothing, counts for nothing
        r = route(logits, k, RouterSpec("capacity", factor, overflow), token_mask=valid)
        idx, dropped, denom, probs = reference_route(logits, k, factor, overflow, valid.tolist())
        assert r.indices.tolist() == idx
        assert r.dropped == dropped
        assert r.capacity == math.ceil(factor * int(valid.sum()) * k / e - 1e-9)
        loads = torch.bincount(r.indices.flatten(), minlength=e + 1)[:e]
        assert int(loads.max()) <= r.capacity
        for t in range(n):
            for s in range(k):
                ex = idx[t][s]
                want = 0.0 if ex == e else probs[t][ex] / denom[t]
                assert float(r.weights[t, s]) == pytest.approx(want, rel=1e-6, abs=0)
        if overflow == "reroute":
            # a token never holds one expert twice
            for t in range(n):
                got = [x for x in r.indices[t].tolist() if x != e]
                assert len(got) == len(set(got))


def test_topk_is_the_models_own_rule_and_drops_nothing():
    logits = _logits(40, 8, 5)
    r = route(logits, 2, RouterSpec())
    probs = torch.softmax(logits.float(), -1)
    v, i = torch.topk(probs, 2, -1)
    assert torch.equal(r.indices, i)
    assert torch.equal(r.weights.view(torch.int32), (v / v.sum(-1, keepdim=True)).view(torch.int32))
    assert r.dropped == 0 and r.capacity is None and r.tokens == 40
    assert r.indices.tolist() == reference_route(logits, 2)[0]


def test_capacity_depends_on_the_batch_and_topk_does_not():
    """The point of it all: a token's experts under a capacity change with the tokens ahead of it."""
    probe = _logits(1, 8, 9)
    others = probe.repeat(30, 1) + 0.01 * _logits(30, 8, 10)     # everyone wants the probe's experts
    alone = route(probe, 2, RouterSpec("capacity", 1.0, "drop"))
    batched = route(torch.cat([others, probe]), 2, RouterSpec("capacity", 1.0, "drop"))
    assert alone.dropped == 0
    assert (batched.indices[-1] == 8).all()            # the probe, last in token order, lost both slots
    assert batched.tokens_all_dropped >= 1
    topk_alone, topk_batched = route(probe, 2), route(torch.cat([others, probe]), 2)
    assert torch.equal(topk_alone.indices[0], topk_batched.indices[-1])


def test_expert_sets():
    r = route(_logits(5, 8, 1), 2, RouterSpec("capacity", 0.4, "drop"))
    sets = r.expert_sets()
    assert sets.shape == (5, 8)
    assert sets.sum().item() == 10 - r.dropped


def test_capacity_formula():
    assert capacity(10, 2, 8, 1.0) == 3          # ceil(2.5)
    assert capacity(8, 2, 8, 1.0) == 2           # exact: no extra slot from float error
    assert capacity(100, 2, 8, 1.25) == 32       # ceil(31.25)
    assert capacity(1, 2, 8, 0.01) == 1


@pytest.mark.parametrize("text,match", [("capacity:0:drop", "must be > 0"), ("capacity:-1:drop", "must be > 0"),
                                        ("capacity:nan:drop", "must be > 0"), ("capacity:x:drop", "not a number"),
                                        ("capacity:1.0:spill", "overflow 'spill'"), ("capacity:1.0", "is not"),
                                        ("expert_choice", "unknown mode"), ("", "unknown mode")])
def test_bad_router_text(text, match):
    with pytest.raises(UsageError, match=match):
        parse_router(text)


def test_parse_router_roundtrip():
    assert parse_router("topk") == RouterSpec()
    s = parse_router("capacity:1.25:reroute")
    assert (s.mode, s.factor, s.overflow) == ("capacity", 1.25, "reroute")
    assert parse_router(s.text) == s
