"""tiny-mixtral: seeded weights, the op map's router/experts sites (bit-exact with transformers), router= runs,
attribution ranking them, and the bad input of issue 16."""
import pytest
import torch

from llm.attribute import attribute
from llm.models import load, mixtral_layers
from llm.opmap import FINAL_OPS, MOE_LAYER_OPS, install
from llm.runconfig import parse_run
from llm.runs import Run, RunTap
from probes.errors import UsageError

TEXT = "The quick brown fox jumps over the lazy dog near the river bank."


def _plain_logits(model, ids, mask=None, position_ids=None):
    om = getattr(model, "_driftscope_opmap", None)
    if om is not None:
        om.remove()
    with torch.inference_mode():
        return model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False).logits


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opmap_bit_exact_and_every_site_seen(dtype):
    lm = load("tiny-mixtral", dtype=dtype)
    assert lm.info["experts"] == 8 and lm.info["top_k"] == 2 and lm.info["layers"] == 3
    assert lm.model.config._experts_implementation == "eager"
    ids = torch.tensor([lm.tokenizer.encode(TEXT), lm.tokenizer.encode(TEXT[::-1])])
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    plain = _plain_logits(lm.model, ids, mask)
    om = install(lm.model)
    seen = []
    om.tap = lambda layer, op, fn, *x: (seen.append((layer, op)), fn(*x))[1]
    try:
        with torch.inference_mode():
            tapped = lm.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    finally:
        om.tap = lambda layer, op, fn, *x: fn(*x)
    bits = torch.int32 if dtype == torch.float32 else torch.int16
    assert torch.equal(plain.view(bits), tapped.view(bits)), "the op map changed the logits' bits"
    n = om.n_layers
    assert seen == [(i, op) for i in range(n) for op in MOE_LAYER_OPS] + [(n, op) for op in FINAL_OPS]
    assert om.sites() == seen


def test_seeded_weights_are_fixed_by_the_seed():
    a = load("tiny-mixtral").model.model.layers[1].mlp
    b = load("tiny-mixtral", seed=1).model.model.layers[1].mlp
    assert a.experts.gate_up_proj.shape == (8, 64, 64) and a.gate.weight.shape == (8, 64)
    assert not torch.equal(a.gate.weight, b.gate.weight)
    # the first element of the router weight: a function of (seed, parameter index, element) only
    again = load("tiny-mixtral", seed=0, dtype=torch.bfloat16).model.model.layers[1].mlp
    assert torch.equal(a.gate.weight.to(torch.bfloat16).view(torch.int16), again.gate.weight.view(torch.int16))


def test_router_capacity_changes_the_probe_only_in_a_batch():
    lm = load("tiny-mixtral")
    ids = lm.tokenizer.encode(TEXT)
    logs = {}
    for spec in ("batch=1", "batch=1,router=topk", "batch=1,router=capacity:1.0:drop", "batch=6,router=topk",
                 "batch=6,router=capacity:0.5:drop", "batch=6,router=capacity:0.5:reroute"):
        run = Run(lm, parse_run(spec), ids)
        run.routing_log = []
        logits = run.forward()
        logs[spec] = (logits, run.routing_log)
    alone = logs["batch=1"][0]
    assert torch.equal(alone, logs["batch=1,router=topk"][0])
    # alone, a capacity of 1.0 may still drop (the prompt's tokens compete among themselves): counted
    log = logs["batch=6,router=capacity:0.5:drop"][1]
    assert len(log) == 3 and all(r.capacity is not None for _, r in log)
    assert sum(r.dropped for _, r in log) > 0
    assert all(r.tokens < r.indices.shape[0] for _, r in log)      # padding is not routed
    rer = logs["batch=6,router=capacity:0.5:reroute"][1]
    assert sum(r.rerouted for _, r in rer) > 0
    assert sum(r.dropped for _, r in rer) < sum(r.dropped for _, r in log)
    assert not torch.equal(logs["batch=6,router=capacity:0.5:drop"][0], logs["batch=6,router=topk"][0])


def test_every_slot_dropped_leaves_the_residual():
    """A token none of whose slots got an expert: the experts op gives exactly 0, the layer its residual."""
    lm = load("tiny-mixtral")
    ids = lm.tokenizer.encode(TEXT)
    run = Run(lm, parse_run("batch=8,router=capacity:0.01:drop"), ids)
    run.routing_log = []
    rec = {}
    run.forward(RunTap(run, record=rec))
    layer, r = run.routing_log[-1]
    assert r.capacity == -(-r.tokens * 2 // 800) and r.tokens_all_dropped > 0      # ceil(0.01 * tokens * 2 / 8)
    # the prompt is row 0: its tokens' slots in the flattened batch
    row, a, b = run.region
    width = run.input_ids.shape[1]
    lost = [t - a for t in range(a, b) if (r.indices[row * width + t] == r.n_experts).all()]
    assert lost, "expected some of the prompt's tokens to lose every slot"
    experts = rec[(layer, "experts")]
    assert torch.equal(experts[lost], torch.zeros_like(experts[lost]))
    assert torch.equal(rec[(layer, "mlp_residual")][lost], rec[(layer, "attn_residual")][lost])
    assert torch.isfinite(run.forward()).all()


def test_attribution_ranks_a_faulty_router():
    lm = load("tiny-mixtral")
    ids = lm.tokenizer.encode(TEXT)
    res = attribute(lm, parse_run(""), lm, parse_run("round=L1.router:float8_e4m3fn"), ids, gen_steps=0,
                    restore=False, units=("op", "class"), modes=("correct",))
    assert res["drift"]["rms_dlogit"] > 0
    ops = [r for r in res["causal"] if r["kind"] == "op"]
    assert ops[0]["unit"] == "L1.router" and ops[0]["contribution"] > 0.99
    assert {r["unit"] for r in res["causal"] if r["kind"] == "class"} >= {"*.router", "*.experts"}
    assert "router" in res["layer_ops"] and "gate_proj" not in res["layer_ops"]


@pytest.mark.parametrize("spec,match", [("router=capacity:0:drop", "must be > 0"),
                                        ("router=capacity:-2:reroute", "must be > 0"),
                                        ("router=capacity:1:spill", "overflow"),
                                        ("router=switch", "unknown mode")])
def test_bad_router_option(spec, match):
    with pytest.raises(UsageError, match=match) as e:
        parse_run(spec)
    assert "run config" in str(e.value)


def test_router_on_a_model_without_experts():
    lm = load("mistral-tiny")
    with pytest.raises(UsageError, match="has no experts"):
        Run(lm, parse_run("router=topk"), lm.tokenizer.encode(TEXT))
    Run(lm, parse_run(""), lm.tokenizer.encode(TEXT))            # no router=: fine


def test_bad_model_names_and_weights():
    assert mixtral_layers("mixtral-8x7b-random") is None
    assert mixtral_layers("mixtral-8x7b-random:4") == 4
    assert mixtral_layers("mistral-tiny") is False
    for bad in ("mixtral-8x7b-random:0", "mixtral-8x7b-random:33", "mixtral-8x7b-random:x"):
        with pytest.raises(UsageError, match="LAYERS"):
            load(bad)
    with pytest.raises(UsageError, match="mixture of experts"):
        load("tiny-mixtral", weights="fp8")
    with pytest.raises(UsageError, match="op labels: L0..L2.*router"):
        Run(load("tiny-mixtral"), parse_run("round=L0.gate_proj:bfloat16"), [0, 1, 2])


def test_moe_path_has_no_reduction_the_deterministic_audit_flags():
    """The router's normalisation, the capacity rule and the expert loop use exact ops only: under
    llm.deterministic() nothing of the MoE path is left uncovered (attention is the mode's own)."""
    from llm.determinism import audit
    from probes.moe.routing import parse_router
    lm = load("tiny-mixtral", dtype=torch.bfloat16)
    om = install(lm.model)
    ids = torch.tensor([lm.tokenizer.encode(TEXT)] * 3)
    try:
        for rule in (None, "capacity:1.0:drop", "capacity:0.5:reroute"):
            om.router = parse_router(rule) if rule else None
            with torch.no_grad():         # (as llm.engine runs; under inference_mode linear is not decomposed)
                _, bad = audit(lambda: lm.model(input_ids=ids, use_cache=False).logits)
            assert {op for op in bad if "attention" not in op} == set(), (rule, bad)
    finally:
        om.router = None


def test_trace_replay_round_trip_with_router_and_experts(tmp_path, capsys):
    """llm.trace / llm.replay know the MoE ops: every position recorded, the replay is bit exact, and a planted
    rounding of one router shows at exactly that op."""
    from llm.replay import main as replay_main
    from llm.trace import main as trace_main, read_trace
    from probes.report import load_report
    path = tmp_path / "m.npz"
    assert trace_main(["--device", "cpu", "--model", "tiny-mixtral", "--layers", "all", "--positions", "all",
                       "--prompt", "walking in the woods", "--out", str(path)]) == 0
    meta, _ = read_trace(path)
    assert len(meta["sites"]) == 3 * len(MOE_LAYER_OPS) + 2 and "L1.router" in meta["sites"]
    js = tmp_path / "r.json"
    assert replay_main([str(path), "--device", "cpu", "--json", str(js)]) == 0
    rows = {e["key"].split("/", 1)[1]: e["metrics"] for e in load_report(js)["experiments"]}
    assert rows and all(r["bitwise_equal"] and r["max_ulp"] == 0 for r in rows.values())
    capsys.readouterr()
    assert replay_main([str(path), "--device", "cpu", "--run", "round=L1.router:float8_e4m3fn"]) == 0
    text = capsys.readouterr().out
    bad = [ln.split()[0] for ln in text.splitlines() if ln.strip().startswith(("L", "final")) and " False " in ln]
    assert bad == ["L1.router"]


def test_topk_run_in_a_padded_batch_is_the_models_own_forward():
    """router=topk routes padding too, as transformers does: a padded batch's logits are the model's bits."""
    lm = load("tiny-mixtral", dtype=torch.bfloat16)
    run = Run(lm, parse_run("dtype=bfloat16,batch=5,router=topk"), lm.tokenizer.encode(TEXT))
    tapped = run.forward()
    plain_all = _plain_logits(lm.model, run.input_ids, run.attention_mask, run.position_ids)
    row, a, b = run.region
    assert int(run.attention_mask.min()) == 0                   # other rows are padded (and routed, as HF does)
    assert torch.equal(tapped.view(torch.int32), plain_all[row, a:b].float().view(torch.int32))
