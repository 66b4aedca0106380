"""The op map: installed taps give the original model's bits, and every op of every layer is seen."""
import pytest
import torch

from llm.models import load
from llm.opmap import FINAL_OPS, LAYER_OPS, install


@pytest.fixture(scope="module")
def smollm2():
    return load("smollm2")


def _logits(model, ids, mask=None):
    with torch.inference_mode():
        return model(input_ids=ids, attention_mask=mask, use_cache=False).logits


def _check(model, ids, mask=None):
    om = getattr(model, "_driftscope_opmap", None)
    if om is not None:
        om.remove()
    plain = _logits(model, ids, mask)
    om = install(model)
    seen = []

    def tap(layer, op, fn, *inputs):
        seen.append((layer, op))
        return fn(*inputs)

    om.tap = tap
    try:
        tapped = _logits(model, ids, mask)
    finally:
        om.tap = lambda layer, op, fn, *x: fn(*x)
    assert torch.equal(plain.view(torch.int32), tapped.view(torch.int32)), "taps changed the logits' bits"
    n = om.n_layers
    assert seen == [(i, op) for i in range(n) for op in LAYER_OPS] + [(n, op) for op in FINAL_OPS]
    assert seen == om.sites()
    return om


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_tiny_mistral_taps_are_bit_exact_and_complete(attn):
    model = load("mistral-tiny").model
    model.config._attn_implementation = attn
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 257, (3, 29), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :7] = 0
    _check(model, ids, mask)
    model.config._attn_implementation = "sdpa"


@pytest.mark.smollm2_data
def test_smollm2_taps_are_bit_exact_and_complete(smollm2):
    ids = torch.tensor([smollm2.tokenizer.encode("I enjoy walking in the")])
    om = _check(smollm2.model, ids)
    assert om.n_layers == 30 and len(om.sites()) == 30 * 14 + 2


def test_seeded_weights_are_deterministic_and_dtype_consistent():
    from llm.models import _load      # uncached: a second, independent build
    a = _load("mistral-tiny", "cpu", torch.float32, 3).model
    b = _load("mistral-tiny", "cpu", torch.float32, 3).model
    c = _load("mistral-tiny", "cpu", torch.bfloat16, 3).model
    for (n, p), q, r in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(p.view(torch.int32), q.view(torch.int32)), n
        assert torch.equal(p.to(torch.bfloat16).view(torch.int16), r.view(torch.int16)), n
    assert a.model.rotary_emb.inv_freq.dtype == torch.float32
    d = _load("mistral-tiny", "cpu", torch.float32, 4).model
    assert not torch.equal(a.lm_head.weight, d.lm_head.weight)


def test_unknown_model_is_a_clear_error():
    from probes.errors import UsageError
    with pytest.raises(UsageError, match="unknown model"):
        load("no-such-model-xyz")
