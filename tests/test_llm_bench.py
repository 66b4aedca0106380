"""`python -m llm.bench` on the CPU with the tiny model: a failed stage fails the run; reports record the
full command line."""
import json

import llm.attribute
from llm import bench
from probes.report import load_report


def test_failed_stage_fails_the_run_and_reports_record_argv(tmp_path, monkeypatch, capsys):
    """A planted failure in the first attribution: the later stages still run and write their report (with
    the command's arguments and the model it ran), and the exit status is 1, naming the failed stage."""
    real = llm.attribute.attribute

    def attribute(*args, progress_desc=None, **kw):
        if progress_desc == "fp32-vs-bf16":
            raise RuntimeError("planted failure")
        return real(*args, progress_desc=progress_desc, **kw)
    monkeypatch.setattr(llm.attribute, "attribute", attribute)
    argv = [str(tmp_path), "--device", "cpu", "--model", "mistral-tiny", "--max-tokens", "24"]
    assert bench.main(argv) == 1
    out = capsys.readouterr().out
    assert "STAGE FAILED: attribution fp32-vs-bf16" in out and "RuntimeError: planted failure" in out
    assert out.rstrip().splitlines()[-1] == "FAILED: 1 stage(s): attribution fp32-vs-bf16"
    assert json.loads((tmp_path / "summary.json").read_text())["failed_stages"] == ["attribution fp32-vs-bf16"]
    assert not (tmp_path / "fp32-vs-bf16.json").exists()
    rep = load_report(tmp_path / "bf16-batch1-vs-batch8.json")
    assert rep["command"] == ["python", "-m", "llm.bench", *argv]
    assert rep["config"]["model"] == "mistral-tiny"
    drift = next(e for e in rep["experiments"] if e["key"].endswith("/drift"))
    assert "top1_flips" in drift["compares"]["metrics"] and "wall_s" not in drift["compares"]["metrics"]
