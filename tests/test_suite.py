"""probes.suite and the pages: every part run through its command line into one folder, the manifest, index.html
and `python -m probes.compare DIR_A DIR_B --html` (parsed with html.parser: every part present, statuses shown,
images existing or embedded, nothing fetched from elsewhere).

The suite runs on the CPU with --quick (the smallest settings of every part), once for the module; the other
folders compared are copies of it with one output bit flipped and one report taken away."""
import base64
import html
import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from probes import bundle
from probes.cli import guarded_main
from probes.report import decode_output, load_report
from probes.suite import PART_NAMES, PARTS, _merge_options, cache_env, main as suite_main, part_command

ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(*args, cwd=ROOT, timeout=600):
    env = dict(os.environ, DRIFTSCOPE_NO_PROGRESS="1")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


class Page(HTMLParser):
    """What the tests check of a page: sections (id, data-status, badge texts), images, links, tags."""

    def __init__(self, text: str):
        super().__init__()
        self.sections: dict[str, dict] = {}
        self.current: str | None = None
        self.in_badge = False
        self.badges_outside: list[str] = []
        self.imgs: list[str] = []
        self.urls: list[str] = []
        self.tags: set[str] = set()
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        for name in ("src", "href"):
            if a.get(name):
                self.urls.append(a[name])
        if tag == "section" and a.get("id"):
            self.current = a["id"]
            self.sections[a["id"]] = {"status": a.get("data-status"), "badges": [], "imgs": []}
        elif tag == "img":
            self.imgs.append(a.get("src", ""))
            if self.current:
                self.sections[self.current]["imgs"].append(a.get("src", ""))
        elif tag == "span" and "badge" in (a.get("class") or ""):
            self.in_badge = True

    def handle_endtag(self, tag):
        if tag == "section":
            self.current = None
        elif tag == "span":
            self.in_badge = False

    def handle_data(self, data):
        if self.in_badge:
            (self.sections[self.current]["badges"] if self.current else self.badges_outside).append(data.strip())


def _offline(page: Page):
    assert not page.tags & {"script", "link", "iframe", "object", "embed"}
    external = [u for u in page.urls if u.split(":", 1)[0].lower() in ("http", "https", "ftp") or u.startswith("//")]
    assert external == []


# --------------------------------------------------------------------------------------------
# the suite, once


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite") / "cpu"
    cache = tmp_path_factory.mktemp("cache")
    res = _run("-m", "probes.suite", "--device", "cpu", "--quick", "--out", str(out), "--cache", str(cache))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out, res.stdout


def test_suite_folder_holds_every_part(suite_dir):
    out, stdout = suite_dir
    m = json.loads((out / bundle.MANIFEST).read_text())
    assert m["schema"] == bundle.SCHEMA and m["status"] == "ok" and m["failed"] == []
    assert m["device"] == "cpu" and m["profile"] == "quick"
    assert [p["name"] for p in m["parts"]] == list(PART_NAMES)
    fp = json.loads((out / bundle.FINGERPRINT).read_text())
    assert fp["device"] == "cpu" and m["fingerprint"]["status"] == "ok"
    probes = {"reduction": "reduction", "fma": "fma", "accumulator": "accumulator", "gemm": "gemm",
              "dequant": "dequant", "llm": "llm"}
    for part, spec in zip(m["parts"], PARTS):
        assert part["status"] == "ok" and part["exit_status"] == 0
        assert part["command"][:3] == [sys.executable, "-m", spec.module]
        assert part["command"][3:5] == ["--device", "cpu"]
        assert part["command_text"].startswith(f"python -m {spec.module} --device cpu")
        assert part["command_text"] in stdout                      # progress: one line per part
        (run,) = part["runs"]
        assert run["status"] == "ok" and run["wall_s"] > 0 and run["cache"] == "as found"
        rep = load_report(out / part["report"])
        assert rep["probe"] == probes[part["name"]] and rep["experiments"]
        assert rep["fingerprint"]["device"] == "cpu"
        assert part["plots"] and all((out / p).read_bytes()[:8] == PNG_MAGIC for p in part["plots"])
        assert (out / part["stdout"]).stat().st_size > 0
        if part["name"] != "llm":                                  # the probes' skeleton times its cases
            slow = part["slowest_cases"]
            times = rep["config"]["case_seconds"]
            assert 1 <= len(slow) <= 5 and {s["key"] for s in slow} <= set(times)
            assert [s["s"] for s in slow] == sorted(times.values(), reverse=True)[:len(slow)]
    assert m["totals"]["as found"] == pytest.approx(sum(p["runs"][0]["wall_s"] for p in m["parts"]), abs=0.01)


def test_parts_ran_with_the_cache_folder(suite_dir):
    out, _ = suite_dir
    m = json.loads((out / bundle.MANIFEST).read_text())
    env = m["cache"]["env"]
    assert env == cache_env(Path(m["cache"]["root"]))
    assert set(env) >= {"TRITON_CACHE_DIR", "NUMBA_CACHE_DIR", "CUPY_CACHE_DIR"}
    assert all(v.startswith(m["cache"]["root"] + os.sep) for v in env.values())


def test_index_page_shows_every_part(suite_dir):
    out, _ = suite_dir
    m = json.loads((out / bundle.MANIFEST).read_text())
    text = (out / bundle.INDEX).read_text(encoding="utf-8")
    page = Page(text)
    _offline(page)
    timed = [p for p in m["parts"] if p.get("slowest_cases")]
    assert text.count('<details class="times">') == len(timed) >= 5     # where each probe's time went
    for part in timed:
        assert html.escape(part["slowest_cases"][0]["key"], quote=True) in text
    for part in m["parts"]:
        sec = page.sections[f"part-{part['name']}"]
        assert sec["status"] == "ok" and "ok" in sec["badges"]
        assert sec["imgs"], part["name"]
        for src in sec["imgs"]:
            assert not src.startswith("data:") and (out / src).is_file()
    assert "fingerprint" in page.sections
    for url in page.urls:                                     # every link points at a file of the folder
        if not url.startswith("#"):
            assert (out / url).is_file(), url


# --------------------------------------------------------------------------------------------
# compare of suite folders


def _flip_first_output_bit(report_path: Path) -> str:
    d = json.loads(report_path.read_text())
    for e in d["experiments"]:
        if e["status"] == "ok" and e["output"] and e["compares"]["output"]:
            bits = e["output"]["bits"]
            bits[0] = format(int(bits[0], 16) ^ 1, f"0{len(bits[0])}x")
            report_path.write_text(json.dumps(d))
            return e["key"]
    raise AssertionError(f"{report_path}: no experiment with an output")


@pytest.fixture(scope="module")
def three_dirs(suite_dir, tmp_path_factory):
    """A = the suite; B = A with one output bit of the gemm report flipped; C = A without its dequant report."""
    a, _ = suite_dir
    base = tmp_path_factory.mktemp("bundles")
    b, c = base / "b", base / "c"
    shutil.copytree(a, b)
    shutil.copytree(a, c)
    flipped = _flip_first_output_bit(b / "gemm" / "gemm.json")
    (c / "dequant" / "dequant.json").unlink()
    return a, b, c, flipped


def test_compare_folders_text_and_json(three_dirs, tmp_path):
    a, b, c, flipped = three_dirs
    res = _run("-m", "probes.compare", str(a), str(b), str(c), "--json", str(tmp_path / "cmp.json"),
               "--fail-on-diff")
    assert res.returncode == 1, res.stderr            # a differ and a missing report fail it
    assert "== gemm" in res.stdout and flipped in res.stdout
    d = json.loads((tmp_path / "cmp.json").read_text())
    assert d["mode"] == "bundles"
    sections = {s["name"]: s for s in d["sections"]}
    assert list(sections) == list(PART_NAMES)
    gemm = sections["gemm"]
    row = next(r for r in gemm["rows"] if r["key"] == flipped)
    assert [c["status"] for c in row["comparisons"]] == ["differ", "equal"]
    assert row["comparisons"][0]["n_diff"] == 1
    others = [r for r in gemm["rows"] if r["key"] != flipped]
    assert all(c["status"] in ("equal", "not_compared", "skipped") for r in others for c in r["comparisons"])
    deq = sections["dequant"]
    assert deq["columns"][1]["status"] == "missing" and "no dequant report" in deq["columns"][1]["reason"]
    assert all(r["comparisons"][1]["status"] == "missing" for r in deq["rows"])
    assert all(r["comparisons"][0]["status"] != "missing" for r in deq["rows"])
    assert sections["fma"]["summary"]["differ"] == 0 and sections["fma"]["summary"]["equal"] > 0


def test_compare_folders_html(three_dirs, tmp_path):
    a, b, c, flipped = three_dirs
    out = tmp_path / "sub" / "compare.html"
    res = _run("-m", "probes.compare", str(a), str(b), str(c), "--html", str(out))
    assert res.returncode == 0, res.stderr
    page = Page(out.read_text(encoding="utf-8"))
    _offline(page)
    for name in PART_NAMES:
        sec = page.sections[f"compare-{name}"]
        imgs = sec["imgs"]
        assert len(imgs) >= 3, name                                   # a plot of each folder
        for src in imgs:
            assert src.startswith("data:image/png;base64,")
            assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG_MAGIC
    assert page.sections["compare-gemm"]["status"] == "differ" and "differ" in page.sections["compare-gemm"]["badges"]
    assert page.sections["compare-dequant"]["status"] == "missing"
    assert page.sections["compare-fma"]["status"] == "equal"
    text = out.read_text(encoding="utf-8")
    assert flipped in text and "no dequant report in" in text
    moved = tmp_path / "elsewhere.html"                       # one file: it still shows everything when moved
    shutil.move(out, moved)
    assert Page(moved.read_text(encoding="utf-8")).imgs == page.imgs


def test_compare_report_files_html(three_dirs, tmp_path):
    """Two report files: the same table as before, and --html with the plots found beside them."""
    a, b, _, flipped = three_dirs
    ra, rb = str(a / "gemm" / "gemm.json"), str(b / "gemm" / "gemm.json")
    res = _run("-m", "probes.compare", ra, rb, "--html", str(tmp_path / "c.html"))
    assert res.returncode == 0 and "1 differ" in res.stdout
    page = Page((tmp_path / "c.html").read_text(encoding="utf-8"))
    _offline(page)
    (sec,) = page.sections.values()
    assert sec["status"] == "differ" and len(sec["imgs"]) == 2


def test_compare_inputs_that_differ_are_errors_per_experiment(suite_dir, tmp_path):
    """An experiment whose inputs differ between folders is an error row; the others still compare."""
    a, _ = suite_dir
    b = tmp_path / "b"
    shutil.copytree(a, b)
    path = b / "fma" / "fma.json"
    d = json.loads(path.read_text())
    d["experiments"][0]["inputs"]["seed"] = 12345
    path.write_text(json.dumps(d))
    from probes.compare import compare_bundles
    res = compare_bundles([str(a), str(b)])
    fma = next(s for s in res["sections"] if s["name"] == "fma")
    first = fma["rows"][0]["comparisons"][0]
    assert first["status"] == "error" and "inputs.seed" in first["reason"]
    assert {r["comparisons"][0]["status"] for r in fma["rows"][1:]} <= {"equal", "not_compared", "skipped"}


def test_compare_needs_folders_or_files_not_both(suite_dir, capsys):
    a, _ = suite_dir
    from probes.compare import main as compare_main
    assert guarded_main(compare_main, [str(a), str(a / "fma" / "fma.json")]) == 2
    assert "either report files or suite folders" in capsys.readouterr().err
    assert guarded_main(compare_main, [str(a), str(a / "fma")]) == 2
    assert "not a suite folder" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# a failing part, cold and warm


def test_failing_part_is_recorded_and_the_suite_goes_on(tmp_path):
    out = tmp_path / "s"
    res = _run("-m", "probes.suite", "--device", "cpu", "--quick", "--parts", "gemm,fma", "--out", str(out),
               "--cold", "--rerun-warm", "--args", "gemm=--sweep-modes nonsense")
    assert res.returncode == 1, res.stdout + res.stderr
    m = json.loads((out / bundle.MANIFEST).read_text())
    fma, gemm = m["parts"]                                    # in the suite's order
    assert m["status"] == "failed" and m["failed"] == ["gemm"]
    assert gemm["status"] == "failed" and gemm["exit_status"] == 2 and gemm["report"] is None
    assert len(gemm["runs"]) == 1                              # a failed cold run is not rerun
    assert gemm["command"][-2:] == ["--sweep-modes", "nonsense"]
    assert "unknown sweep mode 'nonsense'" in (out / gemm["stderr"]).read_text()
    assert fma["status"] == "ok" and [r["cache"] for r in fma["runs"]] == ["cold", "warm"]
    assert all(r["wall_s"] > 0 and r["exit_status"] == 0 for r in fma["runs"])
    assert m["cache"]["fresh"] and not Path(m["cache"]["root"]).exists()   # the cold cache is removed
    assert set(m["totals"]) == {"cold", "warm"}
    page = Page((out / bundle.INDEX).read_text(encoding="utf-8"))
    _offline(page)
    assert page.sections["part-gemm"]["status"] == "failed" and "failed" in page.sections["part-gemm"]["badges"]
    assert {"cold", "warm", "ok"} <= set(page.sections["part-fma"]["badges"])
    text = (out / bundle.INDEX).read_text(encoding="utf-8")
    assert "unknown sweep mode" in text and "cold" in text and "warm" in text
    # the page can be rebuilt from the folder alone
    (out / bundle.INDEX).unlink()
    assert _run("-m", "probes.suite", "--render", str(out)).returncode == 0
    assert Page((out / bundle.INDEX).read_text(encoding="utf-8")).sections.keys() == page.sections.keys()


# --------------------------------------------------------------------------------------------
# options


@pytest.mark.parametrize("argv, message", [
    (["--parts", "fma,nope"], "unknown part 'nope'"),
    (["--parts", ""], "no part given"),
    (["--parts", "fma", "--args", "gemm=--runs 3"], "part 'gemm' is not among --parts"),
    (["--args", "fma"], "expected PART=ARGS"),
    (["--timeout", "-1"], "--timeout"),
    (["--cold", "--cache", "/tmp/x"], "--cold"),
    (["--device", "tpu"], "unknown device"),
    (["--render", "/nonexistent/folder"], "not a folder"),
])
def test_usage_errors(argv, message, capsys, tmp_path):
    assert guarded_main(suite_main, argv + ["--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_out_folder_is_not_overwritten_by_accident(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert guarded_main(suite_main, ["--parts", "fma", "--out", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert guarded_main(suite_main, ["--parts", "fma", "--out", str(tmp_path), "--overwrite"]) == 2
    assert "only a previous suite folder" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_part_commands():
    """Each part's command: its module, the common options, then its settings, each option once."""
    out = Path("/x")
    for part in PARTS:
        for device in ("cpu", "cuda:0"):
            for quick in (False, True):
                argv = part_command(part, device, out, quick=quick)
                assert argv[:3] == [sys.executable, "-m", part.module]
                opts = [w for w in argv if w.startswith("--")]
                assert len(opts) == len(set(opts)), argv
                assert argv[argv.index("--json") + 1] == f"/x/{part.name}/{part.name}.json"
    llm = {p.name: p for p in PARTS}["llm"]
    cpu = part_command(llm, "cpu", out)
    assert cpu[cpu.index("--model") + 1] == "mistral-tiny" and cpu[cpu.index("--gen-steps") + 1] == "2"
    assert "--model" not in part_command(llm, "cuda:0", out)          # the default model on a GPU
    assert part_command(llm, "cpu", out, extra=["--model", "smollm2"])[-2:] == ["--model", "smollm2"]


def test_merge_options():
    assert _merge_options([("--a", "1", "--b"), ("--c", "x", "y"), ("--a", "2")]) == ["--a", "2", "--b",
                                                                                     "--c", "x", "y"]


def test_time_limit_stops_a_part(tmp_path):
    out = tmp_path / "s"
    res = _run("-m", "probes.suite", "--device", "cpu", "--parts", "fma", "--out", str(out), "--timeout", "2")
    assert res.returncode == 1, res.stdout + res.stderr
    (fma,) = json.loads((out / bundle.MANIFEST).read_text())["parts"]
    assert fma["status"] == "timeout"
    if fma["report"] is not None:         # the probe's SIGTERM handler (probes.runner) kept what it had: partial
        assert json.loads((out / fma["report"]).read_text()).get("partial")
    assert 2 <= fma["runs"][0]["wall_s"] < 30


def test_ctrl_c_stops_the_suite_and_keeps_the_record(tmp_path):
    """SIGINT (Ctrl-C) goes on to the running part; the manifest and the page say what ran; exit 130."""
    import signal
    import time
    out = tmp_path / "s"
    env = dict(os.environ, DRIFTSCOPE_NO_PROGRESS="1")
    proc = subprocess.Popen([sys.executable, "-m", "probes.suite", "--device", "cpu", "--parts", "reduction,fma",
                             "--out", str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (out / "reduction" / "stderr.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)                          # the reduction probe's default takes ~45 s here
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130
    m = json.loads((out / bundle.MANIFEST).read_text())
    assert m["status"] == "interrupted" and [p["name"] for p in m["parts"]] == ["reduction"]
    assert m["parts"][0]["status"] == "interrupted" and m["selected_parts"] == ["reduction", "fma"]
    page = Page((out / bundle.INDEX).read_text(encoding="utf-8"))
    assert page.sections["part-reduction"]["status"] == "interrupted"
    assert "not run" in page.badges_outside                   # fma, in the parts table
