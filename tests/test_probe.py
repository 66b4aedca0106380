"""The probe skeleton (probes.probe, probes.runner) through the example probe of docs/probes.md: axes and
their flags, skips with reasons, an error per failing case, the exit status, and a run interrupted by SIGTERM
(a partial report, exit 130) that --resume completes with the same results as a run in one go."""
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from probes import report as reports
from probes import runner
from probes.cli import guarded_main
from probes.probe import Case

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The example probe of docs/probes.md, as the module file order_probe.py."""
    text = (ROOT / "docs" / "probes.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    path = tmp_path_factory.mktemp("example") / "order_probe.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location("order_probe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, path


def run(example, tmp_path, *args):
    path = tmp_path / "order.json"
    status = guarded_main(lambda argv: runner.main(example[0].OrderProbe, argv),
                          ["--device", "cpu", "--json", str(path), "--no-plot", *args])
    return status, path


def test_the_example_runs_its_plan_and_records_why_a_case_cannot_run(example, tmp_path, capsys):
    status, path = run(example, tmp_path)
    assert status == 0
    rep = reports.load_report(path)
    assert "partial" not in rep and rep["probe"] == "order" and rep["fingerprint"]["device"] == "cpu"
    exps = {e["key"]: e for e in rep["experiments"]}
    assert len(exps) == 3 * 3 * 2                             # backend x n x order, in the declared order
    assert list(exps)[:2] == ["sequential/forward/n=10", "sequential/reverse/n=10"]
    big = exps["sequential/forward/n=1000000"]
    assert big["status"] == "skipped" and big["message"] == "a Python loop: n <= 100000 only"
    assert "skipped sequential/forward/n=1000000: a Python loop" in capsys.readouterr().err
    # the sequential float32 loop is the reference order: NumPy's pairwise sum differs from it at n = 1000
    seq, pair = exps["sequential/forward/n=1000"], exps["numpy/forward/n=1000"]
    x = np.random.default_rng([0, 1000]).standard_normal(1000).astype(np.float32)
    acc = np.float32(0)
    for v in x:
        acc = np.float32(acc + v)
    assert reports.decode_output(seq).view(np.uint32)[0] == np.float32(acc).view(np.uint32)
    assert reports.decode_output(pair).view(np.uint32)[0] == np.add.reduce(x, dtype=np.float32).view(np.uint32)
    assert seq["metrics"]["reverse_same_bits"] in (True, False) and "reverse_same_bits" in pair["metrics"]
    assert rep["config"]["backends"] == ["sequential", "numpy", "torch"] and rep["config"]["sizes"] == [10, 1000, 10**6]
    # the skeleton times every case (what the suite's page shows as the slowest)
    assert set(rep["config"]["case_seconds"]) == set(exps)
    assert all(s >= 0 for s in rep["config"]["case_seconds"].values()) and rep["config"]["finish_seconds"] >= 0


def test_axis_flags_select_and_refuse(example, tmp_path, capsys):
    status, path = run(example, tmp_path, "--backends", "numpy", "--sizes", "7,2^4")
    assert status == 0
    assert [e["key"] for e in reports.load_report(path)["experiments"]] == [
        "numpy/forward/n=7", "numpy/reverse/n=7", "numpy/forward/n=16", "numpy/reverse/n=16"]
    capsys.readouterr()
    assert run(example, tmp_path, "--backends", "numpy,cuda")[0] == 2
    err = capsys.readouterr().err
    assert err == "error: unknown backend 'cuda'; available: sequential, numpy, torch\n"


def test_a_failing_case_is_an_error_record_and_the_run_goes_on(example, tmp_path, capsys, monkeypatch):
    probe_class = example[0].OrderProbe

    def broken(self, x, device):
        raise RuntimeError("no such kernel")
    monkeypatch.setattr(type(probe_class.backends["torch"]), "sum", broken)
    status, path = run(example, tmp_path, "--sizes", "10")
    assert status == 1                                      # an experiment failed
    exps = {e["key"]: e for e in reports.load_report(path)["experiments"]}
    assert exps["torch/forward/n=10"]["status"] == "error"
    assert exps["torch/forward/n=10"]["message"] == "RuntimeError: no such kernel"
    assert exps["numpy/reverse/n=10"]["status"] == "ok"
    err = capsys.readouterr().err
    assert "error in torch/forward/n=10: RuntimeError: no such kernel" in err and "2 experiments failed" in err


def test_a_case_adds_its_experiments_whole(example):
    """What a failing case added before it raised is withdrawn: the case is one error record."""
    probe = example[0].OrderProbe.from_argv(["--device", "cpu", "--backends", "numpy", "--sizes", "10"],
                                            log=lambda line: None)

    def half(case, report):
        probe.add(report, case, output=np.zeros(1, np.float32))
        raise ValueError("after the first experiment")
    probe.run_case = half
    rep = runner.measure(probe, fingerprint={"device": "cpu"})
    assert [(e["key"], e["status"]) for e in rep["experiments"]] == [("numpy/forward/n=10", "error"),
                                                                     ("numpy/reverse/n=10", "error")]


def test_options_that_select_no_case_are_an_error(example, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(example[0].OrderProbe, "excluded", lambda self, case: case.n > 5)
    assert run(example, tmp_path, "--sizes", "10,20")[0] == 2
    assert "the options select no case to run" in capsys.readouterr().err


def test_backend_requires_and_unavailable(example):
    m = example[0]
    assert m.Sequential().unavailable(Case("cpu", n=10)) is None
    assert m.Sequential().unavailable(Case("cpu", n=10**6)) == "a Python loop: n <= 100000 only"

    class Missing(m.Torch):
        requires = ("torch", "no_such_module_xyz")
    assert Missing().unavailable(Case("cpu", n=1)).startswith("no_such_module_xyz is not installed")


SLOW = """
import os, sys, time
from order_probe import OrderProbe
from probes import cli, runner


class SlowOrder(OrderProbe):
    def run_case(self, case, report):
        super().run_case(case, report)
        open(os.environ["MARK"], "a").write(case.backend + "\\n")
        time.sleep(float(os.environ.get("SLEEP", "0")))


sys.exit(cli.guarded_main(lambda argv=None: runner.main(SlowOrder, argv)))
"""


def test_sigterm_writes_a_partial_report_that_resume_completes(example, tmp_path):
    script = example[1].parent / "slow_order.py"
    script.write_text(SLOW)
    mark, path = tmp_path / "mark", tmp_path / "order.json"
    env = dict(os.environ, MARK=str(mark), SLEEP="0.3", DRIFTSCOPE_NO_PROGRESS="1",
               PYTHONPATH=os.pathsep.join([str(script.parent), str(ROOT)]))
    args = [sys.executable, str(script), "--device", "cpu", "--sizes", "10,1000", "--no-plot"]
    proc = subprocess.Popen([*args, "--json", str(path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while (not mark.exists() or len(mark.read_text().split()) < 3) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"go on with --resume {path}" in err
    partial = reports.load_report(path)
    done = partial["partial"]["cases_done"]
    assert partial["partial"]["reason"] == "interrupted (SIGTERM)" and 2 <= len(done) < 12
    assert [e["key"] for e in partial["experiments"]] == done       # the interrupted case left nothing
    assert partial["partial"]["cases_planned"] == 12

    other = subprocess.run([*args, "--seed", "1", "--resume", str(path)], env=env, capture_output=True, text=True)
    assert other.returncode == 2 and "--seed 0, this run has 1" in other.stderr

    env.update(SLEEP="0", MARK=str(tmp_path / "mark2"))
    again = subprocess.run([*args, "--resume", str(path)], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    resumed = reports.load_report(path)
    assert "partial" not in resumed and len(resumed["resumed"]) == 1
    assert resumed["resumed"][0]["cases_done_before"] == len(done)
    times = resumed["config"]["case_seconds"]      # the cases run before the stop (0.3 s each) kept their times
    assert set(times) == {e["key"] for e in resumed["experiments"]}
    assert all(times[k] >= 0.3 for k in done) and sum(times[k] < 0.3 for k in times if k not in done) >= 1
    assert len((tmp_path / "mark2").read_text().split()) == 12 - len(done)   # only the cases it lacked
    whole = tmp_path / "whole.json"
    assert subprocess.run([*args, "--json", str(whole)], env=env, capture_output=True, timeout=300).returncode == 0
    one_go = reports.load_report(whole)
    assert [(e["key"], e["output"], e["metrics"]) for e in resumed["experiments"]] == \
        [(e["key"], e["output"], e["metrics"]) for e in one_go["experiments"]]
    finished = subprocess.run([*args, "--resume", str(path)], env=env, capture_output=True, text=True)
    assert finished.returncode == 2 and "the report is complete; nothing to resume" in finished.stderr
    assert json.loads(path.read_text())["created_utc"] == partial["created_utc"]
