"""The driftscope report: one JSON file per probe run on one machine.

Layout (schema "driftscope-report", version 1)::

    {
      "schema": "driftscope-report", "schema_version": 1,
      "probe": "reduction",
      "created_utc": "2025-01-01T12:00:00+00:00",
      "driftscope_version": "0.1.0",
      "command": ["python", "-m", "probes.reduction", "--device", "cuda"],
      "code": {"commit": "3f1c...", "dirty": false, "source": "git", "version": "0.1.0"},
      "fingerprint": {...probes.device.fingerprint()...},
      "config": {...the probe's settings...},
      "experiments": [
        {"key": "reduction/cuda_ext/fixed/float32->float32/n=4097",   # unique in the report
         "status": "ok",                                              # ok | skipped | error
         "message": "",                                               # why skipped / the error
         "inputs": {"generator": "numpy.default_rng", "seed": 0, "distribution": "normal",
                    "n": 4097, "dtype": "float32"},                  # determines the input exactly
         "params": {"backend": "cuda_ext", "strategy": "fixed"},      # how it was computed
         "output": {"dtype": "float32", "shape": [], "bits": ["3f800000"]},   # or null
         "metrics": {"seconds": 0.0012},                              # or null
         "compares": {"output": true, "metrics": [], "reason": ""}}   # what probes.compare compares
      ]
    }

`code` says which code made the report (see `code_identity`): the git commit and whether tracked files had
uncommitted changes; from an installed wheel, the commit recorded when it was built, or null with the reason.

`compares` declares what a comparison of two reports compares for this experiment: its output (bit for
bit), the named metrics (exact equality; a name is a metrics key or a dotted path into one, e.g.
"default.desc"), or both. An experiment with nothing to compare (timings) declares no output and no
metrics and says why in `reason`; probes.compare then says "not compared", never "equal". add_experiment
requires the declaration; reports written before it existed (no `compares`, no `code`) still load, and
compare treats their recorded output (and metrics["result_metrics"], the sweep's older declaration) as
what they compare.

A report written by a process that recorded run warnings (`note_run_warning`: a kernel config that failed
and was replaced by another, say) also carries them, filled in by write_report::

      "warnings": [{"kind": "triton_fallback", "message": "...", ...details...}]

A report that is not complete (a probe still running, or interrupted by Ctrl-C or SIGTERM: probes.runner)
carries why, and which cases it holds::

      "partial": {"reason": "interrupted (SIGTERM)", "cases_planned": 40, "cases_done": ["<key>", ...],
                  "options": {...the options of the run...}}

and a report that a later run completed (``--resume``) lists those runs::

      "resumed": [{"created_utc": "...", "command": [...], "cases_done_before": 17}]

Outputs are stored exactly: `bits` holds the unsigned-integer view of every element (C order) as a
zero-padded lowercase hex string (2 digits per byte), so NaN payloads, -0.0, bfloat16 and float8
survive. `decode_output` gives back the array, bit for bit.

JSON numbers: the file is strict JSON (no NaN/Infinity literals). Non-finite floats in metrics,
inputs, params, config and fingerprint are stored as the strings "nan", "inf" and "-inf"; numpy
scalars and arrays become Python numbers and lists; tuples become lists. The conversion happens
when the value is put into the report (new_report / add_experiment), so a report in memory equals
the report written and loaded back. `decode_number` turns "nan"/"inf"/"-inf" back into floats.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from probes import provenance
from probes.errors import ReportError

__all__ = [
    "SCHEMA", "SCHEMA_VERSION", "STATUSES", "REQUIRED_KEYS",
    "new_report", "add_experiment", "encode_output", "decode_output", "output_dtype",
    "jsonable", "decode_number", "write_report", "write_json", "load_report",
    "validate_report", "driftscope_version", "code_identity", "metric_value", "compares_all_metrics",
    "MISSING", "comparison_of", "note_run_warning", "RUN_WARNINGS", "TIMINGS",
]

SCHEMA = "driftscope-report"
SCHEMA_VERSION = 1
STATUSES = ("ok", "skipped", "error")
REQUIRED_KEYS = ("schema", "schema_version", "probe", "created_utc", "driftscope_version",
                 "command", "fingerprint", "config", "experiments")
EXPERIMENT_KEYS = ("key", "status", "message", "inputs", "params", "output", "metrics")

_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
# NaN/Infinity literals (not strict JSON, but Python writes them) load as jsonable's strings.
_NONSTRICT_CONSTANTS = {"NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}


# --------------------------------------------------------------------------------------------
# versions


def driftscope_version() -> str:
    """The installed driftscope version, else the one in the source tree's pyproject.toml."""
    try:
        from importlib.metadata import PackageNotFoundError, version
        try:
            return version("driftscope")
        except PackageNotFoundError:
            pass
    except ImportError:  # pragma: no cover
        pass
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        text = pyproject.read_text(encoding="utf-8")
        m = re.search(r'^\s*version\s*=\s*"([^"]+)"', text, re.M)
        if m:
            return m.group(1) + "+source"
    except OSError:
        pass
    return "unknown"


def code_identity(root: str | os.PathLike | None = None) -> dict:
    """Which code makes a report: {"commit", "dirty", "source", "version"[, "reason"]}. From the git checkout
    driftscope runs from (`root`, default: its source tree); else the commit recorded when the installed
    package was built (probes.provenance); else commit null and the reason. Never raises."""
    return {**provenance.identity(root), "version": driftscope_version()}


# --------------------------------------------------------------------------------------------
# JSON-safe values


def jsonable(value: Any) -> Any:
    """A strict-JSON version of `value` (see the module docstring for the rules)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if math.isnan(f):
            return "nan"
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return f
    if isinstance(value, np.generic):  # ml_dtypes scalars (bfloat16, float8...) and the like
        try:
            return jsonable(float(value))
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biufcOUS":  # ml_dtypes (bfloat16, float8, ...)
            value = value.astype(np.float64)
        return jsonable(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [jsonable(v) for v in items]
    if isinstance(value, (Path, np.dtype, type)):
        return getattr(value, "__name__", None) if isinstance(value, type) else str(value)
    if hasattr(value, "item") and callable(value.item):  # 0-d tensors and friends
        try:
            return jsonable(value.item())
        except Exception:  # noqa: BLE001
            pass
    return str(value)


def decode_number(value: Any) -> Any:
    """Turn "nan", "inf", "-inf" (as jsonable stores them) back into floats; else unchanged."""
    if isinstance(value, str) and value in _NONFINITE:
        return _NONFINITE[value]
    return value


# --------------------------------------------------------------------------------------------
# outputs

_NUMPY_DTYPES = ("float64", "float32", "float16", "int8", "int16", "int32", "int64",
                 "uint8", "uint16", "uint32", "uint64", "bool")


def output_dtype(name: str) -> np.dtype:
    """numpy dtype for a stored dtype name (numpy types, and ml_dtypes' bfloat16, float8_*, ...)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"bad dtype name {name!r}")
    if name in _NUMPY_DTYPES:
        return np.dtype(name)
    import ml_dtypes
    t = getattr(ml_dtypes, name, None)
    if t is None or not isinstance(t, type):
        raise ValueError(f"unknown dtype {name!r}")
    dt = np.dtype(t)
    if dt.itemsize not in (1, 2, 4, 8):
        raise ValueError(f"unsupported dtype {name!r}")
    return dt


def _dtype_name(dt: np.dtype) -> str:
    name = dt.name
    if dt == np.bool_:
        return "bool"
    try:
        if output_dtype(name) == dt:
            return name
    except ValueError:
        pass
    raise TypeError(f"cannot store an output of dtype {dt!r}; supported: {', '.join(_NUMPY_DTYPES)} "
                    "and the ml_dtypes types (bfloat16, float8_e4m3fn, float8_e5m2, ...)")


def _uint_dtype(itemsize: int) -> np.dtype:
    return np.dtype(f"<u{itemsize}")


def encode_output(output: Any) -> dict:
    """{"dtype", "shape", "bits"} for a numpy array or scalar (ml_dtypes types included)."""
    if hasattr(output, "detach") and hasattr(output, "cpu"):
        raise TypeError("pass a numpy array, not a tensor: convert with .cpu().numpy() "
                        "(bfloat16: .view(torch.int16).numpy().view(ml_dtypes.bfloat16))")
    arr = np.asarray(output)
    if arr.dtype == object:
        raise TypeError(f"cannot store an output of type {type(output).__name__}")
    name = _dtype_name(arr.dtype)
    flat = np.ascontiguousarray(arr).reshape(-1)
    size = arr.dtype.itemsize
    u = flat.view(_uint_dtype(size))
    # Big-endian bytes -> hex gives each element's value as most-significant digit first.
    hexed = u.astype(u.dtype.newbyteorder(">")).tobytes().hex()
    width = 2 * size
    bits = [hexed[i:i + width] for i in range(0, len(hexed), width)]
    return {"dtype": name, "shape": [int(s) for s in arr.shape], "bits": bits}


def decode_output(entry: Mapping) -> np.ndarray:
    """The exact array stored by encode_output; accepts an experiment or its "output" field."""
    out = entry.get("output", entry) if "bits" not in entry else entry
    if out is None:
        raise ValueError("experiment has no output")
    dt = output_dtype(out["dtype"])
    shape = tuple(int(s) for s in out["shape"])
    be = np.frombuffer(bytes.fromhex("".join(out["bits"])),
                       dtype=_uint_dtype(dt.itemsize).newbyteorder(">"))
    u = be.astype(_uint_dtype(dt.itemsize))
    return u.view(dt).reshape(shape)


# --------------------------------------------------------------------------------------------
# building


def new_report(probe: str, *, command: list[str] | None, fingerprint: Mapping | None,
               config: Mapping | None) -> dict:
    """An empty report for `probe`; command defaults to sys.argv; `code` is code_identity()."""
    if not isinstance(probe, str) or not probe:
        raise ValueError("probe must be a non-empty string")
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "probe": probe,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "driftscope_version": driftscope_version(),
        "command": [str(a) for a in (sys.argv if command is None else command)],
        "code": jsonable(code_identity()),
        "fingerprint": jsonable(dict(fingerprint or {})),
        "config": jsonable(dict(config or {})),
        "experiments": [],
    }


def add_experiment(report: dict, *, key: str, inputs: Mapping, params: Mapping, compares: Mapping,
                   output: Any = None, metrics: Mapping | None = None, status: str = "ok",
                   message: str = "") -> dict:
    """Append one experiment and return it. Raises ValueError for a duplicate key, a bad status or a bad
    `compares`.

    `compares` declares what probes.compare compares between two reports (see the module docstring):
    {"output": True} (the output, bit for bit), {"metrics": [names]} (result metrics, exact equality), both,
    or {"reason": "why nothing"} when there is nothing to compare (timings). An "ok" experiment must have
    what it declares: its output, and every named metric."""
    if not isinstance(key, str) or not key:
        raise ValueError("experiment key must be a non-empty string")
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
    if any(e.get("key") == key for e in report["experiments"]):
        raise ValueError(f"duplicate experiment key {key!r}")
    problem = _compares_problem(compares)
    if problem:
        raise ValueError(f"experiment {key!r}: compares {problem}")
    entry = {
        "key": key,
        "status": status,
        "message": str(message or ""),
        "inputs": jsonable(dict(inputs or {})),
        "params": jsonable(dict(params or {})),
        "output": None if output is None else encode_output(output),
        "metrics": None if metrics is None else jsonable(dict(metrics)),
        "compares": {"output": bool(compares.get("output", False)),
                     "metrics": [str(n) for n in compares.get("metrics", ())],
                     "reason": str(compares.get("reason", ""))},
    }
    problem = _declaration_unmet(entry)
    if problem:
        raise ValueError(f"experiment {key!r}: {problem}")
    report["experiments"].append(entry)
    return entry


# --------------------------------------------------------------------------------------------
# what compare compares

COMPARES_KEYS = ("output", "metrics", "reason")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


#: metric_value's answer where an experiment has no such metric.
MISSING = _Missing()


def metric_value(metrics: Any, name: str) -> Any:
    """The metric `name` of an experiment's `metrics`: the key itself, else a dotted path through nested
    objects ("default.desc"), where a null on the way gives null (the whole object was not recorded, e.g. no
    default algorithm). MISSING where there is no such metric."""
    if not isinstance(metrics, Mapping):
        return MISSING
    if name in metrics:
        return metrics[name]
    head, dot, rest = name.partition(".")
    if not dot or head not in metrics:
        return MISSING
    return None if metrics[head] is None else metric_value(metrics[head], rest)


def _compares_problem(compares: Any) -> str:
    """'' when `compares` is a well-formed declaration, else what is wrong with it (after "compares ")."""
    if not isinstance(compares, Mapping):
        return (f"must be an object with keys {', '.join(COMPARES_KEYS)}, not {_type_name(compares)} "
                "(e.g. {\"output\": true}, {\"metrics\": [\"change_points\"]} or {\"reason\": \"timings\"})")
    unknown = [k for k in compares if k not in COMPARES_KEYS]
    if unknown:
        return f"has unknown key {unknown[0]!r} (expected {', '.join(COMPARES_KEYS)})"
    output, names = compares.get("output", False), compares.get("metrics", [])
    reason = compares.get("reason", "")
    if not isinstance(output, bool):
        return f"output must be true or false, not {output!r}"
    if isinstance(names, (str, bytes)) or not isinstance(names, (list, tuple)) \
            or not all(isinstance(n, str) and n for n in names):
        return f"metrics must be a list of metric names, not {names!r}"
    if len(set(names)) != len(names):
        return f"metrics names a metric twice: {list(names)!r}"
    if not isinstance(reason, str):
        return f"reason must be a string, not {reason!r}"
    if not output and not names and not reason.strip():
        return "declares nothing to compare (no output, no metrics) and gives no reason why"
    return ""


def _declaration_unmet(exp: Mapping) -> str:
    """'' unless an "ok" experiment lacks what its `compares` declares (its output, a named metric)."""
    c = exp.get("compares")
    if c is None or exp["status"] != "ok":
        return ""
    if c.get("output") and exp["output"] is None:
        return "compares declares its output, but it recorded none"
    for name in c.get("metrics", []):
        if metric_value(exp["metrics"], name) is MISSING:
            return f"compares declares metric {name!r}, but its metrics have no such entry"
    return ""


#: The `compares` of an experiment that holds only timings: nothing is compared, and this says why.
TIMINGS = {"reason": "timings are measurements, not compared"}


def compares_all_metrics(metrics: Mapping, but: Sequence[str] = (), output: bool = False) -> dict:
    """A `compares` declaration naming every metric in `metrics` except those in `but` (its timings): for
    experiments whose metrics are all exact results but a few. None left (and no output): nothing compared."""
    names = [str(k) for k in metrics if k not in but]
    if not names and not output:
        return {"reason": "no result metrics recorded"}
    return {"output": output, "metrics": names}


def comparison_of(exp: Mapping) -> dict:
    """What probes.compare compares for this experiment: {"output": bool, "metrics": [names], "reason",
    "declared"}. From its `compares`; for an experiment written before declarations existed: its output if it
    recorded one, and the metrics it names in metrics["result_metrics"] (the GEMM sweep's older declaration)."""
    c = exp.get("compares")
    if c is not None:
        return {"output": bool(c.get("output", False)), "metrics": list(c.get("metrics", [])),
                "reason": c.get("reason", ""), "declared": True}
    legacy = (exp.get("metrics") or {}).get("result_metrics") or []
    return {"output": exp.get("output") is not None,
            "metrics": [n for n in legacy if isinstance(n, str)] if isinstance(legacy, list) else [],
            "reason": "", "declared": False}


# --------------------------------------------------------------------------------------------
# writing


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write strict JSON atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    try:
        text = json.dumps(obj, indent=1, allow_nan=False, ensure_ascii=False) + "\n"
    except ValueError as exc:  # NaN that did not go through jsonable: a bug in the caller
        raise ValueError(f"report is not strict JSON: {exc}") from exc
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError as exc:
        raise ReportError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    return path


def write_report(report: Mapping, path: str | os.PathLike) -> Path:
    """Validate (as load_report would) and write `report` atomically to `path`; the run warnings this
    process recorded (note_run_warning) go into its "warnings" (also in the report in memory)."""
    _validate(report, str(path))
    if RUN_WARNINGS:
        report["warnings"] = [dict(w) for w in RUN_WARNINGS]
    return write_json(report, path)


# --------------------------------------------------------------------------------------------
# run warnings

#: What this process's run did other than asked (appended by note_run_warning): every report it writes
#: carries them, and probes.cli.guarded_main prints them when a CLI ends.
RUN_WARNINGS: list = []


def note_run_warning(kind: str, message: str, **details: Any) -> dict:
    """Record that this run did something other than asked (e.g. "triton_fallback": a kernel config that
    failed, replaced for the rest of the process): `message` is one line for people, `details` JSON-able."""
    entry = jsonable({"kind": kind, "message": message, **details})
    RUN_WARNINGS.append(entry)
    return entry


# --------------------------------------------------------------------------------------------
# loading and validation


def _no_duplicate_members(pairs):
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise ValueError(f"duplicate JSON member {k!r}")
        obj[k] = v
    return obj


def _line_col(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return line, col


def load_report(path: str | os.PathLike) -> dict:
    """Read and validate a report. Every problem raises ReportError with one line that starts
    with the path."""
    p = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ReportError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise ReportError(f"{p}: is a directory, not a report file") from None
    except OSError as exc:
        raise ReportError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReportError(f"{p}: not a JSON text file (not UTF-8 at byte {exc.start})") from None
    if not text.strip():
        raise ReportError(f"{p}: empty file, not a driftscope report")
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicate_members,
                         parse_constant=_NONSTRICT_CONSTANTS.__getitem__)
    except json.JSONDecodeError as exc:
        end = len(text.rstrip())
        if exc.pos >= end:
            line, col = _line_col(text, end)
            raise ReportError(f"{p}: truncated JSON: the text ends at line {line} column {col} "
                              f"(char {end}) before the document is complete ({exc.msg})") from None
        raise ReportError(f"{p}: not valid JSON: {exc.msg} at line {exc.lineno} column "
                          f"{exc.colno} (char {exc.pos})") from None
    except ValueError as exc:  # duplicate member names
        raise ReportError(f"{p}: malformed JSON: {exc}") from None
    except RecursionError:
        raise ReportError(f"{p}: JSON nested too deeply") from None
    _validate(obj, p)
    return obj


def validate_report(report: Any, where: str = "report") -> None:
    """Raise ReportError (starting with `where`) unless `report` is a valid driftscope report."""
    _validate(report, where)


def _type_name(v: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", int: "a number",
            float: "a number", bool: "a boolean", type(None): "null"}.get(type(v), type(v).__name__)


def _validate(obj: Any, p: str) -> None:
    if not isinstance(obj, dict):
        raise ReportError(f"{p}: not a driftscope report (the JSON is {_type_name(obj)}, "
                          "expected an object)")
    if obj.get("schema") != SCHEMA:
        shown = repr(obj["schema"]) if "schema" in obj else "missing"
        raise ReportError(f"{p}: not a driftscope report (schema={shown}, expected {SCHEMA!r})")
    ver = obj.get("schema_version")
    if isinstance(ver, bool) or not isinstance(ver, int):
        raise ReportError(f"{p}: bad schema_version {ver!r} (expected an integer)")
    if ver > SCHEMA_VERSION:
        raise ReportError(f"{p}: written by a newer driftscope (schema {ver}); this one reads up "
                          f"to {SCHEMA_VERSION} - upgrade driftscope")
    if ver < 1:
        raise ReportError(f"{p}: bad schema_version {ver} (expected 1..{SCHEMA_VERSION})")
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise ReportError(f"{p}: missing required key{'s' if len(missing) > 1 else ''} "
                          + ", ".join(repr(k) for k in missing))
    for key, types, what in (("probe", str, "a string"), ("created_utc", str, "a string"),
                             ("driftscope_version", str, "a string"),
                             ("command", list, "an array"), ("fingerprint", dict, "an object"),
                             ("config", dict, "an object"), ("experiments", list, "an array")):
        if not isinstance(obj[key], types):
            raise ReportError(f"{p}: key {key!r} must be {what}, not {_type_name(obj[key])}")
    for key in ("code", "partial"):  # code: absent in reports written before it existed; partial: complete
        if key in obj and not isinstance(obj[key], dict):
            raise ReportError(f"{p}: key {key!r} must be an object, not {_type_name(obj[key])}")
    seen: dict[str, int] = {}
    for i, exp in enumerate(obj["experiments"]):
        _validate_experiment(exp, i, p)
        k = exp["key"]
        if k in seen:
            raise ReportError(f"{p}: duplicate experiment key {k!r} (experiments #{seen[k]} "
                              f"and #{i})")
        seen[k] = i


def _validate_experiment(exp: Any, i: int, p: str) -> None:
    if not isinstance(exp, dict):
        raise ReportError(f"{p}: experiment #{i} is {_type_name(exp)}, expected an object")
    key = exp.get("key")
    if not isinstance(key, str) or not key:
        raise ReportError(f"{p}: experiment #{i}: field 'key' must be a non-empty string, "
                          f"not {key!r}")
    where = f"{p}: experiment {key!r}"
    for field in EXPERIMENT_KEYS:
        if field not in exp:
            raise ReportError(f"{where}: missing field {field!r}")
    if exp["status"] not in STATUSES:
        raise ReportError(f"{where}: field 'status' is {exp['status']!r}, expected one of "
                          + ", ".join(STATUSES))
    if not isinstance(exp["message"], str):
        raise ReportError(f"{where}: field 'message' must be a string")
    for field in ("inputs", "params"):
        if not isinstance(exp[field], dict):
            raise ReportError(f"{where}: field {field!r} must be an object, "
                              f"not {_type_name(exp[field])}")
    if exp["metrics"] is not None and not isinstance(exp["metrics"], dict):
        raise ReportError(f"{where}: field 'metrics' must be an object or null")
    if "compares" in exp:  # absent in reports written before experiments declared it
        problem = _compares_problem(exp["compares"])
        if problem:
            raise ReportError(f"{where}: field 'compares' {problem}")
        problem = _declaration_unmet(exp)
        if problem:
            raise ReportError(f"{where}: {problem}")
    out = exp["output"]
    if out is None:
        return
    if not isinstance(out, dict):
        raise ReportError(f"{where}: field 'output' must be an object or null")
    for field in ("dtype", "shape", "bits"):
        if field not in out:
            raise ReportError(f"{where}: field 'output.{field}' is missing")
    try:
        dt = output_dtype(out["dtype"])
    except (ValueError, ImportError):
        raise ReportError(f"{where}: field 'output.dtype' is {out['dtype']!r}, not a dtype this "
                          "driftscope knows") from None
    shape = out["shape"]
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool)
                                              and s >= 0 for s in shape):
        raise ReportError(f"{where}: field 'output.shape' must be a list of sizes, "
                          f"not {shape!r}")
    bits = out["bits"]
    if not isinstance(bits, list):
        raise ReportError(f"{where}: field 'output.bits' must be an array of hex strings")
    n = math.prod(shape)
    if len(bits) != n:
        raise ReportError(f"{where}: field 'output.bits' has {len(bits)} values but shape "
                          f"{shape} needs {n}")
    width = 2 * dt.itemsize
    if not (all(type(b) is str and len(b) == width for b in bits)
            and _HEX_RE.fullmatch("".join(bits))):
        for j, b in enumerate(bits):
            if not (isinstance(b, str) and len(b) == width and _HEX_RE.fullmatch(b)):
                raise ReportError(f"{where}: field 'output.bits[{j}]' is {b!r}, expected {width} "
                                  f"hex digits for {out['dtype']}")


_HEX_RE = re.compile(r"[0-9a-fA-F]*")
