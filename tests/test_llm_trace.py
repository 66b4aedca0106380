"""Trace on "machine A" -> replay on "machine B" (here the same CPU): the round trip is bit exact
when every position is recorded, and a planted fault in the replay run shows at exactly that op."""
import pytest

from llm.replay import main as replay_main
from llm.trace import main as trace_main, read_trace
from probes.errors import UsageError


def test_trace_replay_round_trip(tmp_path, capsys):
    path = tmp_path / "a.npz"
    assert trace_main(["--device", "cpu", "--model", "mistral-tiny", "--layers", "all", "--positions", "all",
                       "--prompt", "walking in the woods", "--out", str(path)]) == 0
    meta, ops = read_trace(path)
    assert len(meta["sites"]) == 2 * 14 + 2 and meta["positions"] == list(range(len(meta["prompt_ids"])))
    js = tmp_path / "r.json"
    assert replay_main([str(path), "--device", "cpu", "--json", str(js)]) == 0
    from probes.report import load_report
    rows = {e["key"].split("/", 1)[1]: e["metrics"] for e in load_report(js)["experiments"]}
    assert all(r["bitwise_equal"] and r["max_ulp"] == 0 for r in rows.values())
    capsys.readouterr()
    assert replay_main([str(path), "--device", "cpu", "--run", "round=L1.up_proj:float8_e4m3fn"]) == 0
    text = capsys.readouterr().out
    bad = [l.split()[0] for l in text.splitlines() if l.strip().startswith(("L", "final")) and " False " in l]
    assert bad == ["L1.up_proj"]


def test_trace_bounded_positions_bf16(tmp_path):
    path = tmp_path / "b.npz"
    assert trace_main(["--device", "cpu", "--model", "mistral-tiny", "--run", "dtype=bfloat16", "--layers", "1",
                       "--positions", "0,-1", "--prompt", "I enjoy walking in the", "--out", str(path)]) == 0
    meta, ops = read_trace(path)
    assert meta["positions"] == [0, len(meta["prompt_ids"]) - 1]
    q, dt = ops["L1.q_proj"]["out"][0]
    assert dt == "bfloat16" and q.shape[0] == 2
    k, _ = ops["L1.attn_core"]["in"][1]
    assert k.shape[0] == len(meta["prompt_ids"])          # all keys kept for the attention core


def test_bad_trace_file(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="not a readable llm trace"):
        read_trace(bad)
    with pytest.raises(UsageError, match="does not exist"):
        read_trace(tmp_path / "missing.npz")
