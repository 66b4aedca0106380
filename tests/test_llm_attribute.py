"""Attribution on the CPU: planted faults are found, identical runs attribute zero, SmolLM2 says woods."""
import pytest
import torch

from llm.attribute import SEED_PROMPT, attribute
from llm.models import load
from llm.runconfig import parse_run, register_op
from llm.runs import NonFiniteError

TEXT = "The quick brown fox jumps over the lazy dog near the river bank."


@pytest.fixture(scope="module")
def smollm2():
    return load("smollm2")


def _ops(res):
    return [r for r in res["causal"] if r["kind"] == "op"]


@pytest.mark.parametrize("fault", ["L1.down_proj:float8_e4m3fn", "L0.attn_core:bfloat16", "L1.q_proj:float16"])
def test_planted_fault_ranked_first_tiny_mistral(fault):
    lm = load("mistral-tiny")
    ids = lm.tokenizer.encode(TEXT)
    res = attribute(lm, parse_run(""), lm, parse_run("round=" + fault), ids, gen_steps=0)
    site = fault.split(":")[0]
    assert res["drift"]["rms_dlogit"] > 0
    ops = _ops(res)
    assert ops[0]["unit"] == site
    assert ops[0]["contribution"] > 0.99
    assert all(abs(r["contribution"]) < 1e-6 for r in ops[1:])
    # local error: only the planted op differs when fed the reference's inputs
    nonzero = [r["site"] for r in res["local"] if r["max_ulp"] != 0]
    assert nonzero == [site]
    layers = [r for r in res["causal"] if r["kind"] == "layer"]
    assert layers[0]["unit"] == site.split(".")[0]
    # inject mode: the reference with the planted op's own error put in is the variant itself
    inj = [r for r in res["causal_inject"] if r["kind"] == "op"]
    assert inj[0]["unit"] == site and abs(inj[0]["contribution"] - 1) < 1e-6
    assert all(r["contribution"] == 0 for r in inj[1:])
    assert res["causal_default"] == "correct"
    # literal restore: restoring the faulty layer's outputs (and later ones') leaves no drift
    restore = {r["unit"]: r for r in res["restore_layers"]}
    assert restore[site.split(".")[0]]["rms_dlogit_after"] == 0


def test_identical_runs_attribute_zero_tiny_mistral():
    lm = load("mistral-tiny")
    ids = lm.tokenizer.encode(TEXT)
    res = attribute(lm, parse_run("batch=1"), lm, parse_run("batch=1"), ids, gen_steps=3)
    assert res["drift"]["max_dlogit"] == 0 and res["drift"]["top1_flips"] == 0
    assert all(r["contribution"] == 0 for r in res["causal"])
    assert all(r["contribution"] == 0 and r["rms_dlogit_injected"] == 0 for r in res["causal_inject"])
    assert all(r["max_ulp"] == 0 and r["rel_err"] == 0 for r in res["local"])
    assert res["generation"]["diverged"] is False


def test_bfloat16_and_batch_variant_runs_tiny_mistral():
    lm32 = load("mistral-tiny")
    lm16 = load("mistral-tiny", "cpu", torch.bfloat16)
    ids = lm32.tokenizer.encode(TEXT)
    res = attribute(lm32, parse_run(""), lm16, parse_run("dtype=bfloat16,batch=5,padding=right"), ids,
                    gen_steps=2, units=("layer",))
    assert res["drift"]["rms_dlogit"] > 0
    assert len(res["local"]) == 2 * 14 + 2 and any(r["max_ulp"] > 0 for r in res["local"])
    assert len(res["per_token"]["ref_p_next"]) == len(ids) - 1


def test_nan_reports_first_op():
    register_op("linear", "nan_test", lambda fn, x: fn(x) * float("nan"))
    lm = load("mistral-tiny")
    ids = lm.tokenizer.encode(TEXT)
    with pytest.raises(NonFiniteError, match=r"variant run .* first at L0\.q_proj"):
        attribute(lm, parse_run(""), lm, parse_run("linear=nan_test"), ids, gen_steps=0)


@pytest.mark.smollm2_data
def test_smollm2_woods(smollm2):
    from llm.generate import greedy
    from llm.runs import Run
    ids = smollm2.tokenizer.encode(SEED_PROMPT)
    steps = greedy(Run(smollm2, parse_run(""), ids), ids, 1)
    assert smollm2.tokenizer.decode([steps[0]["token"]]) == " woods"


@pytest.mark.smollm2_data
def test_planted_fault_ranked_first_smollm2(smollm2):
    ids = smollm2.tokenizer.encode(SEED_PROMPT)
    # layers first, then every op of the 2 layers that explain most (CPU time: a full op sweep is 453
    # forwards of SmolLM2; tiny Mistral and the 7B GPU test sweep every op)
    res = attribute(smollm2, parse_run(""), smollm2, parse_run("round=L7.down_proj:float8_e4m3fn"), ids,
                    gen_steps=0, units=("layer", "op"), drill=2, restore=False)
    ops = _ops(res)
    assert res["drift"]["rms_dlogit"] > 0
    assert [r["unit"] for r in res["causal"] if r["kind"] == "layer"][0] == "L7"
    assert len(ops) == 28 and ops[0]["unit"] == "L7.down_proj" and ops[0]["contribution"] > 0.99
    assert ops[1]["contribution"] < 0.01
    assert [r["site"] for r in res["local"] if r["max_ulp"] != 0] == ["L7.down_proj"]
    inj = [r for r in res["causal_inject"] if r["kind"] == "op"]
    assert inj[0]["unit"] == "L7.down_proj" and abs(inj[0]["contribution"] - 1) < 1e-6 and inj[1]["contribution"] == 0


@pytest.mark.smollm2_data
def test_identical_runs_attribute_zero_smollm2(smollm2):
    ids = smollm2.tokenizer.encode(SEED_PROMPT)
    res = attribute(smollm2, parse_run(""), smollm2, parse_run(""), ids, gen_steps=0, units=("class",),
                    restore=False)
    assert res["drift"]["max_dlogit"] == 0
    assert all(r["contribution"] == 0 for r in res["causal"])


def test_fp32_vs_bf16_inject_not_degenerate_tiny_mistral():
    """fp32 reference vs bf16 variant: inject is the default and ranks many ops with distinct nonzero
    fractions (the correct mode's corrections partly round away inside bf16)."""
    lm32 = load("mistral-tiny")
    lm16 = load("mistral-tiny", "cpu", torch.bfloat16)
    ids = lm32.tokenizer.encode(TEXT)
    res = attribute(lm32, parse_run(""), lm16, parse_run("dtype=bfloat16"), ids, gen_steps=0, restore=False)
    assert res["causal_default"] == "inject" and res["causal"] is res["causal_inject"]
    assert res["causal_modes"] == ["inject", "correct"]
    ops = [r for r in res["causal_inject"] if r["kind"] == "op"]
    assert len(ops) == 2 * 14 + 2
    big = [r for r in ops if r["contribution"] > 0.05]
    assert len(big) >= 8 and len({round(r["contribution"], 6) for r in big}) >= 6
    assert all(r["rms_dlogit_injected"] > 0 for r in big)
    # the layer units' injected drift is on the scale of the full drift
    layers = [r for r in res["causal_inject"] if r["kind"] == "layer"]
    assert 0.2 < max(r["contribution"] for r in layers) < 5
