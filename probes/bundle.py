"""A suite folder ("bundle"): what `python -m probes.suite` writes, read back by the page and by compare.

Layout::

    OUT/manifest.json          what ran: every part's exact command, exit status, wall times (cold / warm), files
    OUT/fingerprint.json       the device fingerprint (python -m probes.device --json)
    OUT/index.html             the page: tables and plots (probes.page)
    OUT/PART/PART.json         the part's report (a driftscope report, probes.report)
    OUT/PART/*.png             its plots
    OUT/PART/stdout.txt        what it printed (its tables); stderr.txt: its progress and warnings

Paths in the manifest are relative to OUT, so a bundle can be moved or copied as a whole.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from probes.errors import ReportError

__all__ = ["MANIFEST", "FINGERPRINT", "INDEX", "SCHEMA", "SCHEMA_VERSION", "is_bundle", "load_bundle",
           "load_fingerprint", "part_report", "part_plots"]

MANIFEST = "manifest.json"
FINGERPRINT = "fingerprint.json"
INDEX = "index.html"
SCHEMA = "driftscope-suite"
SCHEMA_VERSION = 1


def is_bundle(path: str | Path) -> bool:
    """A folder with a suite manifest in it."""
    return (Path(path) / MANIFEST).is_file()


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReportError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ReportError(f"{path}: the {what} is not valid JSON ({exc})") from None


def load_bundle(path: str | Path) -> dict:
    """{"path", "manifest", "fingerprint"} of a suite folder; the fingerprint is None when the folder has none.
    Raises ReportError for a folder without a manifest, a foreign one or one of a newer schema."""
    root = Path(path)
    if not root.is_dir():
        raise ReportError(f"{root}: not a folder")
    if not is_bundle(root):
        raise ReportError(f"{root}: not a suite folder (no {MANIFEST}; `python -m probes.suite --out DIR` "
                          "writes one)")
    manifest = _read_json(root / MANIFEST, "suite manifest")
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise ReportError(f"{root / MANIFEST}: not a driftscope suite manifest (schema "
                          f"{manifest.get('schema') if isinstance(manifest, dict) else None!r})")
    if not isinstance(manifest.get("schema_version"), int) or manifest["schema_version"] > SCHEMA_VERSION:
        raise ReportError(f"{root / MANIFEST}: suite manifest version {manifest.get('schema_version')!r} is "
                          f"newer than this driftscope reads ({SCHEMA_VERSION})")
    return {"path": root, "manifest": manifest, "fingerprint": load_fingerprint(root)}


def load_fingerprint(root: str | Path) -> dict | None:
    """The folder's fingerprint.json, or None when it has none."""
    path = Path(root) / FINGERPRINT
    return _read_json(path, "fingerprint") if path.is_file() else None


def _file(bundle: dict, rel: str | None) -> Path | None:
    if not rel:
        return None
    p = bundle["path"] / rel
    return p if p.is_file() else None


def part_report(bundle: dict, part: dict) -> Path | None:
    """The part's report file when it exists."""
    return _file(bundle, part.get("report"))


def part_plots(bundle: dict, part: dict) -> list[Path]:
    """The part's plot files that exist, in the manifest's order."""
    return [p for p in (_file(bundle, rel) for rel in part.get("plots") or []) if p is not None]


#: How many of a part's slowest cases the manifest and the page name.
SLOWEST_CASES = 5


def slowest_cases(case_seconds: dict, n: int = SLOWEST_CASES) -> list[tuple[str, float]]:
    """The `n` slowest (key, seconds) of a report's config.case_seconds, slowest first."""
    return sorted(case_seconds.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
