"""probes.report: exact round trips of outputs, strict JSON, and load_report's error messages."""
import json
import math
import shutil
import subprocess
import sys
import types
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from probes.errors import ReportError
from probes.provenance import code_summary, git_identity
from probes.provenance import main as provenance_main
from probes.report import (MISSING, SCHEMA, SCHEMA_VERSION, add_experiment, code_identity, comparison_of,
                           decode_number, decode_output, encode_output, jsonable, load_report, metric_value,
                           new_report, write_report)

FLOAT_DTYPES = [np.float64, np.float32, np.float16, ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn,
                ml_dtypes.float8_e5m2]
INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
OUT = {"output": True}


def _report(**config):
    return new_report("test", command=["python", "-m", "probes.test"],
                      fingerprint={"device": "cpu"}, config=config)


def _bit_patterns(dtype, rng):
    """Every bit pattern for 8/16-bit types, random ones (plus specials) for wider types."""
    dt = np.dtype(dtype)
    u = np.dtype(f"u{dt.itemsize}")
    if dt.itemsize <= 2:
        pats = np.arange(2 ** (8 * dt.itemsize), dtype=np.uint64).astype(u)
    else:
        top = np.iinfo(u).max
        pats = rng.integers(0, top, size=4096, dtype=u, endpoint=True)
        pats = np.concatenate([pats, np.array([0, top, top >> 1, (top >> 1) + 1], dtype=u)])
    return pats.view(dt)


def _same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    u = np.dtype(f"u{a.dtype.itemsize}")
    return np.array_equal(np.ascontiguousarray(a).view(u), np.ascontiguousarray(b).view(u))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES + INT_DTYPES,
                         ids=lambda d: np.dtype(d).name)
def test_output_round_trip_every_bit(dtype, tmp_path):
    rng = np.random.default_rng(1)
    arr = _bit_patterns(dtype, rng)
    rep = _report()
    add_experiment(rep, key="flat", inputs={"n": arr.size}, params={}, output=arr, compares=OUT)
    add_experiment(rep, key="2d", inputs={}, params={}, output=arr[:24].reshape(4, 6), compares=OUT)
    add_experiment(rep, key="scalar", inputs={}, params={}, output=arr[7], compares=OUT)
    path = write_report(rep, tmp_path / "sub" / "r.json")
    loaded = load_report(path)
    assert loaded == rep  # the in-memory report is exactly what comes back
    by_key = {e["key"]: e for e in loaded["experiments"]}
    assert _same_bits(decode_output(by_key["flat"]), arr)
    assert _same_bits(decode_output(by_key["2d"]), arr[:24].reshape(4, 6))
    scalar = decode_output(by_key["scalar"])
    assert scalar.shape == () and _same_bits(scalar, np.asarray(arr[7]))
    assert by_key["flat"]["output"]["dtype"] == np.dtype(dtype).name


def test_special_float_values_exact(tmp_path):
    payload_nan = np.array([0x7FC00001, 0xFFC00123, 0x7F800001], dtype=np.uint32).view(np.float32)
    arr = np.concatenate([payload_nan, np.array([-0.0, 0.0, np.inf, -np.inf, 1e-45], np.float32)])
    bf = np.array([0x7FC1, 0xFF81, 0x8000, 0x0001], dtype=np.uint16).view(ml_dtypes.bfloat16)
    f8 = np.array([0x7F, 0xFF, 0x80, 0x01], dtype=np.uint8).view(ml_dtypes.float8_e4m3fn)
    rep = _report()
    for name, a in (("f32", arr), ("bf16", bf), ("f8", f8)):
        add_experiment(rep, key=name, inputs={}, params={}, output=a, compares=OUT)
    loaded = load_report(write_report(rep, tmp_path / "r.json"))
    for exp, a in zip(loaded["experiments"], (arr, bf, f8)):
        assert _same_bits(decode_output(exp), a)
    assert loaded["experiments"][0]["output"]["bits"][:4] == ["7fc00001", "ffc00123", "7f800001",
                                                              "80000000"]


def test_bool_and_python_scalars():
    e = encode_output(np.array([True, False]))
    assert e == {"dtype": "bool", "shape": [2], "bits": ["01", "00"]}
    assert decode_output(e).tolist() == [True, False]
    assert encode_output(1.0)["dtype"] == "float64"
    with pytest.raises(TypeError):
        encode_output(np.array(["a"], dtype=object))
    with pytest.raises(TypeError):
        encode_output(np.array([1 + 2j]))


def test_metrics_strict_json_and_round_trip(tmp_path):
    rep = _report(alpha=np.float32(0.5), sizes=(1, 2), bad=float("nan"))
    add_experiment(rep, key="k", inputs={"seed": np.int64(3)}, params={"backend": "numpy"},
                   metrics={"nan": np.float64("nan"), "inf": float("inf"), "ninf": -np.inf,
                            "n": np.int32(7), "arr": np.array([1.5, np.nan]), "ok": np.bool_(True),
                            "bf": ml_dtypes.bfloat16(1.5)},
                   status="ok", compares={"metrics": ["n", "arr"]})
    m = rep["experiments"][0]["metrics"]
    assert m == {"nan": "nan", "inf": "inf", "ninf": "-inf", "n": 7, "arr": [1.5, "nan"],
                 "ok": True, "bf": 1.5}
    assert rep["config"] == {"alpha": 0.5, "sizes": [1, 2], "bad": "nan"}
    path = write_report(rep, tmp_path / "r.json")
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict constant {c}"))
    assert load_report(path) == rep
    assert math.isnan(decode_number(m["nan"])) and decode_number(m["ninf"]) == -math.inf
    assert decode_number(7) == 7 and decode_number("x") == "x"
    assert jsonable({1: (np.float16(2),)}) == {"1": [2.0]}


def test_new_report_fields():
    rep = _report()
    assert rep["schema"] == SCHEMA and rep["schema_version"] == SCHEMA_VERSION
    assert rep["created_utc"].endswith("+00:00") and "T" in rep["created_utc"]
    assert rep["command"][0] == "python" and rep["experiments"] == []
    assert isinstance(rep["driftscope_version"], str) and rep["driftscope_version"]


def test_add_experiment_rejects_duplicates_and_bad_status():
    rep = _report()
    add_experiment(rep, key="a", inputs={}, params={}, status="skipped", message="no cupy", compares=OUT)
    with pytest.raises(ValueError, match="duplicate"):
        add_experiment(rep, key="a", inputs={}, params={}, compares=OUT)
    with pytest.raises(ValueError, match="status"):
        add_experiment(rep, key="b", inputs={}, params={}, status="weird", compares=OUT)


def test_write_is_atomic_and_leaves_no_temp(tmp_path):
    rep = _report()
    write_report(rep, tmp_path / "r.json")
    write_report(rep, tmp_path / "r.json")  # overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


# ---------------------------------------------------------------------------------------------
# load_report errors: one line, starting with the path


def _err(path) -> str:
    with pytest.raises(ReportError) as info:
        load_report(path)
    msg = str(info.value)
    assert msg.startswith(str(path)) and "\n" not in msg
    return msg


def _valid(tmp_path, name="r.json"):
    rep = _report()
    add_experiment(rep, key="e/1", inputs={"seed": 0}, params={},
                   output=np.arange(50, dtype=np.float32), compares=OUT)
    add_experiment(rep, key="e/2", inputs={"seed": 0}, params={}, output=np.float32(1), compares=OUT)
    return rep, write_report(rep, tmp_path / name)


def _write(tmp_path, obj, name="bad.json"):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def test_missing_file(tmp_path):
    assert "no such file" in _err(tmp_path / "nope.json")


def test_directory(tmp_path):
    assert "directory" in _err(tmp_path)


def test_truncated(tmp_path):
    _, path = _valid(tmp_path)
    text = path.read_text()
    bad = _write(tmp_path, text[: len(text) // 2])
    msg = _err(bad)
    assert "truncated JSON" in msg and "line" in msg and "column" in msg


def test_not_json(tmp_path):
    msg = _err(_write(tmp_path, "{\"a\": 1,, }"))
    assert "not valid JSON" in msg and "line 1 column" in msg
    assert "empty" in _err(_write(tmp_path, "  \n"))
    p = tmp_path / "bin.json"
    p.write_bytes(b"\xff\xfe\x00")
    assert "UTF-8" in _err(p)


def test_foreign_json(tmp_path):
    assert "not a driftscope report (schema=missing" in _err(_write(tmp_path, {"name": "x"}))
    assert "schema='other'" in _err(_write(tmp_path, {"schema": "other"}))
    assert "JSON is an array" in _err(_write(tmp_path, [1, 2]))


def test_newer_schema(tmp_path):
    rep, _ = _valid(tmp_path)
    rep["schema_version"] = 2
    msg = _err(_write(tmp_path, rep))
    assert "written by a newer driftscope (schema 2); this one reads up to 1" in msg


def test_missing_key(tmp_path):
    rep, _ = _valid(tmp_path)
    del rep["experiments"]
    assert "missing required key 'experiments'" in _err(_write(tmp_path, rep))


def test_duplicate_experiment_keys(tmp_path):
    rep, _ = _valid(tmp_path)
    rep["experiments"][1]["key"] = "e/1"
    msg = _err(_write(tmp_path, rep))
    assert "duplicate experiment key 'e/1'" in msg and "#0 and #1" in msg


@pytest.mark.parametrize("mutate, expected", [
    (lambda e: e.pop("inputs"), "experiment 'e/1': missing field 'inputs'"),
    (lambda e: e.update(status="fine"), "experiment 'e/1': field 'status' is 'fine'"),
    (lambda e: e["output"].update(dtype="float128"), "field 'output.dtype' is 'float128'"),
    (lambda e: e["output"]["bits"].pop(), "field 'output.bits' has 49 values but shape [50]"),
    (lambda e: e["output"]["bits"].__setitem__(3, "zz000000"), "field 'output.bits[3]'"),
    (lambda e: e["output"].update(shape=[-1]), "field 'output.shape'"),
    (lambda e: e.update(params=[1]), "field 'params' must be an object"),
    (lambda e: e.update(key=""), "experiment #0: field 'key'"),
])
def test_malformed_experiment(tmp_path, mutate, expected):
    rep, _ = _valid(tmp_path)
    mutate(rep["experiments"][0])
    assert expected in _err(_write(tmp_path, rep))


def test_duplicate_json_members(tmp_path):
    _, path = _valid(tmp_path)
    text = path.read_text().replace('"probe": "test"', '"probe": "test", "probe": "x"')
    assert "duplicate JSON member 'probe'" in _err(_write(tmp_path, text))


def test_write_report_refuses_invalid(tmp_path):
    rep, _ = _valid(tmp_path)
    rep["experiments"].append(dict(rep["experiments"][0]))
    with pytest.raises(ReportError, match="duplicate experiment key"):
        write_report(rep, tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


# ---------------------------------------------------------------------------------------------
# compares: what probes.compare compares, declared by every experiment


def test_compares_is_required_and_stored():
    rep = _report()
    with pytest.raises(TypeError, match="compares"):
        add_experiment(rep, key="a", inputs={}, params={}, output=np.float32(1))
    e = add_experiment(rep, key="a", inputs={}, params={}, metrics={"ms": 1.0}, compares={"reason": "timings"})
    assert e["compares"] == {"output": False, "metrics": [], "reason": "timings"}
    e = add_experiment(rep, key="b", inputs={}, params={}, output=np.float32(1),
                       metrics={"default": {"desc": "a66", "ms": 1.0}}, compares={"output": True,
                                                                               "metrics": ("default.desc",)})
    assert e["compares"] == {"output": True, "metrics": ["default.desc"], "reason": ""}
    assert comparison_of(e) == {"output": True, "metrics": ["default.desc"], "reason": "", "declared": True}


@pytest.mark.parametrize("compares, kw, expected", [
    ({}, {}, "declares nothing to compare (no output, no metrics) and gives no reason"),
    ({"reason": "  "}, {}, "declares nothing to compare"),
    ({"output": True}, {}, "compares declares its output, but it recorded none"),
    ({"metrics": ["rate"]}, {"metrics": {"rates": 1}}, "compares declares metric 'rate', but its metrics have no"),
    ({"metrics": ["default.desc"]}, {"metrics": {"default": {"ms": 1}}}, "declares metric 'default.desc'"),
    ({"metrics": "rate"}, {"metrics": {"rate": 1}}, "metrics must be a list of metric names"),
    ({"metrics": ["rate", "rate"]}, {"metrics": {"rate": 1}}, "names a metric twice"),
    ({"output": 1}, {"output": np.float32(1)}, "output must be true or false"),
    ({"outputs": True}, {"output": np.float32(1)}, "unknown key 'outputs'"),
    (["output"], {"output": np.float32(1)}, "must be an object with keys output, metrics, reason"),
])
def test_compares_declaration_checked(compares, kw, expected):
    """An "ok" experiment must have what it declares; the declaration itself must say something."""
    with pytest.raises(ValueError, match="experiment 'e': ") as info:
        add_experiment(_report(), key="e", inputs={}, params={}, compares=compares, **kw)
    assert expected in str(info.value)


def test_compares_of_a_skipped_experiment_need_not_be_recorded():
    e = add_experiment(_report(), key="e", inputs={}, params={}, status="error", message="boom",
                       compares={"output": True, "metrics": ["rate"]})
    assert e["output"] is None and e["compares"]["metrics"] == ["rate"]


def test_metric_value_paths():
    m = {"a.b": 1, "default": {"desc": "x", "inner": {"k": 2}}, "none": None}
    assert metric_value(m, "a.b") == 1  # a key with a dot is itself first
    assert metric_value(m, "default.desc") == "x" and metric_value(m, "default.inner.k") == 2
    assert metric_value(m, "none.desc") is None  # the whole object was not recorded
    assert metric_value(m, "default.nope") is MISSING and metric_value(m, "nope") is MISSING
    assert metric_value(None, "x") is MISSING and metric_value(m, "default.desc.x") is MISSING


@pytest.mark.parametrize("mutate, expected", [
    (lambda e: e.update(compares={"output": "yes"}), "field 'compares' output must be true or false"),
    (lambda e: e.update(compares={"metrics": ["seconds"]}), "compares declares metric 'seconds', but"),
    (lambda e: e.update(compares={}), "field 'compares' declares nothing to compare"),
])
def test_load_checks_compares(tmp_path, mutate, expected):
    rep, _ = _valid(tmp_path)
    mutate(rep["experiments"][0])
    assert expected in _err(_write(tmp_path, rep))


def test_old_reports_without_compares_and_code_load(tmp_path):
    """A report written before experiments declared `compares` and reports carried `code` still loads; what
    compare compares for it is its recorded output and the metrics it names in result_metrics."""
    rep, _ = _valid(tmp_path)
    del rep["code"]
    add_experiment(rep, key="sweep", inputs={}, params={}, metrics={"change_points": [[1, 0]],
                                                                    "result_metrics": ["change_points"]},
                   compares={"metrics": ["change_points"]})
    add_experiment(rep, key="algos", inputs={}, params={}, metrics={"distinct": 3}, compares={"reason": "x"})
    for e in rep["experiments"]:
        del e["compares"]
    loaded = load_report(_write(tmp_path, rep, "old.json"))
    by = {e["key"]: comparison_of(e) for e in loaded["experiments"]}
    assert by["e/1"] == {"output": True, "metrics": [], "reason": "", "declared": False}
    assert by["sweep"]["metrics"] == ["change_points"] and not by["sweep"]["output"]
    assert by["algos"] == {"output": False, "metrics": [], "reason": "", "declared": False}
    rep["code"] = "abc"
    assert "key 'code' must be an object, not a string" in _err(_write(tmp_path, rep))


# ---------------------------------------------------------------------------------------------
# code: the commit that made a report

ROOT = Path(__file__).resolve().parent.parent
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(root, *args):
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout.strip()


@needs_git
def test_git_identity_commit_and_dirty(tmp_path):
    """HEAD of a checkout; dirty when a tracked file changed, not for an untracked one."""
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("1")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = _git(tmp_path, "rev-parse", "HEAD")
    (tmp_path / "untracked.txt").write_text("x")
    assert git_identity(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "a.txt").write_text("2")
    assert git_identity(tmp_path) == {"commit": head, "dirty": True}
    sub = tmp_path / "sub"  # inside the checkout, but not its root: not taken for it
    sub.mkdir()
    assert git_identity(sub)["commit"] is None and "no .git" in git_identity(sub)["reason"]



@pytest.fixture
def no_carried_record(monkeypatch):
    """These tests check where the identity comes from without a carried record; scripts/gpu_session.sh sets
    one for the whole process on the GPU machine (probes.provenance.RECORD_ENV)."""
    from probes import provenance
    monkeypatch.delenv(provenance.RECORD_ENV, raising=False)
    provenance._identity.cache_clear()
    yield
    provenance._identity.cache_clear()


def test_code_identity_without_git_or_record(tmp_path, monkeypatch, no_carried_record):
    """An installation with no .git and no build record: commit null with the reason, the version, no crash."""
    monkeypatch.setitem(sys.modules, "probes.build_info", None)  # importing it fails: no record
    code = code_identity(tmp_path)
    assert code["commit"] is None and code["dirty"] is None and code["source"] is None
    assert "not a git checkout" in code["reason"] and "no build record" in code["reason"]
    assert code["version"] and code_summary(code).startswith("commit unknown (")


def test_code_identity_from_the_build_record(tmp_path, monkeypatch, no_carried_record):
    """Installed from a wheel: no .git, the commit setup.py recorded in probes.build_info."""
    record = types.ModuleType("probes.build_info")
    record.COMMIT, record.DIRTY, record.REASON = "0123456789abcdef0123", False, ""
    monkeypatch.setitem(sys.modules, "probes.build_info", record)
    code = code_identity(tmp_path / "wheel")
    assert (code["commit"], code["dirty"], code["source"]) == ("0123456789abcdef0123", False,
                                                               "recorded at build time")
    assert code_summary(code) == "commit 0123456789ab"
    assert code_summary(dict(code, dirty=True)) == "commit 0123456789ab + uncommitted changes"
    assert code_summary(None) == "commit not recorded (report written before reports carried it)"


def test_new_report_names_this_checkouts_commit(no_carried_record):
    """Every report carries `code`: here, this checkout's HEAD and whether tracked files changed (as git says),
    or, where this tree is not a git checkout (a CI copy without .git), null with the reason."""
    code = _report()["code"]
    if (ROOT / ".git").exists() and shutil.which("git"):
        assert code["commit"] == _git(ROOT, "rev-parse", "HEAD") and code["source"] == "git"
        assert code["dirty"] == bool(_git(ROOT, "status", "--porcelain", "--untracked-files=no"))
    else:
        assert code["commit"] is None and code["reason"]


@needs_git
def test_setup_py_records_the_commit_in_the_build(tmp_path):
    """setup.py's build_py writes probes/build_info.py (COMMIT = HEAD) into the built package, not the tree."""
    if not (ROOT / ".git").exists():
        pytest.skip("this tree is not a git checkout: nothing to record")
    in_tree = ROOT / "probes" / "build_info.py"  # absent unless `python -m probes.provenance` wrote it
    before = in_tree.read_bytes() if in_tree.exists() else None
    subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path), "build_py",
                    "-d", str(tmp_path / "lib")], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120)
    ns = {}
    exec((tmp_path / "lib" / "probes" / "build_info.py").read_text(), ns)
    assert ns["COMMIT"] == _git(ROOT, "rev-parse", "HEAD") and isinstance(ns["DIRTY"], bool)
    assert (in_tree.read_bytes() if in_tree.exists() else None) == before


@needs_git
def test_provenance_cli_writes_the_record(tmp_path, capsys):
    """`python -m probes.provenance --out F`: the record a copy of the tree without .git carries along."""
    if not (ROOT / ".git").exists():
        pytest.skip("this tree is not a git checkout: nothing to record")
    assert provenance_main(["--out", str(tmp_path / "build_info.py")]) == 0
    ns = {}
    exec((tmp_path / "build_info.py").read_text(), ns)
    assert ns["COMMIT"] == _git(ROOT, "rev-parse", "HEAD") and ns["REASON"] == ""
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'build_info.py'}: commit {ns['COMMIT'][:12]}")


def test_a_carried_record_names_the_code_ahead_of_a_stale_git(tmp_path, monkeypatch):
    """DRIFTSCOPE_CODE_RECORD (set by scripts/gpu_session.sh): the GPU machine's copy has the checkout's original
    .git, so git there names the wrong commit; the record carried with the copy wins."""
    from probes import provenance
    rec = tmp_path / "build_info.py"
    rec.write_text("COMMIT = '" + "ab" * 20 + "'\nDIRTY = False\nREASON = ''\n")
    monkeypatch.setenv(provenance.RECORD_ENV, str(rec))
    provenance._identity.cache_clear()
    try:
        ident = provenance.identity()
        assert ident == {"commit": "ab" * 20, "dirty": False, "source": "carried record build_info.py"}
        rec.write_text("COMMIT = None\nDIRTY = None\n")
        provenance._identity.cache_clear()
        with pytest.raises(ValueError, match="DRIFTSCOPE_CODE_RECORD=.*not a build record with a commit"):
            provenance.identity()
        monkeypatch.setenv(provenance.RECORD_ENV, str(tmp_path / "absent.py"))
        provenance._identity.cache_clear()
        with pytest.raises(ValueError, match="cannot read it"):
            provenance.identity()
    finally:
        monkeypatch.delenv(provenance.RECORD_ENV)
        provenance._identity.cache_clear()
