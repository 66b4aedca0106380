"""HTML pages of the suite: a suite folder's index.html, and the comparison of two or more folders.

Both are single static files that open offline, without a server: no script, no external style sheet,
font or image. index.html refers to the plots beside it by relative paths (the folder travels as a
whole); the comparison page embeds its plots as base64 data URIs (one file, wherever it is written).
"""
from __future__ import annotations

import base64
import html
import os
import shlex
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from probes import bundle
from probes.compare import NOT_COMPARED, STATUS_ORDER, format_cell, row_status, summary_line
from probes.errors import ReportError

__all__ = ["document", "table", "badge", "data_uri", "render_index", "write_index", "render_compare",
           "write_compare"]

#: Lines of a part's printed output shown on the page (the rest is in its stdout.txt).
MAX_STDOUT_LINES = 400
#: Experiments listed per part on the index.
MAX_EXPERIMENTS = 2000
#: A comparison's list of experiments that are not equal is shown open up to this many rows.
MAX_OPEN_ROWS = 40

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
       max-width: 1500px; padding: 16px 24px; color: #1d1d1f; background: #fff; }
h1 { font-size: 22px; margin: 8px 0 4px; } h2 { font-size: 18px; margin: 28px 0 6px;
     border-bottom: 1px solid #ddd; padding-bottom: 4px; } h3 { font-size: 15px; margin: 16px 0 4px; }
.meta { color: #555; margin: 2px 0; }
table { border-collapse: collapse; margin: 6px 0 10px; }
th, td { border: 1px solid #d0d0d0; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.key, code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
pre { background: #f7f7f7; border: 1px solid #e2e2e2; padding: 8px; overflow-x: auto; margin: 4px 0 10px; }
pre.cmd { white-space: pre-wrap; word-break: break-all; }
pre.err { background: #fff3f3; border-color: #f0c0c0; }
pre.out { max-height: 520px; overflow: auto; }
.badge { display: inline-block; padding: 0 7px; border-radius: 9px; font-size: 12px; font-weight: 600;
         white-space: nowrap; }
.st-ok, .st-equal, .st-done { background: #dcf5e3; color: #145c2c; }
.st-differ, .st-failed, .st-error, .st-timeout { background: #fde0e0; color: #8a1212; }
.st-interrupted, .st-running { background: #fff0c8; color: #6b4d00; }
.st-missing, .st-not-run { background: #ececec; color: #444; }
.st-skipped { background: #eef2f7; color: #3b4a5e; }
.st-not_compared, .st-compared, .st-as-found, .st-cold, .st-warm { background: #e6eefc; color: #1f3f7a; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
.plots img { max-width: 100%; max-height: 760px; border: 1px solid #e2e2e2; }
.side { display: grid; gap: 12px; align-items: start; }
.side figure { margin: 0; min-width: 0; } .side img { width: 100%; border: 1px solid #e2e2e2; }
figcaption { font-weight: 600; margin-bottom: 4px; }
details { margin: 4px 0 10px; } summary { cursor: pointer; color: #1f3f7a; }
nav a { margin-right: 12px; }
.nowrap { white-space: nowrap; }
"""


# --------------------------------------------------------------------------------------------
# building blocks


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def badge(status: str | None, text: str | None = None) -> str:
    """A coloured status label (class st-STATUS, spaces as dashes)."""
    s = status or "missing"
    return f'<span class="badge st-{esc(s.replace(" ", "-"))}">{esc(text if text is not None else s)}</span>'


def table(header: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """A table: `header` as plain text (escaped), `rows` as ready HTML cells ("<td ...>" or plain HTML text)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = [c if c.startswith("<td") else f"<td>{c}</td>" for c in row]
        body.append("<tr>" + "".join(cells) + "</tr>")
    cls_attr = f' class="{esc(cls)}"' if cls else ""
    return f"<table{cls_attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def num(value: Any, fmt: str = "{:.1f}") -> str:
    return '<td class="num">' + ("-" if value is None else esc(fmt.format(value))) + "</td>"


def document(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n")


def data_uri(path: Path) -> str:
    """The file as a base64 data URI (image/png, image/svg+xml or application/octet-stream)."""
    kind = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg",
            ".jpeg": "image/jpeg"}.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{kind};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _rel(path: str) -> str:
    """A relative path as an href/src (each segment URL-quoted)."""
    from urllib.parse import quote
    return "/".join(quote(seg) for seg in Path(path).as_posix().split("/"))


def _write(text: str, path: Path) -> Path:
    """Write atomically (a reader never sees half a page)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").replace("\r", "\n").splitlines()
    except OSError:
        return []


def _code_text(code: Mapping | None) -> str:
    if not isinstance(code, Mapping):
        return "code: unknown"
    from probes.provenance import code_summary
    return code_summary(code)


# --------------------------------------------------------------------------------------------
# the suite folder's index.html


def _wall_text(runs: Sequence[Mapping]) -> str:
    return " / ".join(f"{r['cache']} {r['wall_s']:.1f} s" for r in runs if r.get("wall_s") is not None) or "-"


def _experiment_counts(report: Mapping) -> dict:
    counts = {"ok": 0, "skipped": 0, "error": 0}
    for e in report.get("experiments", []):
        counts[e.get("status", "error")] = counts.get(e.get("status", "error"), 0) + 1
    return counts


def _load_part_report(b: dict, part: Mapping) -> tuple[dict | None, str]:
    """(the part's report, '') or (None, why not)."""
    path = bundle.part_report(b, part)
    if path is None:
        return None, "no report"
    from probes.report import load_report
    try:
        return load_report(path), ""
    except ReportError as exc:
        return None, str(exc)


def _parts_table(b: dict, reports: Mapping[str, tuple]) -> str:
    m = b["manifest"]
    rows = []
    for part in m.get("parts", []):
        rep, why = reports[part["name"]]
        counts = _experiment_counts(rep) if rep else None
        exps = (f"{sum(counts.values())} ({counts['ok']} ok, {counts['skipped']} skipped, {counts['error']} error)"
                if counts else esc(why))
        links = [f'<a href="{_rel(part["report"])}">report</a>'] if part.get("report") else []
        links += [f'<a href="{_rel(p)}">{esc(Path(p).name)}</a>' for p in part.get("plots") or []]
        links += [f'<a href="{_rel(part[k])}">{k}</a>' for k in ("stdout", "stderr") if part.get(k)]
        rows.append([f'<a href="#part-{esc(part["name"])}">{esc(part["name"])}</a>', badge(part.get("status")),
                     "<td class=\"num\">" + esc(part.get("exit_status")) + "</td>", esc(_wall_text(part["runs"])),
                     num(part.get("report_wall_s")), exps, " ".join(links)])
    ran = {p["name"] for p in m.get("parts", [])}
    for name in m.get("selected_parts", []):
        if name not in ran:
            rows.append([esc(name), badge("not run"), "<td></td>", "-", num(None), "-", ""])
    totals = m.get("totals") or {}
    if totals:
        rows.append(["<b>total</b>", "", "<td></td>",
                     "<b>" + esc(" / ".join(f"{k} {v:.1f} s" for k, v in totals.items())) + "</b>",
                     num(None), "", ""])
    return table(["part", "status", "exit", "wall time (process, per run)", "in report (s)", "experiments",
                  "files"], rows)


def _part_section(b: dict, part: Mapping, report: dict | None, why: str) -> str:
    name = part["name"]
    out = [f'<section id="part-{esc(name)}" class="part" data-status="{esc(part.get("status"))}">',
           f"<h2>{esc(name)} {badge(part.get('status'))}</h2>",
           f'<p class="meta">{esc(part.get("title", ""))}</p>',
           f'<pre class="cmd">{esc(part.get("command_text", ""))}</pre>']
    runs = part.get("runs") or []
    if runs:
        out.append(table(["run", "status", "exit", "wall (s)", "new cache files", "finished (UTC)"], [
            [badge(r["cache"]), badge(r["status"]), f'<td class="num">{esc(r["exit_status"])}</td>',
             num(r["wall_s"]), num(r.get("cache_files_added"), "{}"), esc(r.get("finished_utc"))]
            for r in runs]))
    if part.get("status") != "ok":
        tail = _read_lines(b["path"] / part["stderr"])[-40:] if part.get("stderr") else []
        out.append(f'<h3>stderr (last {len(tail)} lines)</h3><pre class="err">{esc(chr(10).join(tail))}</pre>'
                   if tail else '<p class="meta">no output on stderr</p>')
    plots = bundle.part_plots(b, part)
    if plots:
        out.append('<div class="plots">' + "".join(
            f'<img src="{_rel(p.relative_to(b["path"]).as_posix())}" alt="{esc(name)} plot {esc(p.name)}">'
            for p in plots) + "</div>")
    lines = _read_lines(b["path"] / part["stdout"]) if part.get("stdout") else []
    if lines:
        shown = lines[:MAX_STDOUT_LINES]
        more = (f"\n... {len(lines) - len(shown)} more lines in {part['stdout']}"
                if len(lines) > len(shown) else "")
        out.append(f"<details open><summary>printed output ({len(lines)} lines)</summary>"
                   f"<pre class=\"out\">{esc(chr(10).join(shown) + more)}</pre></details>")
    if report is not None:
        out.append(_time_details(report))
        out.append(_experiments_details(report))
    elif part.get("status") == "ok":
        out.append(f'<p class="meta">report: {esc(why)}</p>')
    out.append("</section>")
    return "\n".join(out)


def _time_details(report: Mapping) -> str:
    """Where the part's time went: its slowest cases as the report times them (probes.runner)."""
    config = report.get("config") or {}
    cases = config.get("case_seconds")
    if not isinstance(cases, Mapping) or not cases:
        return ""
    total = sum(cases.values())
    rows = [[f'<td class="key">{esc(k)}</td>', num(v, "{:.2f}"), num(100 * v / total if total else None)]
            for k, v in bundle.slowest_cases(dict(cases))]
    fin = config.get("finish_seconds")
    return (f'<details class="times"><summary>time: {len(cases)} cases {total:.1f} s'
            + (f", finish {fin:.1f} s" if isinstance(fin, (int, float)) else "") + "; the slowest</summary>"
            + table(["case", "s", "% of cases"], rows) + "</details>")


def _experiments_details(report: Mapping) -> str:
    exps = report.get("experiments", [])
    counts = _experiment_counts(report)
    rows = []
    for e in exps[:MAX_EXPERIMENTS]:
        c = e.get("compares") or {}
        what = ", ".join((["output"] if c.get("output") else []) + list(c.get("metrics") or [])) or (
            f"nothing: {c.get('reason')}" if c.get("reason") else "-")
        o = e.get("output")
        shape = f"{o['dtype']} {o['shape']}" if isinstance(o, Mapping) else "-"
        rows.append([f'<td class="key">{esc(e.get("key"))}</td>', badge(e.get("status")),
                     esc(e.get("message")), esc(shape), esc(what)])
    more = (f'<p class="meta">{len(exps) - MAX_EXPERIMENTS} more in the report</p>'
            if len(exps) > MAX_EXPERIMENTS else "")
    return (f"<details><summary>experiments: {len(exps)} ({counts['ok']} ok, {counts['skipped']} skipped, "
            f"{counts['error']} error)</summary>"
            + table(["key", "status", "message", "output", "compared by probes.compare"], rows) + more
            + "</details>")


def render_index(b: dict) -> str:
    """The page of a loaded suite folder (probes.bundle.load_bundle)."""
    m = b["manifest"]
    fp_entry = m.get("fingerprint") or {}
    machine = fp_entry.get("summary") or m.get("device", "unknown device")
    cache = m.get("cache") or {}
    reports = {p["name"]: _load_part_report(b, p) for p in m.get("parts", [])}
    body = [f"<h1>driftscope suite: {esc(machine)}</h1>",
            f'<p class="meta">device {esc(m.get("device"))} · profile {esc(m.get("profile"))} · '
            f'started {esc(m.get("created_utc"))} · finished {esc(m.get("finished_utc") or "-")} · '
            f'{badge(m.get("status"))}</p>',
            f'<p class="meta">{esc(_code_text(m.get("code")))}</p>',
            f'<pre class="cmd">{esc(shlex.join(m.get("command", [])))}</pre>',
            "<nav>" + "".join(f'<a href="#part-{esc(p["name"])}">{esc(p["name"])}</a>'
                              for p in m.get("parts", [])) + '<a href="#fingerprint">fingerprint</a></nav>',
            "<h2>Parts</h2>", _parts_table(b, reports),
            f'<p class="meta">cache: {esc(cache.get("root"))}'
            f'{" (fresh and empty at the start, deleted at the end: cold)" if cache.get("fresh") else ""}; '
            f'{esc(cache.get("files_before"))} files before, {esc("-" if cache.get("files_after") is None else cache["files_after"])} after. '
            "Wall time is the part's process, start to exit (imports and compiles included); "
            "'in report' is the probe's own measurement.</p>"]
    if m.get("failed"):
        body.append(f'<p>{badge("failed")} {esc(", ".join(m["failed"]))}</p>')
    body += [_part_section(b, p, *reports[p["name"]]) for p in m.get("parts", [])]
    body.append('<section id="fingerprint"><h2>Fingerprint</h2>')
    if b.get("fingerprint"):
        from probes.device import format_fingerprint
        body.append(f'<p class="meta"><a href="{bundle.FINGERPRINT}">{bundle.FINGERPRINT}</a></p>'
                    f"<pre>{esc(format_fingerprint(b['fingerprint']))}</pre>")
    else:
        body.append(f'<p>{badge(fp_entry.get("status") or "missing")} no fingerprint</p>')
    body.append("</section>")
    return document(f"driftscope suite: {machine}", "\n".join(body))


def write_index(folder: Path) -> Path:
    """Render FOLDER/index.html from its manifest and files."""
    return _write(render_index(bundle.load_bundle(folder)), Path(folder) / bundle.INDEX)


# --------------------------------------------------------------------------------------------
# the comparison page


def _summary_cells(summary: Mapping) -> str:
    parts = [badge(s, f"{summary[s]} {s.replace('_', ' ')}") for s in STATUS_ORDER if summary.get(s)]
    return " ".join(parts) or "no experiments"


def _cell(c: Mapping) -> str:
    """A comparison: its status, and the numbers (equal, differ) or the whole reason (the others)."""
    text = format_cell(c) if c["status"] in ("equal", "differ") else c.get("reason") or ""
    return f'<td>{badge(c["status"], c["status"].replace("_", " "))} {esc(text)}</td>'


def _rows_table(rows: Sequence[Mapping], labels: Sequence[str]) -> str:
    header = ["experiment"] + [f"[{i}] vs [0]" for i in range(1, len(labels))]
    return table(header, ([f'<td class="key">{esc(r["key"])}</td>'] + [_cell(c) for c in r["comparisons"]]
                          for r in rows))


def _plots_side_by_side(section: Mapping, labels: Sequence[str]) -> str:
    if not any(section["plots"]):
        return '<p class="meta">no plots</p>'
    n = len(labels)
    figs = []
    for i, paths in enumerate(section["plots"]):
        imgs = "".join(f'<img src="{data_uri(Path(p))}" alt="[{i}] {esc(section["name"])} {esc(Path(p).name)}">'
                       for p in paths) or '<p class="meta">no plot</p>'
        figs.append(f"<figure><figcaption>[{i}] {esc(labels[i])}</figcaption>{imgs}</figure>")
    return f'<div class="side" style="grid-template-columns: repeat({n}, minmax(0, 1fr))">{"".join(figs)}</div>'


def _compare_section(section: Mapping, labels: Sequence[str]) -> str:
    name = section["name"]
    rows = section["rows"]
    worst = row_status_of(rows)
    out = [f'<section id="compare-{esc(name)}" class="part" data-status="{esc(worst)}">',
           f"<h2>{esc(name)} {badge(worst, worst.replace('_', ' '))}</h2>"]
    if section.get("title"):
        out.append(f'<p class="meta">{esc(section["title"])}</p>')
    lines = [[f"[{c['index']}] vs [0]", esc(c["label"]), _summary_cells(c["summary"]) if c.get("summary") else "",
              esc(c.get("reason") or "")] for c in section["columns"]]
    out.append(table(["pair", "source", "experiments", "note"], lines))
    if section.get("warnings"):
        out.append('<ul class="warnings">' + "".join(
            f"<li>{badge('error', 'warning')} [{w['index']}] {esc(w['label'])}: {esc(w['kind'])}: "
            f"{esc(w['message'])}</li>" for w in section["warnings"]) + "</ul>")
    notable = [r for r in rows if row_status(r) not in ("equal", NOT_COMPARED)]
    if notable:
        opened = " open" if len(notable) <= MAX_OPEN_ROWS else ""
        out.append(f"<details{opened}><summary>not bitwise equal: {len(notable)} of {len(rows)} experiments"
                   f"</summary>{_rows_table(notable, labels)}</details>")
    elif rows:
        out.append(f'<p class="meta">every one of the {len(rows)} experiments compared is equal or not '
                   "compared</p>")
    if rows:
        out.append(f"<details><summary>all {len(rows)} experiments</summary>{_rows_table(rows, labels)}</details>")
    out.append(_plots_side_by_side(section, labels))
    out.append("</section>")
    return "\n".join(out)


def row_status_of(rows: Sequence[Mapping]) -> str:
    """A section's headline: differ, missing or error when any row is; else equal when any row is (rows
    skipped or not compared do not hide it); else skipped or not compared; "missing" for no rows."""
    statuses = {row_status(r) for r in rows}
    order = ("differ", "missing", "error", "equal", "skipped", NOT_COMPARED)
    return next((s for s in order if s in statuses), "missing")


def render_compare(result: Mapping) -> str:
    """The comparison page of probes.compare's result (compare_bundles, or report files as one section)."""
    labels = [s["label"] for s in result["sources"]]
    title = "driftscope compare: " + " vs ".join(labels)
    body = [f"<h1>{esc(title)}</h1>",
            '<p class="meta">[0] is the baseline. Per probe and experiment: equal (bit for bit; metrics by '
            "value), differ, not compared (nothing declared to compare, e.g. timings), missing, skipped, "
            "error.</p>"]
    rows = [[f"[{i}]", esc(s["label"]), esc(s.get("machine")), f'<td class="nowrap">{esc(s.get("created_utc"))}</td>',
             esc(s.get("code")),
             esc(s.get("times") or "")] for i, s in enumerate(result["sources"])]
    body.append(table(["", "source", "machine", "created (UTC)", "code", "suite wall time"], rows))
    overview = []
    for sec in result["sections"]:
        overview.append([f'<a href="#compare-{esc(sec["name"])}">{esc(sec["name"])}</a>']
                        + [_summary_cells(c["summary"]) if c.get("summary") else badge(c["status"])
                           for c in sec["columns"]])
    body.append("<h2>Overview</h2>")
    body.append(table(["probe"] + [f"[{i}] vs [0]" for i in range(1, len(labels))], overview))
    body.append(f'<p class="meta">all: {esc(summary_line(result["summary"]))}</p>')
    body += [_compare_section(sec, labels) for sec in result["sections"]]
    return document(title, "\n".join(body))


def write_compare(result: Mapping, path: str | Path) -> Path:
    return _write(render_compare(result), Path(path))
