"""The committed GPU accumulator reports as a regression test (CPU): every model a report records must still
reproduce the GPU's stored validation bits under this code's numerics.matmul, and the refit
(probes.accumulator.refit) must keep it. A change to the model emulation, the operand generator or the
report format that breaks what a GPU measured fails here, in CI, with no GPU.

To stay well under a minute, each experiment is re-checked on the first ROWS rows of its 317-row
validation sample (ROWS x 317 dot products of K = 256, all three row kinds); `python -m
probes.accumulator.refit` checks all rows (about 45 s for the H100 report here)."""
import json
import lzma
from pathlib import Path

import pytest

from probes.accumulator.refit import refit_report
from probes.report import validate_report

ROOT = Path(__file__).resolve().parent.parent
REPORTS = sorted(p for p in (ROOT / "docs" / "results").glob("*/accumulator/accumulator.json*")
                 if p.suffix in (".json", ".xz"))
ROWS = 96


def _load(path: Path) -> dict:
    raw = lzma.decompress(path.read_bytes()) if path.suffix == ".xz" else path.read_bytes()
    report = json.loads(raw)
    validate_report(report, str(path))
    return report


def _columns(report, key):
    return next(e["inputs"]["N"] for e in report["experiments"] if e["key"] == key)


def test_there_are_committed_reports():
    assert REPORTS, "no docs/results/*/accumulator/accumulator.json(.xz): the guard would check nothing"


@pytest.mark.parametrize("path", REPORTS, ids=lambda p: p.parent.parent.name)
def test_committed_accumulator_models_still_reproduce_the_gpu(path):
    report = _load(path)
    fitted = [e["key"] for e in report["experiments"]
              if e["status"] == "ok" and e["output"] and "model" in (e["metrics"] or {})]
    assert len(fitted) >= 10, fitted            # the H100 report: 14 (cuBLAS, cuBLAS fast-accum, Triton)
    results = refit_report(report, max_rows=ROWS)
    assert [r["key"] for r in results] == fitted
    assert all(r["samples"] == ROWS * _columns(report, r["key"]) for r in results)
    broken = [(r["key"], r["report_model_text"], r["report_match_rate"], r["model_text"], r["match_rate"])
              for r in results if r["report_match_rate"] != 1.0 or r["model"] != r["report_model"]
              or r["match_rate"] != 1.0]
    assert broken == []
