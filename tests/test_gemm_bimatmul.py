"""probes.gemm.bimatmul (issue 14's GPU check) on the CPU: arguments, bookkeeping with stand-in timers, the
report's tables and plot."""
import json

import pytest
import torch

from probes import report as reports
from probes.cli import guarded_main
from probes.gemm import bimatmul as BM


@pytest.mark.parametrize("args, msg", [(["--parts", "nope"], "unknown part"), (["--shapes", "x"], "unknown shape"),
                                       (["--ms", "0"], "must be positive"), (["--reps", "1"], "--reps"),
                                       (["--graph-calls", "0"], "--graph-calls")])
def test_bad_arguments_are_usage_errors(args, msg, capsys):
    assert guarded_main(BM.main, args) == 2
    assert msg in capsys.readouterr().err


def test_arguments_quick_and_out(monkeypatch):
    monkeypatch.setenv("OUT", "/tmp/somewhere")
    a = BM.parse_args(["--quick", "--shapes", "k_v,q_o"])
    assert a.ms == [1, 16, 256, 1400, 4096] and a.reps == 15 and a.graph_replays == 5 and a.out == "/tmp/somewhere"
    assert list(a.shapes) == ["k_v", "q_o"] and a.parts == list(BM.PARTS)
    a = BM.parse_args(["--ms", "3,5", "--out", "o", "--parts", "speed"])
    assert a.ms == [3, 5] and a.out == "o" and a.parts == ["speed"] and len(a.shapes) == 5
    assert BM.parse_args([]).ms == list(BM.MS)
    assert BM.MS == (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 1400, 2048, 4096)


@pytest.mark.no_gpu
def test_without_a_gpu_it_says_so(capsys):
    assert guarded_main(BM.main, ["--out", "/tmp/x"]) == 2
    assert "GPU" in capsys.readouterr().err


def test_pytest_counts():
    assert BM.pytest_counts("..\n== 3 failed, 28 passed, 2 errors in 13.6s ==") == {"failed": 3, "passed": 28,
                                                                                    "error": 2}
    assert BM.pytest_counts("41 passed, 2 skipped in 1s") == {"passed": 41, "skipped": 2}
    assert BM.pytest_counts("no summary") == {}


@pytest.mark.cpu_modes
def test_speed_cell_bookkeeping_with_stand_in_timers(monkeypatch):
    """The cell's ratios are cuBLAS time / Triton time of the same timer run, cold and graph; the graph calls
    rotate the weight pool; the rows at this M are compared with the largest M's (here: the interpreter)."""
    import probes.timing as timing

    colds = iter([1.6, 1.7, 1.5])          # Triton's cold time in each of the 3 repeats; cuBLAS's is 2.0

    def cold(fns, reps):
        for f in fns:
            f()
        return [[2.0] * reps, [next(colds)] * reps]

    def graph(fns, calls, replays):
        for f in fns:
            for i in range(calls):
                f(i)
        return [[1.0] * replays, [1.25] * replays]
    monkeypatch.setattr(timing, "cold_gpu_times", cold)
    monkeypatch.setattr(timing, "graph_call_times", graph)
    monkeypatch.setattr(timing, "host_launch_us", lambda fn, calls=20: 7.0)
    g = torch.Generator().manual_seed(0)
    w = (torch.randn((16, 32), generator=g) * 32 ** -0.5).to(torch.float16)
    xs = torch.randn((5, 32), generator=g).to(torch.float16)
    pool = [w, w.clone()]
    seen = []
    orig = pool.__class__.__getitem__
    from probes.gemm.triton_matmul import batch_invariant_matmul
    full = batch_invariant_matmul(xs, w).view(torch.int16)
    args = BM.parse_args(["--graph-calls", "4", "--reps", "3", "--graph-replays", "2", "--repeats", "3"])

    class Pool(list):
        def __getitem__(self, i):
            seen.append(i)
            return orig(self, i)
    m = BM.speed_cell(xs[:3], w, Pool(pool), full[:3], False, args)
    assert m["triton_cold_ratio"] == pytest.approx(1.25) and m["triton_graph_ratio"] == pytest.approx(0.8)   # medians
    assert m["cublas_cold_ms"] == 2.0 and m["triton_graph_ms"] == 1.25 and not m["meets"]
    assert m["rows_equal_largest_m"] and m["split_k"] == 1 and m["graph_weights"] == 2
    assert m["config"] == "ptr-16x16x16-g2-s1-w1" and m["triton_host_us"] == 7.0
    assert seen == [0, 1, 0, 1] * 2 * 3 and "cublaslt_nosplit_cold_ratio" not in m
    assert m["triton_cold_ratio_repeats"] == [2.0 / 1.6, 2.0 / 1.7, 2.0 / 1.5] and m["repeats"] == 3
    assert m["meets_every_repeat"] is False
    e = {"key": "speed/bfloat16/q_o/M=3", "inputs": {"M": 3}, "metrics": dict(m, meets=True)}
    text = BM.spread_text([e])
    assert "cold 3 repeats: widest spread 0.157 at q_o M=3 (1.250, 1.176, 1.333)" in text
    assert "median >= 0.9 but a repeat below it: q_o M=3" in text


def _fake_report():
    report = reports.new_report(BM.PROBE, command=["x"], fingerprint={"device": "cuda:0", "gpu": {"name": "GPU X"}},
                                config={"seed": 0, "dtype": "bfloat16",
                                        "triton_table": {"source": "shipped", "file": "h200.json",
                                                         "reason": "the sm_90 default"}})
    BM.add(report, "tests/gemm_gpu", params={"command": "pytest -m gpu"},
           metrics={"passed": 41, "failed": 0, "returncode": 0})
    for shape, n in (("q_o", 4096), ("k_v", 1024)):
        for m, cold, graph in ((1, 1.02, 0.95), (1400, 0.93, 0.85)):
            BM.add(report, f"speed/bfloat16/{shape}/M={m}", inputs={"seed": 0, "M": m, "N": n, "K": 4096},
                   metrics={"config": "tma-x", "split_k": 3, "triton_cold_ratio": cold, "triton_graph_ratio": graph,
                            "cublaslt_nosplit_cold_ratio": 0.99, "cublaslt_nosplit_graph_ratio": 1.0,
                            "rows_equal_largest_m": True, "triton_host_us": 60.0, "cublas_host_us": 20.0,
                            "meets": min(cold, graph) >= 0.9})
    BM.add(report, "speed/bfloat16/down/M=1", status="error", message="RuntimeError: boom")
    BM.add(report, "cublaslt/bfloat16/q_o", params={"ms": [1, 2, 3]},
           metrics={"invariant": True, "distinct": 1, "first_change_m": None, "change_points": [[1, 0]],
                    "pick_changes": [[1, "a66 t128x176"]]})
    BM.add(report, "cublaslt/bfloat16/k_v", params={"ms": [1, 2, 3]},
           metrics={"invariant": False, "distinct": 2, "first_change_m": 3, "change_points": [[1, 0], [3, 1]],
                    "pick_changes": [[1, "a66 t64x64"], [3, "a66 t128x88"]]})
    return report


def test_report_tables_and_plot(tmp_path):
    report = _fake_report()
    path = tmp_path / "bimatmul.json"
    reports.write_report(report, path)
    text = BM.format_report(reports.load_report(path))
    assert "Triton tables: shipped h200.json (the sm_90 default)" in text
    assert "GPU tests (pytest -m gpu): OK 41 passed, 0 failed" in text
    assert "Triton cold: 4/4 cells >= 0.9 (worst 0.930)" in text
    assert "Triton graph: 2/4 cells >= 0.9 (worst 0.850)" in text
    assert "below 0.9 (cold or graph): q_o M=1400, k_v M=1400" in text
    assert "q_o      3 M: ONE result for every M" in text
    assert "k_v      3 M: 2 results, first change at M=3" in text and "M>=3: a66 t128x88" in text
    assert "speed/bfloat16/down/M=1: RuntimeError: boom" in text
    BM.plot(report, tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size > 5000
    with pytest.raises(ValueError, match="no speed rows"):
        BM.plot(reports.new_report(BM.PROBE, command=["x"], fingerprint={}, config={}), tmp_path / "c.png")
    assert json.loads(path.read_text())["probe"] == "gemm-bimatmul"


def test_cublaslt_sweep_bookkeeping_with_a_stand_in_pick(monkeypatch):
    """Row 0 per M through the pick of each M; the picks' changes are lined up with row 0's: a tile change
    that keeps the bits, and a bit change without a pick change, are both named."""
    import probes.gemm.cublaslt as lt_mod

    class Pick:
        def __init__(self, m, n, k, dtype="bfloat16", **kw):
            tile = 20 if m < 4 else 21
            self.pick = {"algo_id": 66, "tile": tile, "stages": 1, "splitk": 1, "reduction": 0, "swizzle": 0,
                         "custom": 0, "desc": f"a66 t{tile}"}
            self.rank0 = dict(self.pick, splitk=2 if m == 1 else 1)
            self.m = m

        def __call__(self, x, w):
            y = torch.stack([w.double().mv(row.double()) for row in x]).float()  # one row at a time
            if self.m >= 6:      # row 0 changes at M = 6 with the same pick as M = 4, 5
                y[0, 0] = torch.nextafter(y[0, 0], torch.tensor(1e9))
            return y
    monkeypatch.setattr(lt_mod, "NoSplitPick", Pick)
    monkeypatch.setattr(BM, "_inputs", lambda n, k, max_m, args: (torch.randn(n, k), torch.randn(max_m, k)))
    args = BM.parse_args(["--shapes", "k_v", "--ms", "1,2,4,5,6,8", "--quick"])
    report = reports.new_report(BM.PROBE, command=["x"], fingerprint={}, config={"seed": 0})
    BM.cublaslt_sweep(report, args, lambda line: None)
    e = report["experiments"][0]
    m = e["metrics"]
    assert e["key"] == "cublaslt/bfloat16/k_v" and e["params"]["ms"] == [1, 2, 4, 5, 6, 8]
    assert m["distinct"] == 2 and m["first_change_m"] == 6 and not m["invariant"]
    assert m["pick_changes"] == [[1, "a66 t20"], [4, "a66 t21"]]
    assert m["pick_changes_keeping_bits"] == [4] and m["bit_changes_same_pick"] == [6]
    assert m["picks_with_split_rank0"] == [1] and e["params"]["picks"]["1"]["rank0"] == 2
    assert "the pick changed but row 0 kept its bits at M = [4]" in BM.lt_table(report)


@pytest.mark.no_gpu
def test_gpu_tests_part_records_pytest(tmp_path):
    """The tests part runs pytest -m gpu on tests/test_gemm_gpu.py from the repository and records its counts
    (on a CPU every test skips: all skipped, exit 0)."""
    args = BM.parse_args(["--out", str(tmp_path)])
    report = reports.new_report(BM.PROBE, command=["x"], fingerprint={}, config={"seed": 0})
    BM.gpu_tests(report, args, dict(__import__("os").environ), lambda line: None)
    e = report["experiments"][0]
    assert e["key"] == "tests/gemm_gpu" and e["metrics"]["returncode"] == 0 and e["metrics"]["skipped"] >= 40
    assert "skipped" in (tmp_path / "bimatmul-tests.txt").read_text()


@pytest.mark.no_gpu
def test_main_records_each_part_even_when_parts_fail(tmp_path, monkeypatch, capsys):
    """Every part is tried and recorded: here (a CPU standing in for the GPU) the tests part runs (all skip),
    the speed and cuBLASLt parts fail on their CUDA inputs, shape by shape, and the report, the text table
    and the log are still written."""
    from probes import cli
    monkeypatch.setattr(cli, "select_device", lambda spec: "cpu")
    assert BM.main(["--out", str(tmp_path), "--shapes", "k_v,q_o", "--quick", "--no-plot"]) == 0
    report = reports.load_report(tmp_path / "bimatmul.json")
    status = {e["key"]: e["status"] for e in report["experiments"]}
    assert status["tests/gemm_gpu"] == "ok"
    assert status["speed/bfloat16/k_v/error"] == status["speed/bfloat16/q_o/error"] == "error"
    assert status["cublaslt/bfloat16/k_v"] == status["cublaslt/bfloat16/q_o"] == "error"
    assert set(report["config"]["stage_seconds"]) == {"tests", "speed", "cublaslt"}
    assert report["config"]["triton_table"]["source"] == "interpreter" and report["config"]["ms"] == [1, 16, 256,
                                                                                                      1400, 4096]
    text = (tmp_path / "bimatmul.txt").read_text()
    assert "speed: no measurement" in text and "errors:" in text and "cublaslt/bfloat16/k_v" in text
    assert "report:" in capsys.readouterr().out
