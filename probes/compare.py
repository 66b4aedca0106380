"""Compare driftscope reports from several machines, experiment by experiment, bit by bit.

    python -m probes.compare A.json B.json [C.json ...] [--only SUBSTRING] [--metrics NAME[,NAME]]
                             [--fail-on-diff] [--json PATH] [--html PATH]
    python -m probes.compare DIR_A DIR_B [DIR_C ...] [same options]

DIR_A, DIR_B: suite folders (`python -m probes.suite`, probes.bundle): each probe's report in one folder is
compared with the same probe's report in the others (compare_bundles), each folder against the first. A
probe whose report a folder lacks (not run, or failed there) is "missing" there; an experiment whose inputs
differ between two folders (e.g. another model) is an "error" row, and the other experiments still compare.
--html writes one page that opens offline: per probe, the statuses and the plots side by side (embedded).

The first report is the baseline. Experiments are lined up by key. Each experiment declares what is
compared (its `compares`, see probes.report): its output, bit for bit; result metrics, by exact equality
(e.g. the GEMM sweep's change_points: at which M row 0 changes its bits; the cuBLASLt algos' default
algorithm and number of bit-distinct groups); or nothing, with the reason (timings). Metrics named with
--metrics are compared as well. For each experiment and each other report the status is one of

    equal         everything compared is equal: the outputs have identical bits, the metrics equal values
    differ        outputs differ: count of differing elements, max distance in ulps of the output
                  dtype, max relative difference |other - base| / |base|; or dtype/shape differ; or a
                  compared metric differs (the reason names each, with its first differing entry)
    not compared  nothing was compared: neither side declares an output or a metric that either has
                  (e.g. timings); the reason says why. Never counted as equal.
    missing       the key is in only one of the two reports
    skipped       the experiment was skipped in one of them (e.g. a backend not installed there)
    error         the experiment failed in one of them

Reports written before experiments declared `compares`: their recorded output is compared, and the
metrics named in metrics["result_metrics"] (the sweep's older declaration); one with neither is "not
compared" (name its result metrics with --metrics).

--fail-on-diff exits 1 on differ, missing and error; skipped and not compared do not fail it (the
summary line counts them).

Experiments with the same key must have the same `inputs` (they are supposed to be the same
computation on the same data); otherwise the comparison is meaningless and a ReportError names
the key and the first field that differs. `params` may differ (e.g. a grid chosen per GPU); the
fields that do are listed in the row.

ULP distance: the bits of a float are sign-magnitude; mapping them onto a monotone integer line
(negative values mirrored, +0 and -0 both at 0) makes the distance between two values the number
of representable values between them. Both NaN: 0 (still counted as differing if the payloads
differ); exactly one NaN: infinite. For integer dtypes the distance is |a - b|.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, Mapping, Sequence

import numpy as np

from numerics import formats

from probes.cli import guarded_main
from probes.errors import ReportError, UsageError
from probes.provenance import code_summary
from probes.report import (MISSING, comparison_of, decode_output, jsonable, load_report, metric_value,
                           validate_report, write_json)

__all__ = ["compare_reports", "compare_bundles", "compare_outputs", "ulp_distance", "summarize", "format_cell",
           "format_table", "main", "COMPARE_SCHEMA"]

COMPARE_SCHEMA = "driftscope-compare"
NOT_COMPARED = "not_compared"
STATUS_ORDER = ("differ", "missing", "error", "skipped", NOT_COMPARED, "equal")
#: Statuses that make --fail-on-diff exit 1.
FAILING = ("differ", "missing", "error")


# --------------------------------------------------------------------------------------------
# element-wise distances


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise distance in units in the last place of the (shared) dtype, as float64
    (numerics.formats.ulp_distance; 0 where both are NaN, inf where exactly one is). Integers: |a - b|."""
    if a.dtype != b.dtype or a.shape != b.shape:
        raise ValueError("ulp_distance needs arrays of one dtype and shape")
    a = np.ascontiguousarray(a).reshape(-1)
    b = np.ascontiguousarray(b).reshape(-1)
    if a.dtype == np.bool_ or a.dtype.kind in "iu":
        return np.array([abs(int(x) - int(y)) for x, y in zip(a.tolist(), b.tolist())],
                        dtype=np.float64)
    nan_a = np.isnan(a.astype(np.float64))
    nan_b = np.isnan(b.astype(np.float64))
    dist = np.zeros(a.shape, dtype=np.float64)
    finite = ~(nan_a | nan_b)
    dist[finite] = formats.ulp_distance(a[finite], b[finite]).astype(np.float64)
    dist[nan_a ^ nan_b] = math.inf
    return dist


def compare_outputs(base: np.ndarray, other: np.ndarray) -> dict:
    """bitwise_equal, n_elems, n_diff, max_ulp, max_abs, max_rel (and a reason when the dtype or
    shape differ, in which case the numbers are None)."""
    res: dict[str, Any] = {"bitwise_equal": False, "n_elems": int(base.size), "n_diff": None,
                           "max_ulp": None, "max_abs": None, "max_rel": None, "reason": ""}
    if base.dtype != other.dtype:
        res["reason"] = f"dtype {base.dtype.name} vs {other.dtype.name}"
        return res
    if base.shape != other.shape:
        res["reason"] = f"shape {list(base.shape)} vs {list(other.shape)}"
        return res
    udt = np.dtype(f"u{base.dtype.itemsize}")
    ua = np.ascontiguousarray(base).reshape(-1).view(udt)
    ub = np.ascontiguousarray(other).reshape(-1).view(udt)
    diff = ua != ub
    n_diff = int(diff.sum())
    res["n_diff"] = n_diff
    res["bitwise_equal"] = n_diff == 0
    if n_diff == 0:
        res.update(max_ulp=0, max_abs=0.0, max_rel=0.0)
        return res
    a = np.ascontiguousarray(base).reshape(-1)[diff]
    b = np.ascontiguousarray(other).reshape(-1)[diff]
    ulps = ulp_distance(a, b)
    mu = float(ulps.max())
    res["max_ulp"] = int(mu) if math.isfinite(mu) else math.inf
    with np.errstate(all="ignore"):
        a64 = a.astype(np.float64)
        b64 = b.astype(np.float64)
        both_nan = np.isnan(a64) & np.isnan(b64)
        absd = np.abs(b64 - a64)
        rel = np.where(absd == 0, 0.0, absd / np.abs(a64))  # -0 vs +0: 0, not 0/0
        absd = np.where(np.isfinite(absd), absd, math.inf)
        rel = np.where(np.isfinite(rel), rel, math.inf)
        absd[both_nan] = 0.0
        rel[both_nan] = 0.0
    res["max_abs"] = float(absd.max())
    res["max_rel"] = float(rel.max())
    if both_nan.any():
        res["reason"] = f"{int(both_nan.sum())} NaN payload(s) differ"
    return res


# --------------------------------------------------------------------------------------------
# reports


def _fmt_value(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (dict, list)) else repr(v)


def _first_difference(a: Any, b: Any, path: str):
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for k in list(a) + [k for k in b if k not in a]:
            va, vb = a.get(k, MISSING), b.get(k, MISSING)
            found = _first_difference(va, vb, f"{path}.{k}")
            if found:
                return found
        return None
    if type(a) is not type(b) and not (isinstance(a, (int, float)) and isinstance(b, (int, float))
                                       and not isinstance(a, bool) and not isinstance(b, bool)):
        return path, a, b
    return None if a == b else (path, a, b)


def _describe(v: Any, name: str) -> str:
    return f"missing in {name}" if v is MISSING else f"{_fmt_value(v)} in {name}"


def _compared_names(base: Mapping, other: Mapping, extra: Sequence[str]) -> list[str]:
    """The metric names compared as results: --metrics plus those either experiment declares."""
    names = list(extra)
    for exp in (base, other):
        names += [n for n in comparison_of(exp)["metrics"] if n not in names]
    return names


def _metric_difference(base: Mapping, other: Mapping, names: Sequence[str]) -> tuple[list[str], str]:
    """(the names compared: those either experiment has; '' when all of them are equal, else each differing
    metric's first difference, in words)."""
    compared, diffs = [], []
    show = (lambda v: "missing" if v is MISSING else _short(_fmt_value(v), 48))
    for n in names:
        va, vb = metric_value(base.get("metrics"), n), metric_value(other.get("metrics"), n)
        if va is MISSING and vb is MISSING:
            continue
        compared.append(n)
        found = _first_difference(va, vb, f"metrics.{n}")
        if found:
            path, va, vb = found
            diffs.append(f"{path}: {show(va)} vs {show(vb)}")
    return compared, "; ".join(diffs)


def _not_compared_reason(base: Mapping, other: Mapping, names: Sequence[str]) -> str:
    """Why nothing was compared: the experiments' declared reasons, else what is absent."""
    reasons = []
    for exp in (base, other):
        r = comparison_of(exp)["reason"]
        if r and r not in reasons:
            reasons.append(r)
    if reasons:
        return "; ".join(reasons)
    if names:
        return f"no output; metrics {', '.join(names)} recorded in neither"
    return "no output and no result metrics declared"


def compare_reports(reports: Sequence[Mapping], names: Sequence[str] | None = None,
                    only: str | None = None, metrics: Sequence[str] = ()) -> list[dict]:
    """One row per experiment key (baseline order, then keys only in later reports):

        {"key", "baseline": {"status", "message", "dtype", "shape"} | None,
         "comparisons": [{"report": i, "name", "status", "reason", "bitwise_equal", "n_elems",
                          "n_diff", "max_ulp", "max_abs", "max_rel", "params_differ"}
                         for each report i >= 1]}

    plus "compared": what was compared (["output", "metrics.NAME", ...]).
    `metrics`: metric names compared as results, with those the experiments declare (probes.report's
    comparison_of); a difference there makes the experiment differ. Nothing compared: status "not_compared".
    Raises ReportError when the same key has different inputs in two reports.
    """
    if len(reports) < 2:
        raise UsageError("compare needs at least 2 reports")
    names = list(names) if names is not None else [f"report {i}" for i in range(len(reports))]
    if len(names) != len(reports):
        raise ValueError("one name per report")
    tables: list[dict[str, Mapping]] = []
    order: list[str] = []
    seen: set[str] = set()
    for rep, name in zip(reports, names):
        validate_report(rep, name)
        by_key = {}
        for exp in rep["experiments"]:
            k = exp["key"]
            if only and only not in k:
                continue
            by_key[k] = exp
            if k not in seen:
                seen.add(k)
                order.append(k)
        tables.append(by_key)

    rows = []
    decoded: dict[tuple[int, str], np.ndarray] = {}

    def output(i: int, key: str) -> np.ndarray:
        if (i, key) not in decoded:
            decoded[(i, key)] = decode_output(tables[i][key]["output"])
        return decoded[(i, key)]

    base_name = names[0]
    for key in order:
        base = tables[0].get(key)
        row: dict[str, Any] = {"key": key, "baseline": _baseline(base), "comparisons": []}
        for i in range(1, len(reports)):
            other = tables[i].get(key)
            c: dict[str, Any] = {"report": i, "name": names[i], "status": "", "reason": "",
                                 "bitwise_equal": None, "n_elems": None, "n_diff": None,
                                 "max_ulp": None, "max_abs": None, "max_rel": None,
                                 "params_differ": [], "compared": []}
            row["comparisons"].append(c)
            if base is None or other is None:
                c["status"] = "missing"
                c["reason"] = (f"not in {names[i]}" if other is None
                               else f"not in {base_name} (baseline)")
                continue
            found = _first_difference(base["inputs"], other["inputs"], "inputs")
            if found:
                path, va, vb = found
                raise ReportError(f"cannot compare {key!r}: {path} is {_describe(va, base_name)} "
                                  f"and {_describe(vb, names[i])}")
            c["params_differ"] = sorted(
                k for k in set(base["params"]) | set(other["params"])
                if base["params"].get(k, MISSING) != other["params"].get(k, MISSING))
            statuses = {base["status"], other["status"]}
            if "error" in statuses:
                c["status"] = "error"
                c["reason"] = _status_reason("error", base, other, base_name, names[i])
                continue
            if "skipped" in statuses:
                c["status"] = "skipped"
                c["reason"] = _status_reason("skipped", base, other, base_name, names[i])
                continue
            _compare_results(c, base, other, metrics, lambda: (output(0, key), output(i, key)),
                             base_name, names[i])
        rows.append(row)
    return rows


def _baseline(base: Mapping | None) -> dict | None:
    """A row's "baseline": the baseline experiment's status, message, output dtype and shape."""
    if base is None:
        return None
    out = base["output"]
    return {"status": base["status"], "message": base["message"],
            "dtype": out["dtype"] if out else None, "shape": out["shape"] if out else None}


def _compare_results(c: dict, base: Mapping, other: Mapping, extra: Sequence[str], outputs,
                     base_name: str, other_name: str) -> None:
    """Fill comparison `c` of two "ok" experiments: their outputs (when either declares them; `outputs()`
    decodes both) and their result metrics; "not_compared" when there is neither."""
    names = _compared_names(base, other, extra)
    compared, metric_diff = _metric_difference(base, other, names)
    c["compared"] = [f"metrics.{n}" for n in compared]
    if comparison_of(base)["output"] or comparison_of(other)["output"]:
        c["compared"].insert(0, "output")
        bo, oo = base["output"], other["output"]
        if bo is None or oo is None:
            c["status"] = "differ"
            c["reason"] = "; ".join(r for r in (
                f"output recorded only in {base_name if oo is None else other_name}", metric_diff) if r)
            return
        res = compare_outputs(*outputs())
        c.update(res)
        c["status"] = "equal" if res["bitwise_equal"] and not metric_diff else "differ"
        c["reason"] = "; ".join(r for r in (c["reason"], metric_diff) if r)
        return
    if not compared:
        c["status"] = NOT_COMPARED
        c["reason"] = _not_compared_reason(base, other, names)
        return
    c["status"] = "differ" if metric_diff else "equal"
    c["reason"] = metric_diff


def _status_reason(status: str, base: Mapping, other: Mapping, bname: str, oname: str) -> str:
    parts = []
    for exp, name in ((base, bname), (other, oname)):
        if exp["status"] == status:
            parts.append(f"{status} in {name}" + (f": {exp['message']}" if exp["message"] else ""))
    return "; ".join(parts)


def row_status(row: Mapping) -> str:
    """The worst status over a row's comparisons (differ > missing > error > skipped > not compared >
    equal)."""
    statuses = {c["status"] for c in row["comparisons"]}
    for s in STATUS_ORDER:
        if s in statuses:
            return s
    return "equal"


def summarize(rows: Sequence[Mapping]) -> dict:
    counts = {s: 0 for s in STATUS_ORDER}
    for row in rows:
        counts[row_status(row)] += 1
    return {"experiments": len(rows), **counts}


def summary_line(summary: Mapping) -> str:
    line = (f"{summary['experiments']} experiments, {summary['equal']} bitwise equal, "
            f"{summary['differ']} differ, {summary['missing']} missing")
    if summary["skipped"]:
        line += f", {summary['skipped']} skipped"
    if summary["error"]:
        line += f", {summary['error']} with errors"
    if summary[NOT_COMPARED]:
        line += f", {summary[NOT_COMPARED]} not compared"
    return line


# --------------------------------------------------------------------------------------------
# suite folders


def _keys(reports: Sequence[Mapping | None], only: str | None) -> list[str]:
    """The experiment keys of the reports, in order of first appearance (those containing `only`)."""
    order: dict[str, None] = {}
    for rep in reports:
        for exp in (rep or {}).get("experiments", []):
            if not only or only in exp["key"]:
                order.setdefault(exp["key"], None)
    return list(order)


def _blank_cell(i: int, name: str, status: str, reason: str) -> dict:
    return {"report": i, "name": name, "status": status, "reason": reason, "bitwise_equal": None,
            "n_elems": None, "n_diff": None, "max_ulp": None, "max_abs": None, "max_rel": None,
            "params_differ": [], "compared": []}


def _compare_pair(base: Mapping, other: Mapping, names: Sequence[str], only: str | None,
                  metrics: Sequence[str]) -> dict[str, dict]:
    """{key: row} of two reports. Where some key's inputs differ (compare_reports raises), each key is compared
    on its own and those keys get an "error" row that says which input differs."""
    try:
        return {r["key"]: r for r in compare_reports([base, other], names=names, only=only, metrics=metrics)}
    except ReportError:
        pass
    rows = {}
    for key in _keys([base, other], only):
        subset = [{**rep, "experiments": [e for e in rep["experiments"] if e["key"] == key]} for rep in (base, other)]
        try:
            rows.update((r["key"], r) for r in compare_reports(subset, names=names, metrics=metrics))
        except ReportError as exc:
            exp = next((e for e in base["experiments"] if e["key"] == key), None)
            why = str(exc).removeprefix(f"cannot compare {key!r}: ")
            rows[key] = {"key": key, "baseline": _baseline(exp),
                         "comparisons": [_blank_cell(1, names[1], "error", f"cannot compare: {why}")]}
    return rows


def _column_summary(rows: Sequence[Mapping], j: int) -> dict:
    return summarize([{"comparisons": [r["comparisons"][j]]} for r in rows])


def compare_section(name: str, reports: Sequence[Mapping | None], labels: Sequence[str],
                    absent: Sequence[str] = (), only: str | None = None, metrics: Sequence[str] = ()) -> dict:
    """One probe across several sources, each against the first (the baseline):

        {"name", "rows": [{"key", "baseline", "comparisons": [one per other source]}],
         "columns": [{"index", "label", "status": compared | missing, "reason", "summary"}], "summary"}

    `reports[i]` is None where source i has no report of this probe; `absent[i]` then says why. Every cell
    of such a column is "missing". Rows: the baseline's keys, then keys only in later sources."""
    absent = list(absent) or [""] * len(reports)
    base = reports[0]
    keys = _keys(reports, only)
    pairs: list[dict[str, dict] | None] = []
    columns = []
    for i in range(1, len(reports)):
        col = {"index": i, "label": labels[i], "status": "compared", "reason": "", "summary": None}
        if base is None or reports[i] is None:
            gone = [(labels[j], absent[j]) for j in (0, i) if reports[j] is None]
            col.update(status="missing", reason="; ".join(
                f"no {name} report in {lab}" + (f" ({why})" if why else "") for lab, why in gone))
            pairs.append(None)
        else:
            pairs.append(_compare_pair(base, reports[i], [labels[0], labels[i]], only, metrics))
        columns.append(col)
    rows = []
    for key in keys:
        row = None
        cells = []
        for i, (col, pair) in enumerate(zip(columns, pairs), start=1):
            found = pair.get(key) if pair is not None else None
            if found is not None:
                row = row or found
                cells.append({**found["comparisons"][0], "report": i})
            else:
                where = col["reason"] or f"not in {labels[0]} (baseline) nor {labels[i]}"
                cells.append(_blank_cell(i, labels[i], "missing", where))
        if row is None:
            exp = next((e for e in (base or {}).get("experiments", []) if e["key"] == key), None)
            row = {"key": key, "baseline": _baseline(exp)}
        rows.append({"key": key, "baseline": row["baseline"], "comparisons": cells})
    for j, col in enumerate(columns):
        col["summary"] = _column_summary(rows, j)
    return {"name": name, "rows": rows, "columns": columns, "summary": summarize(rows),
            "warnings": report_warnings(reports, labels)}


def report_warnings(reports: Sequence[Mapping | None], labels: Sequence[str]) -> list[dict]:
    """The run warnings the reports carry (probes.report.note_run_warning: a run that did something other than
    asked, e.g. a kernel config that failed and was replaced): [{"index", "label", "kind", "message"}]. Two
    reports can be bitwise equal and still not be what was asked for; compare says so beside the rows."""
    return [{"index": i, "label": label, "kind": w.get("kind", "?"), "message": w.get("message", "")}
            for i, (rep, label) in enumerate(zip(reports, labels)) if rep is not None
            for w in rep.get("warnings") or []]


def warning_lines(warnings: Sequence[Mapping]) -> list[str]:
    """One line per run warning, for the terminal."""
    return [f"WARNING [{w['index']}] {w['label']}: {w['kind']}: {w['message']}" for w in warnings]


def _source(label: str, path: str, machine: str, created: Any, code: Any, times: str = "") -> dict:
    return {"label": label, "path": path, "machine": machine, "created_utc": created,
            "code": code_summary(code), "times": times}


def compare_bundles(paths: Sequence[str], only: str | None = None, metrics: Sequence[str] = ()) -> dict:
    """Line up two or more suite folders (probes.bundle), each against the first, probe by probe:

        {"mode": "bundles", "sources": [{"label", "path", "machine", "created_utc", "code", "times"}],
         "sections": [compare_section(...) + {"title", "reports", "plots"}, one per probe], "summary"}

    A probe is in the sections when any folder ran it; a folder whose report of it is absent or unreadable
    is "missing" in that column, with the reason (the part's status there)."""
    from probes import bundle as bundles
    from probes.device import fingerprint_summary

    if len(paths) < 2:
        raise UsageError(f"compare needs at least 2 suite folders, got {len(paths)}")
    loaded = [bundles.load_bundle(p) for p in paths]
    labels = [str(p) for p in paths]
    names: dict[str, str] = {}
    for b in loaded:
        for part in b["manifest"].get("parts", []):
            names.setdefault(part["name"], part.get("title", ""))
    table: dict[str, list] = {n: [] for n in names}
    for b in loaded:
        parts = {p["name"]: p for p in b["manifest"].get("parts", [])}
        for n in names:
            table[n].append(_bundle_part(b, parts.get(n)))
    reports = [rep for entries in table.values() for rep, _, _, _ in entries if rep is not None]
    _check_metric_names(reports, list(metrics), only)
    sections = []
    for n, title in names.items():
        entries = table[n]
        sec = compare_section(n, [e[0] for e in entries], labels, [e[1] for e in entries], only, metrics)
        sec.update(title=title, reports=[e[2] for e in entries], plots=[e[3] for e in entries])
        sections.append(sec)
    sources = []
    for label, b in zip(labels, loaded):
        m = b["manifest"]
        times = ", ".join(f"{k} {v:.1f} s" for k, v in (m.get("totals") or {}).items())
        sources.append(_source(label, str(b["path"]), fingerprint_summary(b["fingerprint"]),
                               m.get("created_utc"), m.get("code"), times))
    all_rows = [r for sec in sections for r in sec["rows"]]
    return {"mode": "bundles", "sources": sources, "sections": sections, "summary": summarize(all_rows)}


def _bundle_part(b: dict, part: Mapping | None) -> tuple[dict | None, str, str | None, list[str]]:
    """(report or None, why it is absent, report path, plot paths) of one part of a loaded suite folder."""
    from probes import bundle as bundles

    if part is None:
        return None, "not run", None, []
    plots = [str(p) for p in bundles.part_plots(b, part)]
    path = bundles.part_report(b, part)
    if path is None:
        return None, f"{part.get('status', 'no report')}, exit {part.get('exit_status')}", None, plots
    try:
        return load_report(path), "", str(path), plots
    except ReportError as exc:
        return None, str(exc), str(path), plots


def _sibling_plots(path: str) -> list[str]:
    """A report file's plot: the .png of the same name beside it, when there is one."""
    from pathlib import Path

    png = Path(path).with_suffix(".png")
    return [str(png)] if png.is_file() else []


# --------------------------------------------------------------------------------------------
# text output


def _g(x: Any) -> str:
    if x is None:
        return "?"
    if isinstance(x, float):
        if math.isinf(x):
            return "inf"
        return f"{x:.3g}"
    return str(x)


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_cell(c: Mapping) -> str:
    """One comparison in words; "equal" names what was compared unless it was the output alone (a count of
    metrics where the names would be long)."""
    s = c["status"]
    if s == "equal":
        what = [n.removeprefix("metrics.") for n in c.get("compared") or []]
        if what in ([], ["output"]):
            return "equal"
        names = ", ".join(what)
        if len(names) > 60:
            n = len(what) - (what[0] == "output")
            names = ("output, " if what[0] == "output" else "") + f"{n} metrics"
        return f"equal ({names})"
    if s == NOT_COMPARED:
        return _short(f"not compared: {c['reason']}")
    if s == "differ":
        if c.get("n_diff") is None:
            return f"differs: {c['reason']}"
        text = (f"differs: {c['n_diff']}/{c['n_elems']} elems, max {_g(c['max_ulp'])} ulp, "
                f"rel {_g(c['max_rel'])}")
        return text + (f" ({c['reason']})" if c.get("reason") else "")
    return _short(c.get("reason") or s)


def format_table(rows: Sequence[Mapping], n_reports: int) -> str:
    header = ["experiment"] + [f"[{i}] vs [0]" for i in range(1, n_reports)]
    body = [[r["key"]] + [format_cell(c) for c in r["comparisons"]] for r in rows]
    widths = [max(len(x[j]) for x in [header] + body) for j in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip() for r in body]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m probes.compare",
        description="Compare driftscope reports bit for bit. The first report is the baseline; "
                    "experiments are matched by key. Each is compared by what it declares: its output (bit for "
                    "bit) and/or result metrics (exact values); one with nothing to compare (timings, or an "
                    "old report's experiment with no output) reads 'not compared', never 'equal'. Given suite "
                    "folders (python -m probes.suite) instead of reports, compares each probe's reports across "
                    "them.")
    parser.add_argument("reports", nargs="+", metavar="REPORT.json|DIR",
                        help="reports written by the probes' --json (at least 2), or suite folders (at least 2)")
    parser.add_argument("--only", metavar="SUBSTRING", default=None,
                        help="compare only experiments whose key contains SUBSTRING")
    parser.add_argument("--metrics", metavar="NAME[,NAME]", default="",
                        help="metrics compared as results as well, by exact equality: a metrics key or a "
                             "dotted path into one (e.g. change_points for a GEMM sweep, default.desc,distinct "
                             "for cuBLASLt algos, in reports written before experiments declared them)")
    parser.add_argument("--fail-on-diff", action="store_true",
                        help="exit with status 1 when any experiment differs (its output, or a result metric "
                             "it declares or --metrics names), is missing from a report or failed in one; "
                             "skipped and not compared ones (nothing declared to compare, e.g. timings) do "
                             "not fail it, and the summary line counts them")
    parser.add_argument("--json", metavar="PATH", default=None,
                        help="also write the comparison (every row and the summary) as JSON")
    parser.add_argument("--html", metavar="PATH", default=None,
                        help="also write the comparison as one HTML page that opens offline: per probe the "
                             "statuses, the experiments that are not bitwise equal, and the plots side by side "
                             "(embedded)")
    args = parser.parse_args(argv)
    folders = [os.path.isdir(p) for p in args.reports]
    if any(folders):
        if not all(folders):
            raise UsageError("give either report files or suite folders, not both: "
                             + ", ".join(f"{p} is a folder" if d else f"{p} is a file" if os.path.exists(p)
                                         else f"{p} does not exist" for p, d in zip(args.reports, folders)))
        return _main_bundles(args)
    if len(args.reports) < 2:
        raise UsageError(f"compare needs at least 2 reports, got {len(args.reports)}")
    from probes.device import fingerprint_summary

    reports = [load_report(p) for p in args.reports]
    metric_names = _metric_names(args)
    _check_metric_names(reports, metric_names, args.only)
    rows = compare_reports(reports, names=args.reports, only=args.only, metrics=metric_names)
    for i, (path, rep) in enumerate(zip(args.reports, reports)):
        role = " (baseline)" if i == 0 else ""
        print(f"[{i}] {path}{role}: {rep['probe']}, {fingerprint_summary(rep['fingerprint'])}; "
              f"{code_summary(rep.get('code'))}")
    probes = sorted({rep["probe"] for rep in reports})
    if len(probes) > 1:
        print(f"note: the reports come from different probes ({', '.join(probes)})")
    warnings = report_warnings(reports, args.reports)
    for line in warning_lines(warnings):
        print(line)
    print()
    if rows:
        print(format_table(rows, len(reports)))
        print()
    elif args.only:
        print(f"no experiment key contains {args.only!r}")
    summary = summarize(rows)
    print(summary_line(summary))
    if args.json:
        write_json(jsonable({
            "schema": COMPARE_SCHEMA, "schema_version": 1,
            "reports": [{"path": p, "probe": r["probe"],
                         "fingerprint_summary": fingerprint_summary(r["fingerprint"]), "code": r.get("code")}
                        for p, r in zip(args.reports, reports)],
            "only": args.only, "metrics": metric_names, "rows": rows, "summary": summary,
            "warnings": warnings}), args.json)
    if args.html:
        sources = [_source(p, p, fingerprint_summary(r["fingerprint"]), r.get("created_utc"), r.get("code"))
                   for p, r in zip(args.reports, reports)]
        section = {"name": "+".join(probes), "title": "", "rows": rows, "summary": summary,
                   "columns": [{"index": i, "label": args.reports[i], "status": "compared", "reason": "",
                                "summary": _column_summary(rows, i - 1)} for i in range(1, len(reports))],
                   "reports": list(args.reports), "plots": [_sibling_plots(p) for p in args.reports],
                   "warnings": warnings}
        _write_html({"mode": "reports", "sources": sources, "sections": [section], "summary": summary}, args.html)
    failed = sum(summary[s] for s in FAILING)
    return 1 if args.fail_on_diff and failed else 0


def _metric_names(args: argparse.Namespace) -> list[str]:
    return [m.strip() for m in args.metrics.split(",") if m.strip()]


def _write_html(result: Mapping, path: str) -> None:
    from probes import page  # noqa: PLC0415  (page imports this module)

    print(f"page: {page.write_compare(result, path)}")


def _main_bundles(args: argparse.Namespace) -> int:
    """compare DIR_A DIR_B ...: per probe, a table and a summary line; --json / --html of the whole."""
    metric_names = _metric_names(args)
    result = compare_bundles(args.reports, only=args.only, metrics=metric_names)
    for i, src in enumerate(result["sources"]):
        role = " (baseline)" if i == 0 else ""
        times = f"; suite {src['times']}" if src["times"] else ""
        print(f"[{i}] {src['label']}{role}: {src['machine']}; {src['code']}{times}")
    for sec in result["sections"]:
        print(f"\n== {sec['name']}")
        for col in sec["columns"]:
            text = col["reason"] if col["status"] == "missing" else summary_line(col["summary"])
            print(f"[{col['index']}] vs [0]: {text}")
        for line in warning_lines(sec.get("warnings", [])):
            print(line)
        notable = [r for r in sec["rows"] if row_status(r) not in ("equal", NOT_COMPARED)]
        if notable and any(c["status"] == "compared" for c in sec["columns"]):
            print(f"not bitwise equal: {len(notable)} of {len(sec['rows'])} experiments")
            print(format_table(notable, len(result["sources"])))
    print()
    print(summary_line(result["summary"]))
    if args.json:
        write_json(jsonable({"schema": COMPARE_SCHEMA, "schema_version": 1, "mode": "bundles",
                             "only": args.only, "metrics": metric_names, **result}), args.json)
    if args.html:
        _write_html(result, args.html)
    failed = sum(result["summary"][s] for s in FAILING)
    return 1 if args.fail_on_diff and failed else 0


def _check_metric_names(reports: Sequence[Mapping], names: Sequence[str], only: str | None) -> None:
    """--metrics naming a metric that no (selected) experiment has selects nothing: a UsageError."""
    exps = [e for r in reports for e in r["experiments"] if not only or only in e["key"]]
    for n in names:
        if all(metric_value(e.get("metrics"), n) is MISSING for e in exps):
            raise UsageError(f"--metrics: no experiment{' selected' if only else ''} has a metric {n!r}")


if __name__ == "__main__":
    sys.exit(guarded_main(main))
