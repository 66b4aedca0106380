"""python -m probes.moe on the CPU (tiny-mixtral): its cases, its counts, its report, table and plot, bad options."""
import json
import math

import pytest

from probes import runner
from probes.errors import UsageError
from probes.moe.__main__ import main
from probes.moe.probe import MoEProbe

ARGS = ["--device", "cpu", "--batch-sizes", "1,8", "--routers", "capacity:1.0:drop,capacity:1.0:reroute",
        "--gen-steps", "2"]


@pytest.fixture(scope="module")
def report():
    return runner.measure(MoEProbe.from_argv(ARGS))


def test_plan_and_every_case_ok(report):
    keys = [e["key"] for e in report["experiments"]]
    assert keys == ["moe/near_tie", "moe/router_precision", "moe/arithmetic/batch=8",
                    "moe/routing/capacity:1:drop/batch=1", "moe/routing/capacity:1:drop/batch=8",
                    "moe/routing/capacity:1:reroute/batch=1", "moe/routing/capacity:1:reroute/batch=8"]
    assert all(e["status"] == "ok" for e in report["experiments"]), [e["message"] for e in report["experiments"]]
    assert report["config"]["model"] == "tiny-mixtral" and report["config"]["batch_sizes"] == [1, 8]


def test_routing_counts_are_consistent(report):
    exps = {e["key"]: e["metrics"] for e in report["experiments"]}
    for key, m in exps.items():
        if not key.startswith("moe/routing/"):
            continue
        T = m["prompt_tokens"]
        n = int(key.rsplit("=", 1)[1])
        assert len(m["routing"]) == 3 and len(m["layers"]) == 3
        for lay, r in zip(m["layers"], m["routing"]):
            assert lay["tokens"] == T
            assert lay["fraction_changed"] == lay["expert_set_changed"] / T
            assert lay["expert_set_changed"] == len(lay["changed_tokens"])
            assert r["capacity"] == math.ceil(1.0 * r["batch_tokens"] * 2 / 8 - 1e-9)
            assert r["probe_slots_dropped"] <= r["batch_slots_dropped"] <= 2 * r["batch_tokens"]
            assert r["probe_tokens_all_dropped"] * 2 <= r["probe_slots_dropped"]
            if n == 1:
                assert r["batch_tokens"] == T and r["probe_slots_dropped"] == r["batch_slots_dropped"]
        assert m["probe_slots_dropped"] == sum(r["probe_slots_dropped"] for r in m["routing"])
        if "reroute" in key:
            assert m["batch_slots_rerouted"] > 0
        else:
            assert m["batch_slots_rerouted"] == 0
    # capacity 1.0 with 8 experts and a random router overflows: the last row loses slots in the batch
    drop8 = exps["moe/routing/capacity:1:drop/batch=8"]
    assert drop8["probe_slots_dropped"] > 0 and drop8["fraction_changed_max"] > 0
    assert drop8["rms_dlogit"] > 0
    # rerouting drops fewer slots than dropping under the same capacity
    assert exps["moe/routing/capacity:1:reroute/batch=8"]["batch_slots_dropped"] < drop8["batch_slots_dropped"]
    # alone under its own rule, nothing depends on neighbours
    alone = exps["moe/routing/capacity:1:drop/batch=1"]["neighbours"]
    assert alone["rms_dlogit"] == 0 and alone["fraction_changed_max"] == 0


def test_router_precision_and_near_ties(report):
    exps = {e["key"]: e["metrics"] for e in report["experiments"]}
    prec = exps["moe/router_precision"]
    # a float32 router gives other (unrounded) gate weights, so the logits move even where no expert set changes
    assert prec["rms_dlogit"] > 0
    assert all(lay["router_logits_differ_fraction"] == 1.0 for lay in prec["layers"])
    tie = exps["moe/near_tie"]
    assert tie["top_k"] == 2 and len(tie["layers"]) == 3
    for lay in tie["layers"]:
        assert lay["dtype"] == "bfloat16" and len(lay["gap_ulps"]) == lay["tokens"]
        assert lay["min_gap_ulps"] >= 0 and lay["exact_ties"] <= lay["within_1_ulp"] <= lay["within_4_ulp"]
    assert isinstance(tie["arithmetic_flips"], list)
    gemm = exps["moe/arithmetic/batch=8"]["router_gemm"]
    assert len(gemm["layers"]) == 3 and all(lay["tokens"] == gemm_tokens for lay in gemm["layers"]
                                            for gemm_tokens in [exps["moe/arithmetic/batch=8"]["prompt_tokens"]])


def test_the_probe_first_claims_its_slots_first():
    """Layer 0's hidden states of the probe do not depend on the others: as the first row its first choices
    claim before every other token's, so it loses no more layer-0 slots than as the last row."""
    args = ["--device", "cpu", "--batch-sizes", "8", "--routers", "capacity:1.0:drop", "--gen-steps", "0"]
    first, last = (runner.measure(MoEProbe.from_argv(args + ["--probe-row", row])) for row in ("first", "last"))
    key = "moe/routing/capacity:1:drop/batch=8"
    f0 = next(e for e in first["experiments"] if e["key"] == key)["metrics"]["routing"][0]
    l0 = next(e for e in last["experiments"] if e["key"] == key)["metrics"]["routing"][0]
    assert f0["batch_slots_dropped"] == l0["batch_slots_dropped"]
    assert f0["probe_slots_dropped"] < l0["probe_slots_dropped"]


def test_command_line_writes_report_table_and_plot(tmp_path, capsys):
    out = tmp_path / "moe.json"
    assert main(["--device", "cpu", "--batch-sizes", "1,2", "--routers", "capacity:1.25:drop", "--gen-steps", "1",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "which effect dominates" in text and "routing: capacity:1.25:drop N=2" in text
    rep = json.loads(out.read_text())
    assert rep["probe"] == "moe" and rep["schema_version"] and rep["fingerprint"] and rep["config"]["seed"] == 0
    assert (tmp_path / "moe.png").exists() or "plot:   skipped" in text


@pytest.mark.parametrize("argv,match", [(["--routers", "capacity:0:drop"], "must be > 0"),
                                        (["--routers", "topk"], "capacity rules"),
                                        (["--routers", "capacity:1:spill"], "overflow"),
                                        (["--batch-sizes", "65"], "1..64"),
                                        (["--model", "mistral-tiny"], "not a mixture of experts"),
                                        (["--gen-steps", "-1"], "gen-steps")])
def test_bad_options(argv, match):
    with pytest.raises(UsageError, match=match):
        MoEProbe.from_argv(["--device", "cpu"] + argv)
