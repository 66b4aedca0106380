"""probes.compare: lining up experiments, ulp distances, the CLI's table and exit codes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from probes.cli import guarded_main
from probes.compare import compare_outputs, compare_reports, main, summarize, summary_line, ulp_distance
from probes.errors import ReportError, UsageError
from probes.report import add_experiment, new_report, write_report

ROOT = Path(__file__).resolve().parent.parent


def _make(values=None, seed=0, extra=None, drop=None):
    """A report; an `extra` experiment given with legacy=True has no `compares`, as one written before
    experiments declared it."""
    values = np.linspace(-1, 1, 33, dtype=np.float32) if values is None else values
    rep = new_report("reduction", command=["x"], fingerprint={"device": "cpu", "cpu": {
        "model": "Test CPU", "count": 2}, "versions": {"torch": "not installed"}}, config={})
    exps = {
        "reduction/numpy/pairwise/float32->float32/n=33": dict(
            inputs={"generator": "numpy.default_rng", "seed": seed, "n": 33, "dtype": "float32"},
            params={"backend": "numpy"}, output=values),
        "reduction/numpy/pairwise/bfloat16->bfloat16/n=4": dict(
            inputs={"generator": "numpy.default_rng", "seed": seed, "n": 4, "dtype": "bfloat16"},
            params={"backend": "numpy"}, output=np.array([1, 2, 3, -0.0], ml_dtypes.bfloat16)),
        "reduction/cupy/fixed/float32->float32/n=33": dict(
            inputs={"seed": seed}, params={"backend": "cupy"}, status="skipped",
            message="cupy not installed"),
    }
    exps.update(extra or {})
    for key, kw in exps.items():
        if key != drop:
            kw = dict(kw)
            legacy = kw.pop("legacy", False)
            kw.setdefault("compares", {"reason": "legacy"} if legacy else {"output": True})
            entry = add_experiment(rep, key=key, **kw)
            if legacy:
                del entry["compares"]
    return rep


def _one_ulp_up(values, index=5):
    v = values.copy()
    v[index] = np.nextafter(v[index], np.float32(np.inf))
    return v


BASE = np.linspace(-1, 1, 33, dtype=np.float32)
F32_KEY = "reduction/numpy/pairwise/float32->float32/n=33"


def _write(tmp_path, name, rep):
    return str(write_report(rep, tmp_path / name))


# ---------------------------------------------------------------------------------------------
# distances


def test_ulp_distance_signed_zero_and_crossing_zero():
    tiny = np.float32(1e-45)  # smallest subnormal
    a = np.array([0.0, -0.0, tiny, -tiny, 1.0, np.inf], np.float32)
    b = np.array([-0.0, 0.0, -tiny, tiny, np.nextafter(np.float32(1), np.float32(0)),
                  np.finfo(np.float32).max], np.float32)
    assert ulp_distance(a, b).tolist() == [0, 0, 2, 2, 1, 1]


def test_ulp_distance_matches_rank_in_sorted_float16():
    # Reference: position in the sorted list of every distinct non-NaN float16 value.
    allv = np.arange(2 ** 16, dtype=np.uint16).view(np.float16)
    finite = np.unique(allv[~np.isnan(allv)].astype(np.float64))  # -0 and +0 merge
    rng = np.random.default_rng(0)
    a = rng.choice(allv[~np.isnan(allv)], 2000)
    b = rng.choice(allv[~np.isnan(allv)], 2000)
    ra = np.searchsorted(finite, a.astype(np.float64))
    rb = np.searchsorted(finite, b.astype(np.float64))
    assert np.array_equal(ulp_distance(a, b), np.abs(ra - rb).astype(np.float64))


def test_ulp_distance_nan_and_float64_extremes():
    nan2 = np.array([0x7FC00001], np.uint32).view(np.float32)[0]
    d = ulp_distance(np.array([np.nan, np.nan, 1.0], np.float32),
                     np.array([nan2, 1.0, 1.0], np.float32))
    assert d.tolist() == [0, np.inf, 0]
    big = np.finfo(np.float64).max
    assert ulp_distance(np.array([-big]), np.array([big]))[0] == 2.0 * 0x7FEFFFFFFFFFFFFF
    assert ulp_distance(np.array([3, -5], np.int64), np.array([-2, 5], np.int64)).tolist() == [5, 10]


def test_compare_outputs_numbers_and_mismatches():
    r = compare_outputs(BASE, _one_ulp_up(BASE))
    assert (r["n_diff"], r["max_ulp"], r["n_elems"], r["bitwise_equal"]) == (1, 1, 33, False)
    assert 0 < r["max_rel"] < 1e-6
    r = compare_outputs(BASE, BASE.astype(ml_dtypes.bfloat16))
    assert r["reason"] == "dtype float32 vs bfloat16" and r["n_diff"] is None
    r = compare_outputs(BASE, BASE[:4])
    assert r["reason"] == "shape [33] vs [4]"
    r = compare_outputs(np.array([0.0], np.float32), np.array([-0.0], np.float32))
    assert (r["n_diff"], r["max_ulp"], r["max_rel"]) == (1, 0, 0.0)


# ---------------------------------------------------------------------------------------------
# compare_reports


def test_identical_reports_all_equal():
    rows = compare_reports([_make(), _make()], ["A", "B"])
    statuses = {r["key"]: r["comparisons"][0]["status"] for r in rows}
    assert statuses == {F32_KEY: "equal",
                        "reduction/numpy/pairwise/bfloat16->bfloat16/n=4": "equal",
                        "reduction/cupy/fixed/float32->float32/n=33": "skipped"}
    assert summarize(rows) == {"experiments": 3, "equal": 2, "skipped": 1, "differ": 0,
                               "missing": 0, "error": 0, "not_compared": 0}


def test_one_ulp_difference():
    rows = compare_reports([_make(), _make(_one_ulp_up(BASE))], ["A", "B"])
    c = next(r for r in rows if r["key"] == F32_KEY)["comparisons"][0]
    assert c["status"] == "differ" and c["n_diff"] == 1 and c["max_ulp"] == 1


def test_missing_error_params_and_order():
    extra = {"only/in/b": dict(inputs={}, params={}, output=np.float32(1))}
    err = {F32_KEY: dict(inputs={"generator": "numpy.default_rng", "seed": 0, "n": 33,
                                 "dtype": "float32"}, params={"backend": "numpy", "grid": 4},
                         status="error", message="CUDA error: out of memory")}
    b = _make(extra={**extra, **err}, drop="reduction/numpy/pairwise/bfloat16->bfloat16/n=4")
    rows = compare_reports([_make(), b], ["A", "B"])
    by = {r["key"]: r["comparisons"][0] for r in rows}
    assert [r["key"] for r in rows][-1] == "only/in/b"
    assert by["only/in/b"]["status"] == "missing" and "baseline" in by["only/in/b"]["reason"]
    assert by["reduction/numpy/pairwise/bfloat16->bfloat16/n=4"]["reason"] == "not in B"
    assert by[F32_KEY]["status"] == "error" and "out of memory" in by[F32_KEY]["reason"]
    assert by[F32_KEY]["params_differ"] == ["grid"]
    rows = compare_reports([_make(), b], ["A", "B"], only="bfloat16")
    assert [r["key"] for r in rows] == ["reduction/numpy/pairwise/bfloat16->bfloat16/n=4"]


def _sweep(change_points, declared=True, output=None):
    """A sweep: declared (compares), or as written before (legacy: "result_metrics" named it, or nothing)."""
    metrics = {"change_points": change_points, "wall_seconds": 0.1 * len(change_points)}
    if declared == "result_metrics":
        metrics["result_metrics"] = ["change_points"]
    kw = dict(compares={"output": output is not None, "metrics": ["change_points"]}) if declared is True \
        else dict(legacy=True)
    return {"sweep/q_o": dict(inputs={"seed": 0}, params={}, output=output, metrics=metrics, **kw)}


def _status(a, b, only="sweep", **kw):
    rows = compare_reports([_make(extra=a), _make(extra=b)], ["A", "B"], only=only, **kw)
    return rows[0]["comparisons"][0]


def test_result_metrics_compare_like_outputs():
    """A sweep's pattern (the M at which row 0 changes) is its result: another pattern differs even with no
    output, and with equal outputs; other metrics (times) never count."""
    h100, h200 = [[1, 0], [17, 1]], [[1, 0], [25, 1], [32, 0]]
    c = _status(_sweep(h100), _sweep(h200))
    assert c["status"] == "differ" and c["reason"].startswith("metrics.change_points: [[1, 0], [17, 1]] vs [[1, 0], [25, 1]")
    c = _status(_sweep(h100), _sweep([[1, 0], [17, 1]]))  # wall_seconds differs
    assert c["status"] == "equal" and c["compared"] == ["metrics.change_points"]
    row = np.array([1, 2], np.float32)
    c = _status(_sweep(h100, output=row), _sweep(h200, output=row))
    assert c["status"] == "differ" and c["n_diff"] == 0 and "change_points" in c["reason"]
    assert c["compared"] == ["output", "metrics.change_points"]
    # written before declarations: "result_metrics" still declares; with nothing declared, not compared
    assert _status(_sweep(h100, "result_metrics"), _sweep(h200, "result_metrics"))["status"] == "differ"
    c = _status(_sweep(h100, False), _sweep(h200, False))
    assert c["status"] == "not_compared" and c["reason"] == "no output and no result metrics declared"
    assert _status(_sweep(h100, False), _sweep(h200, False), metrics=["change_points"])["status"] == "differ"
    assert _status(_sweep(h100), _sweep(h200, False))["status"] == "differ"  # declared by one side is enough


def _timed(seconds, declared=True):
    compares = dict(compares={"reason": "timings only"}) if declared else dict(legacy=True)
    return {"bench/x": dict(inputs={"seed": 0}, params={}, metrics={"ms": seconds}, **compares)}


def test_nothing_compared_is_never_equal():
    """Timings (declared: nothing to compare) and an old experiment with neither output nor declared metrics
    read "not compared" with the reason, and count apart from the equal ones."""
    c = _status(_timed(1.0), _timed(2.0), only="bench")
    assert (c["status"], c["reason"], c["compared"]) == ("not_compared", "timings only", [])
    c = _status(_timed(1.0, False), _timed(1.0, False), only="bench")  # identical, yet nothing was compared
    assert (c["status"], c["reason"]) == ("not_compared", "no output and no result metrics declared")
    c = _status(_timed(1.0, False), _timed(1.0, False), only="bench", metrics=["change_points"])
    assert c["status"] == "not_compared" and "change_points recorded in neither" in c["reason"]
    rows = compare_reports([_make(extra=_timed(1.0)), _make(extra=_timed(1.0))], ["A", "B"])
    assert summarize(rows) == {"experiments": 4, "equal": 2, "skipped": 1, "differ": 0, "missing": 0,
                               "error": 0, "not_compared": 1}
    assert summary_line(summarize(rows)) == ("4 experiments, 2 bitwise equal, 0 differ, 0 missing, "
                                             "1 skipped, 1 not compared")


def test_declared_metric_paths_and_every_difference():
    """A dotted name reaches into a metric ("default.desc"); a null on the way is a value (no default
    algorithm); every differing metric is named, timings inside the same object are not compared."""
    def algos(desc, distinct):
        default = None if desc is None else {"desc": desc, "median_ms": distinct * 0.1}
        return {"algos/q_o": dict(inputs={"seed": 0}, params={}, metrics={"default": default, "distinct": distinct},
                                  compares={"metrics": ["default.desc", "distinct"]})}
    c = _status(algos("a66 t64x8", 13), algos("a66 t64x8", 13), only="algos")
    assert c["status"] == "equal" and c["compared"] == ["metrics.default.desc", "metrics.distinct"]
    c = _status(algos("a66 t64x8", 17), algos("a66 t128x8", 16), only="algos")
    assert c["status"] == "differ"
    assert c["reason"] == "metrics.default.desc: 'a66 t64x8' vs 'a66 t128x8'; metrics.distinct: 17 vs 16"
    c = _status(algos("a66 t64x8", 13), algos(None, 13), only="algos")
    assert c["status"] == "differ" and c["reason"] == "metrics.default.desc: 'a66 t64x8' vs None"


def test_differing_inputs_raise_with_field():
    with pytest.raises(ReportError) as info:
        compare_reports([_make(), _make(seed=1)], ["A.json", "B.json"])
    assert str(info.value) == (f"cannot compare '{F32_KEY}': inputs.seed is 0 in A.json "
                               "and 1 in B.json")


def test_needs_two_reports():
    with pytest.raises(UsageError):
        compare_reports([_make()])


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_identical_exit_0_with_fail_on_diff(tmp_path, capsys):
    a, b = _write(tmp_path, "A.json", _make()), _write(tmp_path, "B.json", _make())
    out_json = tmp_path / "cmp" / "c.json"
    assert guarded_main(main, [a, b, "--fail-on-diff", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert f"[0] {a} (baseline): reduction, CPU: Test CPU (2 cores)" in out
    assert out.rstrip().splitlines()[-1] == ("3 experiments, 2 bitwise equal, 0 differ, "
                                             "0 missing, 1 skipped")
    data = json.loads(out_json.read_text())
    assert data["schema"] == "driftscope-compare" and data["summary"]["equal"] == 2


def test_cli_one_ulp_in_process(tmp_path, capsys):
    a = _write(tmp_path, "A.json", _make())
    b = _write(tmp_path, "B.json", _make(_one_ulp_up(BASE)))
    assert guarded_main(main, [a, b]) == 0
    out = capsys.readouterr().out
    assert "differs: 1/33 elems, max 1 ulp, rel" in out
    assert "3 experiments, 1 bitwise equal, 1 differ, 0 missing" in out
    assert guarded_main(main, [a, b, "--fail-on-diff"]) == 1
    assert guarded_main(main, [a, b, "--fail-on-diff", "--only", "bfloat16"]) == 0


def _run(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "probes.compare", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=60)


def test_cli_subprocess_exit_codes(tmp_path):
    a = _write(tmp_path, "A.json", _make())
    b = _write(tmp_path, "B.json", _make(_one_ulp_up(BASE)))
    c = _write(tmp_path, "C.json", _make(seed=1))
    p = _run(a, b, "--fail-on-diff")
    assert p.returncode == 1, p.stderr
    assert "differs: 1/33 elems, max 1 ulp" in p.stdout and p.stderr == ""
    p = _run(a, a, "--fail-on-diff")
    assert p.returncode == 0, p.stderr
    p = _run(a, c)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("error: cannot compare")
    assert f"inputs.seed is 0 in {a} and 1 in {c}" in p.stderr


def test_cli_metrics_option(tmp_path, capsys):
    a = _write(tmp_path, "A.json", _make(extra=_sweep([[1, 0], [17, 1]], declared=False)))
    b = _write(tmp_path, "B.json", _make(extra=_sweep([[1, 0], [25, 1]], declared=False)))
    assert guarded_main(main, [a, b, "--fail-on-diff", "--only", "sweep"]) == 0
    out = capsys.readouterr().out
    assert "not compared: no output and no result metrics declared" in out
    assert out.rstrip().splitlines()[-1] == "1 experiments, 0 bitwise equal, 0 differ, 0 missing, 1 not compared"
    assert guarded_main(main, [a, b, "--fail-on-diff", "--only", "sweep", "--metrics", "change_points"]) == 1
    out = capsys.readouterr().out
    assert "differs: metrics.change_points: [[1, 0], [17, 1]] vs [[1, 0], [25, 1]]" in out
    assert guarded_main(main, [a, b, "--metrics", "change_point"]) == 2  # a typo selects nothing
    assert capsys.readouterr().err == "error: --metrics: no experiment has a metric 'change_point'\n"


def test_cli_declared_metrics_fail_on_diff(tmp_path, capsys):
    """A declared result metric that differs fails --fail-on-diff; timings declared as not compared do not,
    and the summary counts them."""
    a = _write(tmp_path, "A.json", _make(extra={**_sweep([[1, 0], [17, 1]]), **_timed(1.0)}))
    b = _write(tmp_path, "B.json", _make(extra={**_sweep([[1, 0], [25, 1]]), **_timed(2.0)}))
    assert guarded_main(main, [a, b, "--fail-on-diff"]) == 1
    out = capsys.readouterr().out
    assert "5 experiments, 2 bitwise equal, 1 differ, 0 missing, 1 skipped, 1 not compared" in out
    assert "not compared: timings only" in out
    assert guarded_main(main, [a, b, "--fail-on-diff", "--only", "bench"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("1 not compared")


def test_cli_prints_each_reports_commit(tmp_path, capsys):
    """Next to its fingerprint, each report's code: this checkout's commit, or that an old report has none."""
    rep = _make()
    old = _make()
    del old["code"]
    a, b = _write(tmp_path, "A.json", rep), _write(tmp_path, "B.json", old)
    assert guarded_main(main, [a, b, "--json", str(tmp_path / "c.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    code = rep["code"]
    if code["commit"]:
        mark = " + uncommitted changes" if code["dirty"] else ""
        assert lines[0].endswith(f"; commit {code['commit'][:12]}{mark}")
    else:
        assert lines[0].endswith(f"; commit unknown ({code['reason']})")
    assert lines[1].endswith("; commit not recorded (report written before reports carried it)")
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["reports"][0]["code"] == code and data["reports"][1]["code"] is None


def test_cli_prints_each_reports_run_warnings(tmp_path, capsys):
    """A report whose run did something other than asked (a Triton config that failed and was replaced) may
    still be bitwise equal to its baseline: compare names the warning beside the rows, in text, JSON and HTML."""
    a = _write(tmp_path, "A.json", _make())
    warned = _make()
    warned["warnings"] = [{"kind": "triton_fallback", "message": "config tma-x failed; pointer kernel used"}]
    b = _write(tmp_path, "B.json", warned)
    assert guarded_main(main, [a, b, "--fail-on-diff", "--json", str(tmp_path / "c.json"),
                               "--html", str(tmp_path / "c.html")]) == 0
    out = capsys.readouterr().out
    assert f"WARNING [1] {b}: triton_fallback: config tma-x failed; pointer kernel used" in out
    assert "WARNING [0]" not in out
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["warnings"] == [{"index": 1, "label": b, "kind": "triton_fallback",
                                 "message": "config tma-x failed; pointer kernel used"}]
    assert "config tma-x failed; pointer kernel used" in (tmp_path / "c.html").read_text()


# ---------------------------------------------------------------------------------------------
# the committed H100 and H200 reports: a regression test of compare on real data

RESULTS = ROOT / "docs" / "results"
H100_ALGOS = RESULTS / "h100-2026-11-23" / "gemm" / "gemm-algos.json"
H200_ALGOS = RESULTS / "h200-2026-11-29" / "gemm" / "gemm-algos.json"
#: The names that hold the cuBLASLt algos' results (probes.gemm.probe.ALGOS_COMPARES); the committed
#: reports were written before experiments declared them.
ALGOS_METRICS = "default.desc,distinct,torch_matches_default"


def test_committed_h100_vs_h200_algos(capsys):
    """The H100 and H200 gemm-algos.json: nothing declared, so nothing is "equal"; with the algos' result
    metrics named, the 6 experiments whose cuBLAS default differs (tile, split-K; down M=1 also in the number
    of bit-distinct groups) differ, and --fail-on-diff fails."""
    args = [str(H100_ALGOS), str(H200_ALGOS), "--fail-on-diff"]
    assert guarded_main(main, args) == 0
    assert capsys.readouterr().out.rstrip().splitlines()[-1] == (
        "18 experiments, 0 bitwise equal, 0 differ, 0 missing, 18 not compared")
    assert guarded_main(main, args + ["--metrics", ALGOS_METRICS]) == 1
    out = capsys.readouterr().out
    assert out.rstrip().splitlines()[-1] == "18 experiments, 12 bitwise equal, 6 differ, 0 missing"
    from probes.report import load_report
    rows = compare_reports([load_report(H100_ALGOS), load_report(H200_ALGOS)], metrics=ALGOS_METRICS.split(","))
    differ = {r["key"]: r["comparisons"][0]["reason"] for r in rows if r["comparisons"][0]["status"] == "differ"}
    assert sorted(differ) == sorted(["algos/bfloat16/k_v/M=64", "algos/bfloat16/gate_up/M=64",
                                     "algos/bfloat16/gate_up/M=1400", "algos/bfloat16/down/M=1",
                                     "algos/bfloat16/down/M=64", "algos/float16/q_o/M=256"])
    assert differ["algos/bfloat16/k_v/M=64"] == ("metrics.default.desc: 'a66 t64x32 s64xAUTO k2/COMPUTE_TYPE sw0 c3' "
                                                 "vs 'a66 t64x32 s64xAUTO k3/COMPUTE_TYPE sw0 c3'")
    assert differ["algos/bfloat16/down/M=1"].endswith("; metrics.distinct: 17 vs 16")


def test_committed_h100_vs_h200_sweep(capsys):
    """The committed sweeps: 6 change patterns differ (torch bf16/fp16 q_o, k_v, down), 36 equal."""
    a, b = (str(RESULTS / d / "gemm" / "gemm-sweep.json") for d in ("h100-2026-11-23", "h200-2026-11-29"))
    assert guarded_main(main, [a, b, "--fail-on-diff", "--metrics", "change_points"]) == 1
    out = capsys.readouterr().out
    assert out.rstrip().splitlines()[-1] == "42 experiments, 36 bitwise equal, 6 differ, 0 missing"
    assert sum(line.startswith("sweep/linear/torch/bfloat16/") and "differs" in line
               for line in out.splitlines()) == 3


def test_cli_errors_one_line(tmp_path, capsys):
    a = _write(tmp_path, "A.json", _make())
    assert guarded_main(main, [a]) == 2
    assert capsys.readouterr().err == "error: compare needs at least 2 reports, got 1\n"
    assert guarded_main(main, [a, str(tmp_path / "missing.json")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'missing.json'}: no such file\n"


@pytest.mark.parametrize("path", sorted(RESULTS.rglob("compare-*.txt")), ids=lambda p: p.name)
def test_committed_compare_texts_are_what_compare_prints(path, capsys, monkeypatch):
    """Each committed compare text ends with its command; run again on the committed reports it prints the
    same text: what the results READMEs cite is what compare says today."""
    lines = path.read_text().rstrip("\n").splitlines()
    command = lines[-1]
    assert command.startswith("(python -m probes.compare ") and command.endswith(")")
    monkeypatch.chdir(ROOT)
    guarded_main(main, command[len("(python -m probes.compare "):-1].split())
    assert capsys.readouterr().out.rstrip("\n").splitlines() == lines[:-1]
