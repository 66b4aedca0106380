"""probes.collective on the CPU: gloo over 2 and 4 spawned processes (what torchrun launches), small inputs."""
import numpy as np
import pytest

from numerics import collective as col
from probes import report as reports
from probes.collective import dist as cdist
from probes.collective.probe import main, make_input
from probes.errors import UsageError


def run(tmp_path, world, *args):
    path = tmp_path / f"w{world}.json"
    cdist.spawn(world, main, ["--device", "cpu", "--json", str(path), "--no-plot", *args])
    return {e["key"]: e for e in reports.load_report(path)["experiments"]}, reports.load_report(path)


def test_two_ranks_every_collective(tmp_path):
    exps, rep = run(tmp_path, 2, "--dtypes", "float32,bfloat16", "--sizes", "64", "--runs", "2")
    assert rep["config"]["world_size"] == 2 and rep["config"]["variant"] == "gloo"
    assert len(exps) == 8 and all(e["status"] == "ok" for e in exps.values()), exps
    for key, e in exps.items():
        m = e["metrics"]
        assert m["distinct_runs"] == 1 and m["ranks_agree"] and m["max_ulp_between_runs"] == 0, key
        if "/all_gather/" in key:
            assert m["equal_inputs"] is True
        else:   # two ranks: one addition, commutative: every order is the rank order, and the exact sum rounded
            assert m["equal_rank_order"] == 1.0 and m["equal_ring_model"] == 1.0, key
            assert m["differ_from_exact"] == 0.0, key
    parts = np.stack([make_input(0, r, 64, "float32") for r in range(2)])
    got = reports.decode_output(exps["gloo/w=2/fixed_order/float32/n=64"])
    assert np.array_equal(got.view(np.uint32), col.rank_order_sum(parts).view(np.uint32))
    assert exps["gloo/w=2/fixed_order/float32/n=64"]["metrics"]["cost_vs_all_reduce"] > 0


def test_four_ranks_fixed_order_is_the_rank_order(tmp_path):
    exps, _ = run(tmp_path, 4, "--ops", "all_reduce,fixed_order", "--dtypes", "float32", "--sizes", "1000",
                  "--runs", "2")
    fixed = exps["gloo/w=4/fixed_order/float32/n=1000"]["metrics"]
    assert fixed["equal_rank_order"] == 1.0 and fixed["ranks_agree"] and fixed["distinct_runs"] == 1
    assert fixed["differ_from_exact"] > 0          # four ranks: a fixed order is not the exact sum
    ar = exps["gloo/w=4/all_reduce/float32/n=1000"]["metrics"]
    assert ar["ranks_agree"] and 0 <= ar["equal_rank_order"] <= 1


def test_without_torchrun_says_how_to_launch(monkeypatch):
    for k in cdist.DIST_VARS:
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(UsageError, match="torchrun"):
        main(["--device", "cpu"])
