"""Faults attribution was not built around (llm.faults): inside ops, spread over layers, outside the op
map. Each is the model's own computation bit for bit with an exact format, changes the logits with a
coarse one, and is found by attribution where it acts (or at the first tapped ops that read it).
Where the ranking is NOT a clean hit (several faults: correct mode), the tests say what is true."""
import dataclasses
import math

import pytest
import torch

from llm.attribute import attribute
from llm.faults import fault_sites, spread_sites
from llm.models import load
from llm.opmap import all_sites, site_label
from llm.runconfig import RunConfig, parse_run
from llm.runs import Run
from probes.errors import UsageError

TEXT = "The quick brown fox jumps over the lazy dog near the river bank."


@pytest.fixture(scope="module")
def tiny():
    lm = load("mistral-tiny")
    return lm, lm.tokenizer.encode(TEXT)


def _bits(t):
    return t.contiguous().view(torch.int32)


@pytest.mark.parametrize("attn, faults", [
    ("sdpa", "inner=*:input:float32"),
    ("sdpa", "inner=*.rotary:cos_sin:float32"),
    ("sdpa", "inner=*norm:mean_square:float32"),
    ("eager", "inner=*.attn_core:scores:float32+*.attn_core:softmax_sum:float32"),
    ("sdpa", "spread=30:0:float32"),
    ("sdpa", "embed=float32"),
    ("sdpa", "rope=float32"),
])
def test_exact_format_is_the_model_bit_for_bit(tiny, attn, faults):
    """The re-implemented steps (RMSNorm, eager attention, rotary embedding) are transformers' own op
    for op: with float32 (exact in a float32 run) the logits keep every bit."""
    lm, ids = tiny
    plain = Run(lm, parse_run(f"attn={attn}"), ids).forward()
    faulted = Run(lm, parse_run(f"attn={attn},{faults}"), ids).forward()
    assert torch.equal(_bits(plain), _bits(faulted))


@pytest.mark.parametrize("reference, variant, site", [
    ("", "inner=L1.o_proj:input:bfloat16", "L1.o_proj"),
    ("", "inner=L0.v_proj:input:float8_e4m3fn", "L0.v_proj"),
    ("", "inner=L1.post_attn_norm:mean_square:bfloat16", "L1.post_attn_norm"),
    ("", "inner=final.final_norm:mean_square:float16", "final.final_norm"),
    ("", "inner=L1.rotary:cos_sin:bfloat16", "L1.rotary"),
    ("attn=eager", "attn=eager,inner=L1.attn_core:scores:bfloat16", "L1.attn_core"),
    ("attn=eager", "attn=eager,inner=L0.attn_core:softmax_sum:bfloat16", "L0.attn_core"),
])
def test_fault_inside_an_op_ranked_first(tiny, reference, variant, site):
    lm, ids = tiny
    res = attribute(lm, parse_run(reference), lm, parse_run(variant), ids, gen_steps=0, restore=False)
    assert res["drift"]["rms_dlogit"] > 0
    assert [r["site"] for r in res["local"] if r["max_ulp"] != 0] == [site]
    for mode in ("correct", "inject"):
        ops = [r for r in res["causal_" + mode] if r["kind"] == "op"]
        assert ops[0]["unit"] == site and abs(ops[0]["contribution"] - 1) < 1e-3
        assert all(abs(r["contribution"]) < 1e-6 for r in ops[1:])
        layer = site.split(".")[0]
        assert next(r for r in res["causal_" + mode] if r["kind"] == "layer")["unit"] == layer


def test_embedding_fault_found_at_the_ops_that_read_it(tiny):
    """embed= is not a tap site: the first tapped ops that read the embedding (L0.input_norm, and
    L0.attn_residual through the residual) carry the whole error, between them."""
    lm, ids = tiny
    res = attribute(lm, parse_run(""), lm, parse_run("embed=bfloat16"), ids, gen_steps=0, restore=False,
                    top_k=(2,))
    expected = {"L0.input_norm", "L0.attn_residual"}
    assert {r["site"] for r in res["local"] if r["max_ulp"] != 0} == expected
    for mode in ("correct", "inject"):
        ops = [r for r in res["causal_" + mode] if r["kind"] == "op"]
        assert {r["unit"] for r in ops[:2]} == expected and ops[1]["contribution"] > 0.05
        assert all(r["contribution"] == 0 for r in ops[2:])
        assert abs(res["joint_" + mode][0]["contribution"] - 1) < 1e-3      # the two together: all of it
        assert next(r for r in res["causal_" + mode] if r["kind"] == "layer")["unit"] == "L0"


def test_rope_fault_found_in_every_rotary_op(tiny):
    """rope= rounds the shared rotary angles, outside the op map: every layer's rotary op carries it,
    and the op class *.rotary explains all of the drift."""
    lm, ids = tiny
    res = attribute(lm, parse_run(""), lm, parse_run("rope=bfloat16"), ids, gen_steps=0, restore=False,
                    units=("op", "class"))
    assert [r["site"] for r in res["local"] if r["max_ulp"] != 0] == ["L0.rotary", "L1.rotary"]
    for mode in ("correct", "inject"):
        rows = res["causal_" + mode]
        top_class = next(r for r in rows if r["kind"] == "class")
        assert top_class["unit"] == "*.rotary" and abs(top_class["contribution"] - 1) < 1e-3
        assert {r["unit"] for r in rows if r["kind"] == "op" and r["contribution"] != 0} == {"L0.rotary", "L1.rotary"}


@pytest.mark.parametrize("variant, n, negative", [("inner=*.o_proj:input:tf32", 2, False),
                                                   ("spread=8:1:tf32", 8, True)])
def test_spread_faults(tiny, variant, n, negative):
    """Many small faults. In both modes exactly the faulted ops have nonzero contributions. inject
    (the reference with one op's own error put in) splits the drift cleanly: its top n ops are the n
    faulted ones, the n together explain all of it, and the single-op fractions' squares sum to ~1
    (uncorrelated errors). correct does NOT: a faulted op downstream of another rounds the variant's
    (already perturbed) inputs, not the reference's, so taking out the error measured on the
    reference's inputs leaves its own rounding in. Its single-op contributions are small and far from
    adding up to 1; with 8 random sites some are negative, rank below the unfaulted ops' zeros, and
    its top 8 explain only part of the drift (docs/results/llm-cpu/faults.txt)."""
    lm, ids = tiny
    cfg = parse_run(variant)
    faulted = {site_label(s, 2) for s in fault_sites(cfg, 2)}
    assert len(faulted) == n
    res = attribute(lm, parse_run(""), lm, cfg, ids, gen_steps=0, restore=False, top_k=(n,))
    assert {r["site"] for r in res["local"] if r["max_ulp"] != 0} == faulted
    for mode in ("correct", "inject"):
        ops = [r for r in res["causal_" + mode] if r["kind"] == "op"]
        assert {r["unit"] for r in ops if r["contribution"] != 0} == faulted
    inj = [r for r in res["causal_inject"] if r["kind"] == "op"]
    assert {r["unit"] for r in inj[:n]} == faulted and all(r["contribution"] > 0 for r in inj[:n])
    assert abs(res["joint_inject"][0]["contribution"] - 1) < 0.05
    assert abs(sum(r["contribution"] ** 2 for r in inj) - 1) < 0.1
    layers = {r["unit"]: r["contribution"] for r in res["causal_inject"] if r["kind"] == "layer"}
    assert layers["L0"] > 0.1 and layers["L1"] > 0.1 and layers["final"] == 0      # spread over both layers
    cor = [r for r in res["causal_correct"] if r["kind"] == "op"]
    assert sum(r["contribution"] for r in cor) < 0.5
    assert any(r["contribution"] < 0 for r in cor if r["unit"] in faulted) == negative
    assert (res["joint_correct"][0]["contribution"] < 0.9) == negative


def test_spread_sites_seeded():
    a, b = spread_sites((8, 1, "tf32"), 2), spread_sites((8, 1, "tf32"), 2)
    assert a == b and len(set(a)) == 8 and a == [s for s in all_sites(2) if s in a]      # execution order
    assert spread_sites((8, 2, "tf32"), 2) != a


def test_runconfig_round_trip():
    cfg = parse_run("attn=eager,round=L0.q_proj:bfloat16,inner=*.o_proj:input:tf32+L1.attn_core:softmax_sum:float16,"
                    "spread=3:7:bfloat16,embed=float16,rope=bfloat16")
    assert cfg.inner == (("*.o_proj", "input", "tf32"), ("L1.attn_core", "softmax_sum", "float16"))
    assert cfg.spread == (3, 7, "bfloat16") and cfg.embed == "float16" and cfg.rope == "bfloat16"
    assert RunConfig.from_dict(cfg.as_dict()) == cfg
    old = {k: v for k, v in cfg.as_dict().items() if k not in ("inner", "spread", "embed", "rope")}
    assert RunConfig.from_dict(old) == dataclasses.replace(cfg, inner=(), spread=(), embed="", rope="")


LABELS = "L0..L1.{input_norm, q_proj"


@pytest.mark.parametrize("spec, message", [
    ("round=L5.q_proj:bfloat16", "round=L5.q_proj:bfloat16 selects nothing: pattern 'L5.q_proj' matches no op"),
    ("round=L0.q_proj:bfloat16+L0.qproj:bfloat16", "round=L0.qproj:bfloat16 selects nothing"),
    ("inner=L9.*:input:bfloat16", "inner=L9.*:input:bfloat16 selects nothing: pattern 'L9.*' matches no op"),
    ("inner=L0.*_proj:mean_square:bfloat16", "mean_square is a step of input_norm, post_attn_norm, final_norm only"),
    ("attn=eager,inner=*.rotary:softmax_sum:bfloat16", "softmax_sum is a step of attn_core only"),
])
def test_option_selecting_no_op_is_an_error(tiny, spec, message):
    lm, ids = tiny
    cfg = parse_run(spec)                   # the patterns are checked against the model's op map ...
    with pytest.raises(UsageError) as err:
        Run(lm, cfg, ids)                   # ... when the run is prepared
    assert message in str(err.value) and LABELS in str(err.value) and "final.{final_norm, lm_head}" in str(err.value)


@pytest.mark.parametrize("spec, message", [
    ("spread=0:1:bfloat16", "selects nothing (COUNT must be >= 1)"),
    ("spread=8:bfloat16", "not COUNT:SEED:FORMAT"),
    ("inner=L0.q_proj:bfloat16", "not PATTERN:STEP:FORMAT"),
    ("inner=L0.q_proj:output:bfloat16", "step 'output' not one of input, cos_sin"),
    ("inner=L0.attn_core:scores:bfloat16", "scores is a step of eager attention (attn=eager)"),
    ("inner=L0.q_proj:input:float7", "unknown format 'float7'"),
    ("embed=float7", "embed=float7: unknown format"),
    ("rope=int5", "rope=int5: unknown format"),
])
def test_bad_fault_options_at_parse_time(spec, message):
    with pytest.raises(UsageError) as err:
        parse_run(spec)
    assert message in str(err.value)


def test_spread_more_sites_than_the_model_has(tiny):
    lm, ids = tiny
    with pytest.raises(UsageError, match="COUNT 31 is more than the model's 30 op sites"):
        Run(lm, parse_run("spread=31:0:bfloat16"), ids)


def test_mean_square_with_norm_replacement_is_an_error(tiny):
    lm, ids = tiny
    with pytest.raises(UsageError, match="not with norm=float64"):
        Run(lm, parse_run("norm=float64,inner=*norm:mean_square:bfloat16"), ids)


def test_replay_refuses_what_it_cannot_apply(tmp_path, capsys):
    from llm.replay import main as replay_main
    from llm.trace import main as trace_main
    from probes.cli import guarded_main
    path = tmp_path / "a.npz"
    assert trace_main(["--device", "cpu", "--model", "mistral-tiny", "--layers", "1", "--positions", "-1",
                       "--prompt", "walking", "--out", str(path)]) == 0
    capsys.readouterr()
    for run, message in (("round=L0.q_proj:bfloat16", "matches no traced op (traced: L1.input_norm"),
                         ("inner=L1.o_proj:input:bfloat16", "applies round= faults only, not inner=")):
        assert guarded_main(replay_main, [str(path), "--device", "cpu", "--run", run]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def test_faultstudy_cli(tmp_path, capsys):
    from llm.faultstudy import main
    from probes.report import load_report
    js, txt = tmp_path / "f.json", tmp_path / "f.txt"
    assert main(["--models", "mistral-tiny", "--cases", "input,embed", "--json", str(js), "--table", str(txt)]) == 0
    rep = load_report(js)
    assert rep["probe"] == "llm-faults" and rep["fingerprint"]
    rows = {e["key"]: e for e in rep["experiments"]}
    assert set(rows) == {f"llm-faults/mistral-tiny/{c}/{m}" for c in ("input", "embed") for m in ("correct", "inject")}
    hit = rows["llm-faults/mistral-tiny/input/correct"]["metrics"]
    assert hit["top_op"] == "L1.o_proj" and hit["top_op_expected"] and hit["best_expected_rank"] == 1
    assert math.isclose(hit["joint_top1"], 1, abs_tol=1e-3) and hit["local_nonzero"] == ["L1.o_proj"]
    emb = rows["llm-faults/mistral-tiny/embed/inject"]["metrics"]
    assert emb["expected"] == ["L0.input_norm", "L0.attn_residual"] and emb["recall_at_n"] == 1
    assert rows["llm-faults/mistral-tiny/embed/inject"]["inputs"]["weights_seed"] == 0
    assert "L1.o_proj" in txt.read_text() and "embed" in capsys.readouterr().out


def test_faultstudy_bad_case():
    from llm.faultstudy import main
    with pytest.raises(UsageError, match="case"):
        main(["--cases", "nonsense"])
