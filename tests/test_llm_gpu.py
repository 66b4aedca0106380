"""GPU: the Mistral-7B shape (seeded weights, bfloat16): taps are bit exact, a planted fault is ranked first."""
import pytest
import torch

from llm.attribute import SEED_PROMPT, attribute
from llm.runconfig import parse_run

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def mistral():
    from llm.models import load
    return load("mistral-7b-random", "cuda:0", torch.bfloat16, 0)


def test_taps_bit_exact_7b(mistral):
    from llm.opmap import install
    ids = torch.tensor([mistral.tokenizer.encode(SEED_PROMPT)], device="cuda:0")
    om = install(mistral.model)
    om.remove()
    with torch.inference_mode():
        a = mistral.model(input_ids=ids, use_cache=False).logits
        install(mistral.model)
        b = mistral.model(input_ids=ids, use_cache=False).logits
    assert torch.equal(a.view(torch.int16), b.view(torch.int16))


def test_planted_fault_ranked_first_7b(mistral):
    ids = mistral.tokenizer.encode(SEED_PROMPT)
    ref = parse_run("device=cuda,dtype=bfloat16")
    var = parse_run("device=cuda,dtype=bfloat16,round=L17.down_proj:float8_e4m3fn")
    res = attribute(mistral, ref, mistral, var, ids, gen_steps=0, units=("op",))
    print("planted L17.down_proj fp8: drift", res["drift"], "top3", [(r["unit"], r["contribution"]) for r in res["causal"][:3]],
          "timings", res["timings"])
    assert res["drift"]["rms_dlogit"] > 0
    assert res["causal"][0]["unit"] == "L17.down_proj"
    assert res["causal"][0]["contribution"] > 0.9
    inj = res["causal_inject"]
    print("inject top3", [(r["unit"], r["contribution"]) for r in inj[:3]])
    assert inj[0]["unit"] == "L17.down_proj" and inj[0]["contribution"] > 0.9


def test_identical_runs_zero_7b(mistral):
    ids = mistral.tokenizer.encode(SEED_PROMPT)
    ref = parse_run("device=cuda,dtype=bfloat16")
    res = attribute(mistral, ref, mistral, ref, ids, gen_steps=0, units=("layer",))
    assert res["drift"]["max_dlogit"] == 0
    assert all(r["contribution"] == 0 for r in res["causal"])
    assert all(r["rms_dlogit_injected"] == 0 for r in res["causal_inject"])
