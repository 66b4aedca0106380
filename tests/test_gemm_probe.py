"""The GEMM probe's command line and its cuBLASLt plan's argument checks, on the CPU."""
import json

import pytest
import torch

from probes import ext
from probes.errors import NoGPUError
from probes.gemm.__main__ import main
from probes.gemm.sweep import cpu_ms, gpu_ms, row0_sweep

needs_ext = pytest.mark.skipif(not ext.available(), reason="probes._C is not built")

@pytest.mark.cpu_modes

def test_cli_cpu_sweep_writes_report(tmp_path, capsys):
    path = tmp_path / "gemm.json"
    assert main(["--device", "cpu", "--json", str(path), "--parts", "sweep,algos", "--sweep-modes",
                 "torch:float32,triton:float16", "--sweep-max-m", "20", "--no-others", "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "batch invariance of row 0" in out and "skipped algos" in out
    report = json.loads(path.read_text())
    assert report["probe"] == "gemm" and report["schema_version"] >= 1
    assert report["fingerprint"]["device"] == "cpu"
    keys = {e["key"]: e for e in report["experiments"]}
    torch_cpu = keys["sweep/linear/torch/float32/small"]
    assert torch_cpu["status"] == "ok" and torch_cpu["inputs"]["seed"] == 0
    assert torch_cpu["params"]["ms"] == cpu_ms(20)
    # compare lines sweeps up by row 0's bits and the M at which they change, not by their times
    assert torch_cpu["compares"] == {"output": True, "metrics": ["change_points"], "reason": ""}
    assert keys["algos/skipped"]["compares"]["reason"]
    tri = keys["sweep/linear/triton/float16/tiny"]
    assert tri["metrics"]["distinct"] == 1 and tri["metrics"]["first_change_m"] is None
    assert keys["algos/skipped"]["status"] == "skipped"


@pytest.mark.cpu_modes
def test_cli_plot(tmp_path):
    path = tmp_path / "g.json"
    assert main(["--device", "cpu", "--json", str(path), "--parts", "sweep", "--sweep-modes", "torch:bfloat16",
                 "--sweep-max-m", "4", "--no-others"]) == 0
    assert (tmp_path / "g.png").stat().st_size > 1000


@pytest.mark.cpu_modes
def test_cli_no_plot_when_nothing_ran(tmp_path, capsys):
    """An algos-only run on a CPU (algos skipped) has nothing to plot: no (empty) PNG is written."""
    path = tmp_path / "g.json"
    assert main(["--device", "cpu", "--json", str(path), "--parts", "algos"]) == 0
    assert "plot:   none (nothing to plot" in capsys.readouterr().out
    assert not (tmp_path / "g.png").exists()


def test_plot_of_the_committed_algos(tmp_path):
    """An algos-only report plots the algorithms' result groups (the committed H200 run), not an empty sweep."""
    from pathlib import Path

    import matplotlib.image
    from probes.gemm import table
    from probes.report import load_report
    report = load_report(Path(__file__).resolve().parent.parent / "docs/results/h200-2026-11-29/gemm/gemm-algos.json")
    assert table.plot(report, tmp_path / "a.png") is True
    img = matplotlib.image.imread(tmp_path / "a.png")
    red = (img[..., 0] > 0.7) & (img[..., 1] < 0.3) & (img[..., 2] < 0.3)  # the defaults' markers
    assert red.sum() > 100


@pytest.mark.parametrize("args,msg", [(["--parts", "nope"], "unknown part"),
                                      (["--shapes", "x"], "unknown shape"),
                                      (["--runs", "0"], "--runs"),
                                      (["--sweep-modes", "torch:int8"], "unknown sweep mode")])
def test_cli_bad_arguments(args, msg, capsys):
    from probes.cli import guarded_main
    assert guarded_main(main, ["--device", "cpu", "--no-plot", *args]) == 2
    assert msg in capsys.readouterr().err


def test_row0_sweep_finds_the_change():
    base = torch.arange(6, dtype=torch.float32).reshape(2, 3)

    def fn(m):  # row 0 changes by one ulp from M = 4 on
        out = base.clone()
        if m >= 4:
            out[0, 1] = torch.nextafter(out[0, 1], torch.tensor(9.0))
        return out
    r = row0_sweep(fn, [1, 2, 4, 8])
    assert r["first_change_m"] == 4 and r["distinct"] == 2 and r["max_ulp_vs_first"] == 1
    assert r["groups"] == [0, 0, 1, 1] and r["change_points"] == [(1, 0), (4, 1)]
    assert not r["invariant"]
    assert r["output"].tolist() == [0.0, 1.0, 2.0]  # row 0 at the first M, before the change


def test_gpu_ms_rule():
    ms = gpu_ms()
    assert ms[:64] == list(range(1, 65)) and ms[-1] == 4096
    assert {127, 128, 129, 255, 256, 257, 2047, 2048, 2049, 4095, 1400} <= set(ms)
    assert len(ms) < 150


@needs_ext
def test_gemm_plan_argument_checks():
    C = ext.load()
    info = C.gemm_build_info()
    if not info["available"]:
        pytest.skip(f"GEMM module not built: {info['reason']}")
    with pytest.raises(ValueError, match="dtype"):
        C.GemmPlan(4, 4, 4, "int8")
    with pytest.raises(ValueError, match="layout"):
        C.GemmPlan(4, 4, 4, "bfloat16", "32f", "xx")
    with pytest.raises(ValueError, match="positive"):
        C.GemmPlan(0, 4, 4, "bfloat16")
    with pytest.raises(ValueError, match="compute"):
        C.GemmPlan(4, 4, 4, "bfloat16", "32f_fast_tf32")


@needs_ext
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_gemm_plan_without_gpu():
    from probes.gemm.cublaslt import plan_for
    with pytest.raises(NoGPUError, match="GPU"):
        plan_for(8, 8, 8, "bfloat16", "32f", 0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cli_cuda_without_gpu(capsys):
    from probes.cli import guarded_main
    assert guarded_main(main, ["--device", "cuda", "--no-plot"]) == 2
    assert "GPU" in capsys.readouterr().err


class _FakePlan:
    """Stands in for probes._C.GemmPlan on the CPU: algo i sums K in (i % 3 + 1) chunks (split-K), algo 5
    is refused at run time. Exercises run_algos' bookkeeping: clusters, default, torch's group, failures."""

    def __init__(self, k):
        self.k = k
        self.tensors = {}

    def library(self):
        return {"path": "fake", "version": 0}

    def _cfg(self, i, rank=None):
        d = {"algo_id": i, "tile": 20, "splitk": i % 3 + 1, "reduction": 1 if i % 3 else 0, "swizzle": 0, "custom": 0,
             "stages": 0, "inner_shape": 0, "cluster_shape": 0, "algo": bytes([i]) * 64, "workspace": 0, "waves": 1.0}
        d.update({"rank": rank, "state": "CUBLAS_STATUS_SUCCESS"} if rank is not None else {"status": "ok"})
        return d

    def heuristic(self, count, ws):
        return {"status": "CUBLAS_STATUS_SUCCESS", "picks": [self._cfg(1, rank=0), self._cfg(0, rank=1)]}

    def enumerate(self, *args):
        return {"valid": [self._cfg(i) for i in (0, 2, 3, 4, 5)], "failure_examples": [], "checks": 9,
                "candidates": 20, "capped": False, "stopped_by": "exhausted", "seconds": 0.0, "dead_tiles": 0,
                "tile_slots": 3}

    def run(self, algo, x, w, y, ws, wsb, stream):
        i = algo[0]
        if i == 5:
            return "CUBLAS_STATUS_NOT_SUPPORTED"
        X, W, Y = self.tensors["x"], self.tensors["w"], self.tensors["y"]
        chunks = torch.tensor_split(torch.arange(self.k), i % 3 + 1)
        acc = sum(X[:, c] @ W[:, c].T for c in chunks)
        Y.copy_(acc)
        return "CUBLAS_STATUS_SUCCESS"

    def time(self, *args):
        return [0.3, 0.1, 0.2]


def test_run_algos_bookkeeping_with_a_fake_plan(monkeypatch):
    import types

    import probes.gemm.cublaslt as L
    m, n, k = 8, 16, 3000
    plan = _FakePlan(k)
    real_inputs, real_empty = L.make_inputs, torch.empty

    def make_inputs(m_, n_, k_, dtype, device, seed):
        x, w = real_inputs(m_, n_, k_, dtype, torch.device("cpu"), seed)
        plan.tensors.update(x=x, w=w)
        return x, w

    def empty(*a, **kw):
        t = real_empty(*a, **{key: v for key, v in kw.items() if key != "device"})
        if tuple(t.shape) == (m, n):
            plan.tensors["y"] = t
        return t
    monkeypatch.setattr(L, "make_inputs", make_inputs)
    monkeypatch.setattr(L, "plan_for", lambda *a: plan)
    monkeypatch.setattr(L, "torch_linear", lambda x, w, c: x @ w.T)   # one chunk: algo 0's and 3's order
    monkeypatch.setattr(torch, "empty", empty)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda d: types.SimpleNamespace(cuda_stream=0))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    r = L.run_algos(m, n, k, "float32", device="cpu")
    assert r["configs"] == 6 and r["ran"] == 5 and r["run_failures"][0]["status"] == "CUBLAS_STATUS_NOT_SUPPORTED"
    groups = {row["algo_id"]: row["group"] for row in r["rows"]}
    assert groups[0] == groups[3] == r["torch_group"]            # same order as torch: same bits
    assert groups[1] == groups[4] != groups[0]                   # 2 chunks: another group (float32 sums differ)
    assert r["distinct"] == len(set(groups.values())) == 3
    assert r["default"]["algo_id"] == 1 and r["default_group"] == groups[1] and not r["torch_matches_default"]
    assert r["default"]["median_ms"] == 0.2
    assert all(g["rel_error"] < 1e-5 for g in r["groups"])


@pytest.mark.parametrize("name, compares", [("gemm-algos.json", "ALGOS_COMPARES"), ("gemm-bench.json", "BENCH_COMPARES")])
def test_declarations_hold_for_the_committed_gpu_runs(name, compares):
    """What the algos and bench experiments declare compared exists in every experiment of the committed H100
    and H200 runs (GPU-only parts; the CPU cannot run them): add_experiment would accept each of them."""
    from pathlib import Path

    from probes.gemm import probe
    from probes.report import add_experiment, load_report, new_report
    for gpu in ("h100-2026-11-23", "h200-2026-11-29"):
        report = load_report(Path(__file__).resolve().parent.parent / "docs/results" / gpu / "gemm" / name)
        again = new_report("gemm", command=["x"], fingerprint={}, config={})
        ok = [e for e in report["experiments"] if e["status"] == "ok"]
        assert len(ok) >= 18
        for e in ok:
            add_experiment(again, key=e["key"], inputs=e["inputs"], params=e["params"], metrics=e["metrics"],
                           compares=getattr(probe, compares))
