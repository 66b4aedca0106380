"""linear=emulate:PROFILE (llm.emulate) and its exact evaluator (numerics.matmul_fast), on the CPU.

- numerics.matmul_fast gives numerics.matmul.model_matmul's bits for every model kind the profiles use
  (measured H100 models, published ones, split-K, promotion, narrow accumulators, the fp32 FMA chain);
- an emulated linear of tiny Mistral equals the numerics model of the profile's plan bit for bit
  (uint views), and differs between two profiles whose models differ;
- a whole run with linear=emulate works through llm.runs / llm.attribute;
- bad input (unknown profile, no model for the dtype, another schema version) is a clear UsageError,
  never the native linear."""
import json

import numpy as np
import pytest
import torch

from numerics.matmul import MatmulModel, model_matmul
from numerics.matmul_fast import fast_matmul, fast_matmul_nt, fast_supported, matmul_bits
from probes.accumulator.validate import random_operands
from probes.errors import UsageError
from probes.profile import ProfileError, linear_plan, load_profile

MODELS = [
    MatmulModel("bfloat16", 16, 2, "toward_zero", align_to="exponent_sum"),                 # H100 measured
    MatmulModel("bfloat16", 8, 2, "toward_zero", align_to="exponent_sum", split_k=4),       # cuBLAS 317^2
    MatmulModel("float16", 4, 0, "toward_zero", align_to="exponent_sum"),                   # T4-like
    MatmulModel("float16", 8, 1, "toward_zero"),                                            # A100 (value)
    MatmulModel("float16", 8, 3, "nearest_even", final_rounding="toward_zero", split_k=3, split_align=64),
    MatmulModel("float32", 1, None, "nearest_even", split_k=4),                             # SGEMM chain
    MatmulModel("float8_e4m3fn", 32, -10, "toward_zero", align_to="exponent_sum", promote_every=128, sum_bits=14),
    MatmulModel("tf32", 8, 2, "toward_zero", align_to="exponent_sum"),
]


def _u32(x):
    return np.asarray(x, np.float64).astype(np.float32).view(np.uint32)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.describe())
def test_fast_matmul_equals_model_matmul(model):
    A, B, _ = random_operands(model.input_format, 1600, 160, seed=7)     # normal / mixed / cancelling rows
    A[1, :] = 0.0
    A[2, 3] = 0.0
    ref = model_matmul(A, B, model)
    assert np.array_equal(_u32(fast_matmul(A, B, model, chunk=20_000)), _u32(ref))
    got = fast_matmul_nt(A.astype(np.float32), np.ascontiguousarray(B.T).astype(np.float32), model, chunk=9_000)
    assert np.array_equal(_u32(got), _u32(ref))


def test_matmul_bits_are_model_matmuls_bits_either_way():
    """What the accumulator probe's fit and validation evaluate: fast_matmul where it is exact, model_matmul
    where it is not (unnormalised blocks, inexact products), the same bits both ways."""
    slow = [MatmulModel("bfloat16", 16, 2, "toward_zero", normalize=False),
            MatmulModel("float16", 8, 3, "toward_zero", exact_products=False)]
    assert all(fast_supported(m) is not None for m in slow) and fast_supported(MODELS[0]) is None
    for model in (MODELS[0], MODELS[-2], *slow):
        A, B, _ = random_operands(model.input_format, 400, 96, seed=3)
        assert np.array_equal(_u32(matmul_bits(A, B, model)), _u32(model_matmul(A, B, model)))


def test_fast_matmul_refuses_what_it_cannot_do_exactly():
    m = MatmulModel("bfloat16", 16, 2, "toward_zero", normalize=False)
    assert "normalize" in fast_supported(m)
    with pytest.raises(ValueError, match="model_matmul"):
        fast_matmul(np.ones((2, 4)), np.ones((4, 2)), m)


# ---- profiles -> plans --------------------------------------------------------------------------------------

def test_linear_plan_k_order_from_the_measured_h100():
    prof = load_profile("h100")
    # q_o (N = K = 4096) bf16: split-K 2 at M = 1 (measured), none at M = 64 (measured)
    p1 = linear_plan(prof, "bfloat16", 4096, 4096, 1)
    assert p1.model.split_k == 2 and p1.k_order_basis == "measured" and p1.model.block_size == 16
    assert linear_plan(prof, "bfloat16", 4096, 4096, 64).model.split_k == 1
    # M = 5: not listed, but in M = 1's sweep group (row 0's bits change only at M = 17): split-K 2, assumed
    p5 = linear_plan(prof, "bfloat16", 4096, 4096, 5)
    assert p5.model.split_k == 2 and p5.k_order_basis == "assumed" and "sweep group" in p5.k_order_source
    # a shape the GEMM probe never saw (SmolLM2's 576): the default, assumed
    ps = linear_plan(prof, "bfloat16", 576, 576, 6)
    assert ps.model.split_k == 1 and ps.k_order_basis == "assumed"


def test_t4_like_has_no_bfloat16_and_says_so():
    with pytest.raises(ProfileError, match="no linear model for dtype bfloat16.*float16"):
        linear_plan(load_profile("t4-like"), "bfloat16", 64, 64, 1)


# ---- emulated linears in runs -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny16():
    from llm.models import load
    return load("mistral-tiny", "cpu", torch.float16)


@pytest.mark.parametrize("profile", ["h100", "t4-like", "a10g-like"])
def test_emulated_linear_is_the_profiles_model_bit_for_bit(tiny16, profile):
    from llm.emulate import EmulatedLinear
    lin = tiny16.model.model.layers[0].mlp.down_proj                  # K = 160, N = 64
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(2, 5, lin.weight.shape[1], generator=g) * 4).to(torch.float16)
    em = EmulatedLinear(profile)
    y = em(lin, x)
    plan = linear_plan(load_profile(profile), "float16", *lin.weight.shape, 10)
    ref = model_matmul(x.reshape(10, -1).double().numpy(), lin.weight.double().numpy().T, plan.model)
    want = torch.from_numpy(ref.astype(np.float32)).to(torch.float16).reshape(2, 5, -1)
    assert y.dtype == torch.float16 and y.shape == want.shape
    assert torch.equal(y.view(torch.int16), want.view(torch.int16))
    assert em.summary()["plans"][0]["k_order_basis"] == "assumed"         # no split-K measured at K = 160


def test_two_profiles_give_different_bits(tiny16):
    from llm.emulate import EmulatedLinear
    lin = tiny16.model.model.layers[1].mlp.down_proj
    x = (torch.randn(4, lin.weight.shape[1], generator=torch.Generator().manual_seed(2)) * 8).to(torch.float16)
    a, b = EmulatedLinear("t4-like")(lin, x), EmulatedLinear("a10g-like")(lin, x)
    assert not torch.equal(a.view(torch.int16), b.view(torch.int16))    # 4-term blocks vs 8-term, p 0 vs 1


def test_run_with_emulated_linears_and_attribution(tiny16):
    from llm.attribute import attribute
    from llm.runconfig import parse_run
    from llm.runs import Run
    ids = tiny16.tokenizer.encode("The quick brown fox.")
    cfg = parse_run("dtype=float16,linear=emulate:a10g-like")
    logits_a, cache = Run(tiny16, cfg, ids).record()
    logits_b = Run(tiny16, cfg, ids).forward()
    assert torch.equal(logits_a, logits_b) and torch.isfinite(logits_a).all()
    native = Run(tiny16, parse_run("dtype=float16"), ids).forward()
    assert not torch.equal(native, logits_a)          # the linears really were replaced
    res = attribute(tiny16, parse_run("dtype=float16,linear=emulate:t4-like"), tiny16,
                    parse_run("dtype=float16,linear=emulate:a10g-like"), ids, gen_steps=2, units=("class",),
                    modes=("correct",), restore=False)
    assert res["drift"]["rms_dlogit"] > 0                  # T4-like vs A10G-like linears move the logits


def test_bad_profiles_are_usage_errors(tmp_path):
    from llm.runconfig import parse_run
    with pytest.raises(UsageError, match="unknown profile 'no-such-gpu'.*h100"):
        parse_run("dtype=float16,linear=emulate:no-such-gpu")
    with pytest.raises(UsageError, match="t4-like.*no linear model for dtype bfloat16"):
        parse_run("dtype=bfloat16,linear=emulate:t4-like")
    with pytest.raises(UsageError, match="needs a profile"):
        parse_run("dtype=float16,linear=emulate:")
    prof = load_profile("h100")
    prof["schema_version"] = 99
    old = tmp_path / "old.json"
    old.write_text(json.dumps(prof))
    with pytest.raises(UsageError, match="schema version 99"):
        parse_run(f"dtype=float16,linear=emulate:{old}")


def test_predict_labels_everything_a_prediction(tiny16):
    import llm.predict as predict
    res = predict.predict(tiny16, ["t4-like", "a10g-like"], "float16", ["seed"], 1, max_tokens=6)
    text = predict.format_prediction(res, tiny16.tokenizer)
    assert res["label"] == "PREDICTION" and text.startswith("PREDICTIONS (not measurements)")
    c = res["comparisons"]["a10g-like"]["seed"]
    assert c["tokens"] == 6 and "first_divergence" in c["greedy"]
    assert all(line.lstrip().startswith(("PREDICTION", "position", "[", "assumed", "1", "2", "3", "4", "5"))
               for line in text.splitlines()[1:])
    assert "(exact, on this CPU), everything else by this machine's cpu kernels" in text.splitlines()[0]
    with pytest.raises(UsageError, match="at least two"):
        predict.main(["--profiles", "t4-like"])


def test_predict_takes_the_retrieval_prompt(tiny16):
    import llm.predict as predict
    from llm.attribute import RETRIEVAL_PROMPT_FILE
    res = predict.predict(tiny16, ["t4-like", "a10g-like"], "float16", ["retrieval"], 0, max_tokens=5)
    ids = tiny16.tokenizer.encode(RETRIEVAL_PROMPT_FILE.read_text(encoding="utf-8"))[:5]
    assert res["profiles"]["t4-like"]["retrieval"]["ids"] == ids and "seed" not in res["profiles"]["t4-like"]
    assert res["comparisons"]["a10g-like"]["retrieval"]["tokens"] == 5
    with pytest.raises(UsageError, match="unknown prompt.*nope"):
        predict.predict(tiny16, ["t4-like", "a10g-like"], "float16", ["nope"], 0)


def test_check_forward_compares_every_linear_op(tiny16):
    """The GPU check's code path on the CPU: every linear op of a native forward also emulated."""
    from llm.emulate import check_forward
    from llm.runconfig import parse_run
    res = check_forward(tiny16, parse_run("dtype=float16"), "a10g-like", tiny16.tokenizer.encode("Hello there"))
    assert res["linear_ops"] == 2 * 7 + 1 and 0 <= res["bit_exact_ops"] <= res["linear_ops"]
    assert all(0.0 <= r["equal_fraction"] <= 1.0 for r in res["ops"])
