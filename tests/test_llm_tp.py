"""llm.tp: tensor parallelism emulated in one process (run config tp=W) and for real over 2 gloo ranks."""
import numpy as np
import pytest
import torch

from llm import tp
from llm.attribute import SEED_PROMPT, attribute
from llm.models import load
from llm.runconfig import parse_run
from llm.runs import Run
from numerics import collective as col
from probes import report as reports
from probes.collective import dist as cdist
from probes.errors import UsageError


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    lm = load("mistral-tiny", "cpu", torch.float32, 0)
    return lm, lm.tokenizer.encode(SEED_PROMPT)


def test_run_config_tp():
    cfg = parse_run("tp=2,tp_reduce=ring")
    assert (cfg.tp, cfg.tp_reduce) == (2, "ring") and parse_run("").tp == 1
    with pytest.raises(UsageError, match="tp must be >= 1"):
        parse_run("tp=0")
    with pytest.raises(UsageError, match="needs linear=torch"):
        parse_run("tp=2,linear=float64")
    with pytest.raises(UsageError, match="tp_reduce=exact not one of"):
        parse_run("tp=2,tp_reduce=exact")
    with pytest.raises(UsageError, match="tp_reduce=ring selects nothing without tp=W"):
        parse_run("tp_reduce=ring")


def test_tp_that_does_not_divide_the_heads_is_refused(tiny):
    lm, ids = tiny
    with pytest.raises(UsageError, match="num_attention_heads .4. is not divisible by 3"):
        Run(lm, parse_run("tp=3"), ids)


def test_emulated_all_reduce_orders_are_numerics_orders():
    rng = np.random.default_rng(5)
    parts = rng.standard_normal((4, 3, 37)).astype(np.float32)
    t = [torch.from_numpy(p) for p in parts]
    flat = parts.reshape(4, -1)
    for how, model in (("rank", col.rank_order_sum), ("ring", col.ring_sum), ("float64", col.exact_rank_sum)):
        got = tp.reduce_partials(t, how).numpy().reshape(-1)
        want = model(flat)
        if how == "float64":      # float64 sum rounded once: the exact sum unless float64 itself rounded
            values, exact = col.exact_values(flat)
            got, want = got[exact], want[exact]
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), how
    assert not torch.equal(tp.reduce_partials(t, "rank"), tp.reduce_partials(t, "ring"))


def test_emulated_tp2_moves_the_row_parallel_sites(tiny):
    """TP=2 vs TP=1 in float32 on the CPU: the logits differ (sharding does not give the same bits), and the local
    errors sit in the row-parallel linears (a split K, each half rounded, then the all-reduce); the
    column-parallel linears and the per-rank attention give the same bits as the whole ones here. The per-rank
    elementwise ops (act_mul on the rank's features, rotary on its heads) may move too, by host: torch's AVX-512
    SiLU rounds some elements by the row's length (a Sapphire Rapids host: act_mul moved; an AVX2 EPYC: not)."""
    lm, ids = tiny
    ref, var = parse_run("dtype=float32"), parse_run("dtype=float32,tp=2")
    assert torch.equal(Run(lm, var, ids).forward(), Run(lm, var, ids).forward())
    res = attribute(lm, ref, lm, var, ids, gen_steps=0, units=(), restore=False)
    assert res["drift"]["max_dlogit"] > 0
    moved = {r["op"] for r in res["local"] if r["max_ulp"] > 0}
    assert moved & set(tp.ROW_OPS) and moved <= set(tp.ROW_OPS) | {"act_mul", "rotary"}, moved


def test_real_tp2_equals_the_emulation_and_repeats(tmp_path):
    path = tmp_path / "tp.json"
    cdist.spawn(2, tp.main, ["--device", "cpu", "--runs", "2", "--gen-steps", "2", "--json", str(path)])
    exps = {e["key"]: e for e in reports.load_report(path)["experiments"]}
    for mode in ("native", "fixed"):
        m = exps[f"tp/mistral-tiny/float32/w=2/{mode}"]["metrics"]
        assert m["distinct_runs"] == 1 and m["equal_emulation"] is True, (mode, m)
        assert m["equal_tp1"] is False and m["max_dlogit"] > 0
    emu = exps["tp/mistral-tiny/float32/w=2/emulated"]
    assert reports.decode_output(emu).tobytes() == reports.decode_output(exps["tp/mistral-tiny/float32/w=2/fixed"]).tobytes()


def test_llm_tp_usage_errors(monkeypatch):
    for k in cdist.DIST_VARS:
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(UsageError, match="torchrun"):
        tp.main(["--device", "cpu"])
    monkeypatch.setenv("RANK", "0")
    for k, v in (("WORLD_SIZE", "2"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "1")):
        monkeypatch.setenv(k, v)
    with pytest.raises(UsageError, match="not --dtype float32"):
        tp.main(["--device", "cpu", "--deterministic"])
    with pytest.raises(UsageError, match="unknown all-reduce 'ring'"):
        tp.main(["--device", "cpu", "--allreduce", "ring"])
