"""llm.serve --router on tiny-mixtral (CPU, default mode only: the deterministic mode's kernels run interpreted
here, minutes): each engine step routes with its own capacity, and the report counts what was dropped."""
import json

import pytest

from llm.serve import main
from probes.errors import UsageError

BASE = ["--device", "cpu", "--model", "tiny-mixtral", "--dtype", "bfloat16", "--copies", "2", "--background", "4",
        "--max-new-tokens", "3", "--modes", "default", "--static", "", "--attribute", "0", "--no-plot"]


def test_serve_with_a_capacity_counts_dropped_slots(tmp_path, capsys):
    out = tmp_path / "serve.json"
    assert main(BASE + ["--router", "capacity:0.5:drop", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["config"]["router"] == "capacity:0.5:drop"
    m = next(e for e in rep["experiments"] if e["key"] == "serve/default/completions")["metrics"]
    assert m["router"] == "capacity:0.5:drop"
    r = m["routing"]
    assert r["calls"] > 0 and r["calls"] % 3 == 0                  # 3 MoE layers per engine step
    assert 0 < r["slots_dropped"] <= 2 * r["tokens"] and r["slots_rerouted"] == 0
    assert "slots dropped" in capsys.readouterr().out
    assert m["finished"] == 2


def test_serve_router_needs_experts():
    with pytest.raises(UsageError, match="has no experts"):
        main(["--device", "cpu", "--model", "mistral-tiny", "--router", "capacity:1:drop", "--copies", "1"])
    with pytest.raises(UsageError, match="must be > 0"):
        main(BASE + ["--router", "capacity:0:drop"])
