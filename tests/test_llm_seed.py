"""The seed experiment across machines, on the CPU: record on "machine A", compare on "machine B"
(here the same CPU): the same run is bit identical (replay too), bf16 differs and the comparison says
where; the comparison logic itself on hand-made records."""
import json

import numpy as np
import pytest
import torch

from llm.models import load
from llm.runconfig import parse_run
from llm.seed import compare, compare_prompt, main as seed_main, read_record, record
from probes.errors import UsageError


def _stats(tokens, p_next, argmax, greedy, top=5, p=0.5):
    return {"tokens": len(p_next) + 1, "ids": list(range(len(p_next) + 1)), "p_next": p_next, "argmax": argmax,
            "top": {"token": top, "piece": str(top), "p": p, "runner_up": 0, "runner_up_piece": "0",
                    "p_runner_up": 0.1},
            "greedy": {"tokens": greedy, "p": [0.5] * len(greedy), "runner_up": [0] * len(greedy),
                       "p_runner_up": [0.4] * len(greedy), "text": " ".join(map(str, greedy))}}


def test_compare_prompt_logic():
    a = _stats(3, [0.1, 0.2, 0.3], [4, 5, 6, 7], [1, 2, 3, 4])
    b = _stats(3, [0.1, 0.25, 0.3], [4, 5, 9, 7], [1, 2, 8, 4], top=6, p=0.4)
    c = compare_prompt(a, b, np.zeros(10, np.float32), np.full(10, 0.5, np.float32))
    assert c["first_token"]["same"] is False and abs(c["first_token"]["dp"] + 0.1) < 1e-12
    assert abs(c["p_next"]["max_abs_dp"] - 0.05) < 1e-12 and c["p_next"]["argmax_abs_dp"] == 1
    assert c["p_next"]["bitwise_equal"] is False
    assert c["top1_flips"] == 1 and c["first_top1_flip_position"] == 2
    assert c["greedy"]["first_divergence"] == 2 and c["greedy"]["at_divergence"]["b_token"] == 8
    assert c["last_logits"]["max_abs_dlogit"] == 0.5 and c["last_logits"]["bitwise_equal"] is False
    same = compare_prompt(a, a, np.ones(3, np.float32), np.ones(3, np.float32))
    assert same["greedy"]["first_divergence"] is None and same["top1_flips"] == 0
    assert same["p_next"]["bitwise_equal"] and same["last_logits"]["bitwise_equal"]
    b["ids"] = [9] * 4
    with pytest.raises(UsageError, match="different token ids"):
        compare_prompt(a, b, np.zeros(3), np.zeros(3))


def test_record_and_compare_tiny_mistral(tmp_path, capsys):
    out = tmp_path / "rec"
    assert seed_main(["record", "--device", "cpu", "--model", "mistral-tiny", "--max-tokens", "48", "--gen", "4",
                      "--out", str(out)]) == 0
    rec, last = read_record(out)
    assert set(rec["prompts"]) == {"seed", "retrieval"} and rec["run"]["dtype"] == "float32"
    assert rec["prompts"]["retrieval"]["tokens"] == 48 and len(rec["prompts"]["retrieval"]["p_next"]) == 47
    assert last["seed"].dtype == np.float32 and (out / "trace-seed.npz").is_file()
    capsys.readouterr()
    assert seed_main(["compare", str(out), "--device", "cpu", "--model", "mistral-tiny",
                      "--runs", "dtype=float32;dtype=bfloat16", "--out", str(tmp_path / "cmp")]) == 0
    text = capsys.readouterr().out
    assert "replay of A's trace [dtype=float32 / seed]" in text
    rep = json.loads((tmp_path / "cmp" / "seed-compare.json").read_text())
    m = {e["key"]: e["metrics"] for e in rep["experiments"]}
    same = m["llm-seed/seed/dtype=float32"]
    assert same["last_logits"]["bitwise_equal"] and same["p_next"]["bitwise_equal"]
    assert same["greedy"]["first_divergence"] is None
    assert all(r["bitwise_equal"] for r in same["replay"])           # every position recorded: bit exact
    bf = m["llm-seed/retrieval/dtype=bfloat16"]
    assert bf["last_logits"]["max_abs_dlogit"] > 0 and bf["p_next"]["max_abs_dp"] > 0 and "replay" not in bf


@pytest.mark.smollm2_data
def test_smollm2_record_seed_prompt(tmp_path):
    lm = load("smollm2")
    cfg = parse_run("")
    rec = record(lm, cfg, tmp_path, gen_steps=2, trace=False, prompts=("seed",), model_name="smollm2")
    s = rec["prompts"]["seed"]
    assert s["top"]["piece"] == " woods" and 0.3 < s["top"]["p"] < 0.5 and len(s["p_next"]) == s["tokens"] - 1
    rec2, last = read_record(tmp_path)
    res = compare(rec2, last, lm, [(cfg, lm)], tmp_path)
    c = res[cfg.text]["seed"]
    assert c["first_token"]["same"] and c["last_logits"]["bitwise_equal"] and c["greedy"]["first_divergence"] is None


def test_bad_record_folder(tmp_path):
    with pytest.raises(UsageError, match="no seed record"):
        read_record(tmp_path)
    (tmp_path / "record.json").write_text(json.dumps({"format": "other"}))
    np.savez(tmp_path / "last-logits.npz", seed=np.zeros(3, np.float32))
    with pytest.raises(UsageError, match="format"):
        read_record(tmp_path)
