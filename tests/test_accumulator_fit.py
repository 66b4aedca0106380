"""Stage 4 (fit at the validation shape) and the offline refit of a saved report, on simulated
devices whose parameters are known."""
import copy
import json

import numpy as np
import pytest

from numerics.matmul import MatmulModel, model_matmul
from probes import runner
from probes.accumulator.probe import AccumulatorProbe
from probes.accumulator.backends import Simulated
from probes.accumulator.detect import detect
from probes.accumulator.fit import fit_at_shape, fit_model
from probes.accumulator.refit import main as refit_main, refit_report
from probes.accumulator.validate import random_operands, validate
from probes.errors import ReportError
from probes.report import write_report


class ShapeDependent(Simulated):
    """Like cuBLAS: the designs' small matmuls run one kernel (``models``), the big ones another
    (``big``, e.g. split-K with smaller blocks)."""

    def __init__(self, models, big):
        super().__init__(models)
        self.big = big

    def matmul(self, A, B, fmt):
        return model_matmul(A, B, self.big if A.shape[1] >= 128 else self.model_for(fmt))


def test_fit_recovers_split_k_and_block_size_of_the_big_kernel():
    small = MatmulModel("bfloat16", 16, 2, "toward_zero", align_to="exponent_sum")
    big = MatmulModel("bfloat16", 8, 2, "toward_zero", align_to="exponent_sum", split_k=4)
    dev = ShapeDependent({"bfloat16": small}, big)
    det = detect(dev, "bfloat16")
    assert det.consistent and det.model.block_size == 16 and det.model.split_k == 1
    fit = fit_at_shape(dev, "bfloat16", det.model, M=40, N=40, K=256, seed=0)
    assert fit["model"].split_k == 4 and fit["model"].block_size == 8 and fit["fit_rate"] == 1.0
    assert set(fit["changed"]) == {"split_k", "block_size"}
    v = validate(dev, "bfloat16", fit["model"], samples=3000)       # another seed than the fit
    assert v["match_rate"] == 1.0
    assert validate(dev, "bfloat16", det.model, samples=3000)["match_rate"] < 0.5


def test_fit_recovers_a_narrow_fp8_accumulator_the_designs_do_not_see():
    true = MatmulModel("float8_e4m3fn", 32, -10, "toward_zero", align_to="exponent_sum",
                       promote_every=128, sum_bits=14)
    dev = Simulated({"float8_e4m3fn": true})
    start = MatmulModel(**{**true.as_dict(), "sum_bits": 24})
    A, B, _ = random_operands("float8_e4m3fn", 1600, 256, seed=7)
    got = dev.matmul(A, B, "float8_e4m3fn")
    assert (start != true) and not np.array_equal(model_matmul(A, B, start), got)
    m, rate, trace = fit_model(A, B, got, start)
    assert m == true and rate == 1.0 and trace[-1][0] == "sum_bits"


def test_fit_keeps_the_design_model_when_it_already_reproduces_the_fit_sample():
    true = MatmulModel("float16", 8, 3)
    A, B, _ = random_operands("float16", 900, 256, seed=2)
    m, rate, trace = fit_model(A, B, model_matmul(A, B, true), true)
    assert m == true and rate == 1.0 and len(trace) == 1


def run_simulated(formats, samples, seed):
    """The probe's report of the simulated device in this process (no files)."""
    probe = AccumulatorProbe.from_argv(["--device", "cpu", "--backends", "simulated", "--formats", ",".join(formats),
                                        "--samples", str(samples), "--seed", str(seed)], log=lambda s: None)
    return runner.measure(probe, ["test"], fingerprint={"device": "cpu"})


@pytest.fixture(scope="module")
def saved_report(tmp_path_factory):
    rep = run_simulated(["float16", "float32"], samples=900, seed=3)
    path = tmp_path_factory.mktemp("refit") / "acc.json"
    write_report(rep, path)
    return rep, path


def test_refit_revalidates_a_saved_report_and_repairs_a_wrong_model(saved_report):
    rep, _ = saved_report
    res = {r["key"]: r for r in refit_report(rep)}
    assert res["accumulator/simulated/float16"]["report_match_rate"] == 1.0
    assert res["accumulator/simulated/float32"]["match_rate"] == 1.0
    bad = copy.deepcopy(rep)
    for e in bad["experiments"]:
        if e["key"].endswith("float16"):
            e["metrics"]["model"]["block_size"] = 16            # a wrong model in the report
    r = {x["key"]: x for x in refit_report(bad)}["accumulator/simulated/float16"]
    assert r["report_match_rate"] < 1.0
    assert r["match_rate"] == 1.0 and r["held_out_match_rate"] == 1.0
    assert r["model"]["block_size"] == 8


def test_refit_cli(saved_report, tmp_path, capsys):
    _, path = saved_report
    out = tmp_path / "refit.json"
    assert refit_main([str(path), "--only", "float16", "--json", str(out)]) == 0
    assert "accumulator/simulated/float16" in capsys.readouterr().out
    assert json.loads(out.read_text())[0]["match_rate"] == 1.0
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**json.loads(path.read_text()), "probe": "fma"}))
    with pytest.raises(ReportError, match="not an accumulator report"):
        refit_main([str(other)])
    with pytest.raises(ReportError, match="no experiment"):
        refit_main([str(path), "--only", "nothing-matches"])


def test_mixed_fp8_runs_without_designs_and_the_fit_starts_from_the_e4m3_model(tmp_path):
    rep = run_simulated(["float8_e4m3fn", "float8_e4m3fn_x_e5m2"], samples=900, seed=1)
    m = {e["key"]: e["metrics"] for e in rep["experiments"]}
    mixed = m["accumulator/simulated/float8_e4m3fn_x_e5m2"]
    assert mixed["consistent_with_designs"] is None and mixed["design_model"] == {
        **m["accumulator/simulated/float8_e4m3fn"]["model"], "input_format": "float8_e4m3fn_x_e5m2"}
    assert mixed["recovered_true_model"] is True and mixed["match_rate"] == 1.0
    assert mixed["fit"]["changed"] == {"split_k": [1, 2]}
    A, B, _ = random_operands("float8_e4m3fn_x_e5m2", 100, 32, seed=0)
    from numerics.formats import get_format, round_to_format
    assert np.array_equal(round_to_format(B, get_format("float8_e5m2")), B)
    assert not np.array_equal(round_to_format(B, get_format("float8_e4m3fn")), B)
