"""Every probe's default on the device at hand, in one command, into one folder with a page.

    python -m probes.suite [--device auto] [--parts all] [--out DIR] [--quick] [--cold] [--rerun-warm]
                           [--cache DIR] [--args PART=ARGS ...] [--timeout S] [--render DIR]

Runs the device fingerprint (`python -m probes.device`), then each part through its public command line,
as its own process: reduction, fma, accumulator, gemm, dequant (`python -m probes.NAME`) and a short LLM
drift check (`python -m llm.attribute`: fp32 vs bf16 of the default model, class units). A process per
part keeps the parts apart (each starts as a user's would, with cold imports; a crash is that part's) and
leaves the probes' internals free to change: the suite relies only on their options --device, --seed,
--json and --plot, plus the settings listed in PARTS. A part that fails (non-zero exit, no report, time
limit) is recorded and the suite goes on; it exits 1 when any part failed.

Writes one folder (probes.bundle): manifest.json (each part's exact command, exit status, wall time and the
cache state it ran with), fingerprint.json, PART/PART.json, PART/*.png, PART/stdout.txt (the part's printed
tables), PART/stderr.txt and index.html (probes.page), which is rewritten after every part.

Caches: Triton's, Numba's, CuPy's and the CUDA driver's JIT caches (and torch inductor's) go to subfolders
of one driftscope cache folder: --cache, else $DRIFTSCOPE_CACHE, else $XDG_CACHE_HOME/driftscope or
~/.cache/driftscope. --cold uses a fresh empty one (deleted at the end): every kernel compiles, as on a
new machine. --rerun-warm runs every part a second time right after its first run, with the cache that
run filled; the manifest and the page give both wall times (the second run's files are kept).

Defaults are each probe's own (which already choose small sizes on a CPU); the LLM part is limited to
class units and a few generated tokens, and uses the tiny random Mistral on a CPU (SmolLM2's GGUF takes
minutes to load there). --quick picks the smallest settings (a smoke run, as CI does).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from probes import bundle
from probes.cli import guarded_main, parse_csv_choice, resolve_device, slug
from probes.errors import UsageError

__all__ = ["Part", "PARTS", "PART_NAMES", "part_command", "cache_root", "cache_env", "times_table", "main"]


@dataclass(frozen=True)
class Part:
    """One part of the suite: a module run as `python -m MODULE` and the settings the suite adds to the
    common options (--device, --seed, --json, --plot): always (`default`), on a CPU (`cpu`), with --quick
    (`quick`, then `quick_cpu` on a CPU)."""
    name: str
    module: str
    title: str
    default: tuple[str, ...] = ()
    cpu: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()
    quick_cpu: tuple[str, ...] = ()


PARTS: tuple[Part, ...] = (
    Part("reduction", "probes.reduction", "Reduction order: fixed-order trees vs atomics, every backend",
         quick=("--sizes", "1000", "--runs", "2", "--dtypes", "float32", "--no-specials")),
    Part("fma", "probes.fma", "FMA contraction: fused vs multiply-then-add, and what compilers do",
         quick=("--n", "16", "--formats", "float32")),
    Part("accumulator", "probes.accumulator", "Tensor-core accumulator: block size, extra bits, rounding",
         quick=("--formats", "float16", "--samples", "200"), quick_cpu=("--backends", "simulated,torch_cpu")),
    Part("gemm", "probes.gemm", "GEMM: cuBLASLt algorithms, batch-size invariance, batch-invariant matmul",
         quick=("--parts", "sweep", "--sweep-max-m", "9", "--sweep-modes", "torch:float32", "--no-others")),
    Part("dequant", "probes.dequant", "Dequantisation: int4 / GGUF Q4 / FP8 formulas, kernels vs models",
         quick=("--no-layer", "--no-speed")),
    Part("llm", "llm.attribute", "LLM drift: final logits fp32 vs bf16, attributed to op classes",
         default=("--units", "class", "--gen-steps", "4", "--causal-mode", "inject"),
         cpu=("--model", "mistral-tiny", "--gen-steps", "2"),
         quick=("--model", "mistral-tiny", "--gen-steps", "2")),
)
PART_NAMES = tuple(p.name for p in PARTS)

#: The environment variables that point each compiler's cache into the driftscope cache folder.
CACHE_VARS = {"TRITON_CACHE_DIR": "triton", "NUMBA_CACHE_DIR": "numba", "CUPY_CACHE_DIR": "cupy",
              "CUDA_CACHE_PATH": "cuda", "TORCHINDUCTOR_CACHE_DIR": "inductor"}
HEARTBEAT_S = 30.0
EXIT_INTERRUPTED = 130


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def part_command(part: Part, device: str, out: Path, *, seed: int = 0, quick: bool = False,
                 extra: Sequence[str] = ()) -> list[str]:
    """The part's command line (`sys.executable -m MODULE ...`), writing OUT/NAME/NAME.json and .png."""
    folder = out / part.name
    groups = [part.default, part.cpu if device == "cpu" else (), part.quick if quick else (),
              part.quick_cpu if quick and device == "cpu" else ()]
    return ([sys.executable, "-m", part.module, "--device", device, "--seed", str(seed),
             "--json", str(folder / f"{part.name}.json"), "--plot", str(folder / f"{part.name}.png")]
            + _merge_options(groups) + list(extra))


def _merge_options(groups: Sequence[Sequence[str]]) -> list[str]:
    """Concatenate groups of "--option [value ...]" words; an option given again in a later group replaces
    the earlier one in its place (so each option appears once in the command)."""
    merged: dict[str, list[str]] = {}
    for group in groups:
        for word in group:
            if word.startswith("--"):
                current = merged[word] = [word]
            else:
                current.append(word)
    return [w for words in merged.values() for w in words]


def _display(argv: Sequence[str], out: Path) -> str:
    """The command as one shell line: `python` for the interpreter, $OUT for the suite folder."""
    prefix = str(out) + os.sep
    words = []
    for i, a in enumerate(argv):
        if i == 0:
            words.append("python")
        elif a.startswith(prefix):
            words.append("$OUT/" + shlex.quote(a[len(prefix):]))
        else:
            words.append(shlex.quote(a))
    return " ".join(words)


# --------------------------------------------------------------------------------------------
# caches


def cache_root(explicit: str | None = None) -> Path:
    """--cache, else $DRIFTSCOPE_CACHE, else $XDG_CACHE_HOME/driftscope, else ~/.cache/driftscope."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("DRIFTSCOPE_CACHE"):
        return Path(os.environ["DRIFTSCOPE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "driftscope"


def cache_env(root: Path) -> dict[str, str]:
    """TRITON_CACHE_DIR, NUMBA_CACHE_DIR, CUPY_CACHE_DIR, CUDA_CACHE_PATH, TORCHINDUCTOR_CACHE_DIR: subfolders
    of `root`."""
    return {var: str(root / sub) for var, sub in CACHE_VARS.items()}


def _count_files(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root)) if root.is_dir() else 0


# --------------------------------------------------------------------------------------------
# running one command


def _last_line(path: Path) -> str:
    """The last non-empty line of a log (its tail only; progress bars redraw with carriage returns)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in tail.replace("\r", "\n").split("\n") if ln.strip()]
    return lines[-1] if lines else ""


def _stop(proc: subprocess.Popen, sig: int, grace: float) -> None:
    """Send `sig` to the child's process group, then SIGKILL after `grace` seconds if it is still there."""
    for s, wait in ((sig, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, s)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_command(argv: Sequence[str], stdout: Path, stderr: Path, env: dict, timeout: float | None,
                label: str) -> dict:
    """Run `argv` in its own process group, its output into the two files; print a line with its latest
    output every HEARTBEAT_S seconds. Returns {"exit_status", "wall_s", "timed_out", "interrupted"}.
    Ctrl-C is passed to the child as SIGINT (probes with checkpoints save them) and then re-raised."""
    stdout.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    result = {"exit_status": None, "wall_s": None, "timed_out": False, "interrupted": False}
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
        next_beat = start + HEARTBEAT_S
        try:
            while True:
                try:
                    proc.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    now = time.monotonic()
                    if timeout is not None and now - start > timeout:
                        _stop(proc, signal.SIGTERM, 10.0)
                        result["timed_out"] = True
                        break
                    if now >= next_beat:
                        note = _last_line(stderr) or _last_line(stdout)
                        print(f"      {label}: {now - start:.0f} s  {note[:100]}", flush=True)
                        next_beat = now + HEARTBEAT_S
        except KeyboardInterrupt:
            _stop(proc, signal.SIGINT, 30.0)
            result.update(interrupted=True, exit_status=proc.returncode,
                          wall_s=round(time.monotonic() - start, 3))
            raise _Interrupted(result) from None
    result["exit_status"] = proc.returncode
    result["wall_s"] = round(time.monotonic() - start, 3)
    return result


class _Interrupted(Exception):
    """Ctrl-C during a run; carries that run's record."""

    def __init__(self, record: dict):
        super().__init__("interrupted")
        self.record = record


# --------------------------------------------------------------------------------------------
# the suite


def _run_status(rec: dict, report: Path | None) -> str:
    if rec["interrupted"]:
        return "interrupted"
    if rec["timed_out"]:
        return "timeout"
    if rec["exit_status"] != 0:
        return "failed"
    return "ok" if report is None or report.is_file() else "failed"


def _part_files(out: Path, name: str) -> dict:
    folder = out / name
    plots = sorted(p.relative_to(out).as_posix() for p in folder.glob("*.png")) if folder.is_dir() else []
    report = folder / f"{name}.json"
    others = sorted(p.relative_to(out).as_posix() for p in folder.iterdir()
                    if p.is_file() and p.suffix not in (".png",) and p != report
                    and p.name not in ("stdout.txt", "stderr.txt")) if folder.is_dir() else []
    return {"report": report.relative_to(out).as_posix() if report.is_file() else None,
            "plots": plots, "files": others}


def _report_times(out: Path, rel: str | None) -> dict:
    """What the part's report records of its own time (without interpreter start and imports): report_wall_s,
    and where the probe skeleton times its cases, the SLOWEST_CASES slowest of them (what a smaller default
    would have to cut)."""
    if not rel:
        return {"report_wall_s": None}
    try:
        from probes.report import load_report
        config = load_report(out / rel).get("config") or {}
    except Exception:  # a report that does not load is shown as such on the page; here only the time
        return {"report_wall_s": None}
    wall = config.get("wall_seconds")
    times = {"report_wall_s": round(float(wall), 3) if isinstance(wall, (int, float)) else None}
    cases = config.get("case_seconds")
    if isinstance(cases, dict) and cases:
        times["slowest_cases"] = [{"key": k, "s": v} for k, v in bundle.slowest_cases(cases)]
        times["cases_s"] = round(sum(cases.values()), 3)
    return times


class Suite:
    """The state of one suite run: the folder, the manifest being filled, the cache."""

    def __init__(self, args: argparse.Namespace, device: str, parts: list[Part], extra: dict[str, list[str]]):
        self.args = args
        self.device = device
        self.parts = parts
        self.extra = extra
        self.out = Path(args.out).resolve()
        self.fresh_cache = bool(args.cold)
        self.cache = (Path(tempfile.mkdtemp(prefix="driftscope-cold-cache-")) if args.cold
                      else cache_root(args.cache).resolve())
        self.env = self._child_env()
        from probes.report import code_identity
        self.manifest = {
            "schema": bundle.SCHEMA, "schema_version": bundle.SCHEMA_VERSION,
            "created_utc": _utc_now(), "finished_utc": None, "status": "running",
            "command": ["python", "-m", "probes.suite"] + list(args.argv), "python": sys.executable,
            "code": code_identity(), "device": device, "profile": "quick" if args.quick else "default",
            "rerun_warm": bool(args.rerun_warm), "timeout_s": args.timeout,
            "cache": {"root": str(self.cache), "fresh": self.fresh_cache,
                      "kept": not self.fresh_cache, "env": cache_env(self.cache),
                      "files_before": _count_files(self.cache), "files_after": None},
            "selected_parts": [p.name for p in parts], "fingerprint": None, "parts": [], "failed": [],
            "totals": {},
        }

    def _child_env(self) -> dict:
        env = dict(os.environ)
        env.update(cache_env(self.cache))
        env.update(PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
        root = Path(__file__).resolve().parent.parent
        if (root / "pyproject.toml").is_file():  # a source checkout: the children import this same code
            env["PYTHONPATH"] = os.pathsep.join([str(root)] + [p for p in env.get("PYTHONPATH", "").split(
                os.pathsep) if p])
        return env

    # ---------------------------------------------------------------------------------------
    def save(self) -> None:
        """Write the manifest and re-render the page (after every step, so an interrupted run has both)."""
        from probes import page
        from probes.report import write_json
        write_json(self.manifest, self.out / bundle.MANIFEST)
        page.write_index(self.out)

    def fingerprint(self) -> None:
        argv = [sys.executable, "-m", "probes.device", "--device", self.device,
                "--json", str(self.out / bundle.FINGERPRINT)]
        print(f"fingerprint: {_display(argv, self.out)}", flush=True)
        rec = run_command(argv, self.out / "fingerprint.txt", self.out / "fingerprint.stderr.txt", self.env,
                          self.args.timeout, "fingerprint")
        status = _run_status(rec, self.out / bundle.FINGERPRINT)
        self.manifest["fingerprint"] = {
            "command": argv, "command_text": _display(argv, self.out), "status": status,
            "exit_status": rec["exit_status"], "wall_s": rec["wall_s"],
            "path": bundle.FINGERPRINT if status == "ok" else None, "stdout": "fingerprint.txt",
            "stderr": "fingerprint.stderr.txt", "summary": None}
        if status == "ok":
            from probes.device import fingerprint_summary
            fp = bundle.load_fingerprint(self.out)
            self.manifest["fingerprint"]["summary"] = fingerprint_summary(fp)
            print(f"      {self.manifest['fingerprint']['summary']}", flush=True)
        else:
            self.manifest["failed"].append("fingerprint")
            print(f"      {status.upper()} (exit {rec['exit_status']}): "
                  f"{_last_line(self.out / 'fingerprint.stderr.txt')}", flush=True)

    def run_part(self, index: int, part: Part) -> None:
        argv = part_command(part, self.device, self.out, seed=self.args.seed, quick=self.args.quick,
                            extra=self.extra.get(part.name, ()))
        folder = self.out / part.name
        if folder.exists():
            shutil.rmtree(folder)           # never show a previous run's files as this run's
        entry = {"name": part.name, "module": part.module, "title": part.title, "command": argv,
                 "command_text": _display(argv, self.out), "status": "running", "exit_status": None,
                 "runs": [], "report": None, "plots": [], "files": [],
                 "stdout": f"{part.name}/stdout.txt", "stderr": f"{part.name}/stderr.txt"}
        self.manifest["parts"].append(entry)
        print(f"[{index}/{len(self.parts)}] {part.name}: {entry['command_text']}", flush=True)
        kinds = ["cold" if self.fresh_cache else "as found"] + (["warm"] if self.args.rerun_warm else [])
        try:
            for kind in kinds:
                self._run_once(part, argv, entry, kind)
                if entry["runs"][-1]["status"] != "ok":
                    break
        finally:
            entry.update(_part_files(self.out, part.name))
            last = entry["runs"][-1] if entry["runs"] else None
            bad = [r for r in entry["runs"] if r["status"] != "ok"]
            entry["status"] = bad[0]["status"] if bad else ("ok" if last else "not run")
            entry["exit_status"] = (bad[0] if bad else last or {}).get("exit_status")
            entry.update(_report_times(self.out, entry["report"]))
            if entry["status"] != "ok":
                self.manifest["failed"].append(part.name)
            self.save()

    def _run_once(self, part: Part, argv: list[str], entry: dict, kind: str) -> None:
        folder = self.out / part.name
        before = _count_files(self.cache)
        try:
            rec = run_command(argv, folder / "stdout.txt", folder / "stderr.txt", self.env, self.args.timeout,
                              part.name)
        except _Interrupted as stop:
            rec = stop.record
            self._record_run(entry, kind, rec, before, folder)
            raise
        self._record_run(entry, kind, rec, before, folder)

    def _record_run(self, entry: dict, kind: str, rec: dict, before: int, folder: Path) -> None:
        status = _run_status(rec, folder / f"{entry['name']}.json")
        run = {"cache": kind, "status": status, "exit_status": rec["exit_status"], "wall_s": rec["wall_s"],
               "cache_files_before": before, "cache_files_added": _count_files(self.cache) - before,
               "finished_utc": _utc_now()}
        entry["runs"].append(run)
        msg = f"      {status.upper() if status != 'ok' else 'ok'}  {kind}: {rec['wall_s']:.1f} s"
        if run["cache_files_added"]:
            msg += f", {run['cache_files_added']} new cache files"
        if status != "ok":
            why = _last_line(folder / "stderr.txt") or _last_line(folder / "stdout.txt")
            msg += f"  (exit {rec['exit_status']}" + (f": {why[:200]}" if why else "") + ")"
            if status == "failed" and rec["exit_status"] == 0:
                msg += f"  exit 0 but no report {entry['name']}/{entry['name']}.json"
        print(msg, flush=True)

    def finish(self, status: str) -> None:
        self.manifest["status"] = status
        self.manifest["finished_utc"] = _utc_now()
        self.manifest["cache"]["files_after"] = _count_files(self.cache)
        self.manifest["totals"] = _totals(self.manifest["parts"])
        self.save()
        if self.fresh_cache:
            shutil.rmtree(self.cache, ignore_errors=True)


def _totals(parts: list[dict]) -> dict:
    """Sum of the parts' wall times per cache kind (cold / warm / as found)."""
    totals: dict[str, float] = {}
    for p in parts:
        for r in p["runs"]:
            if r["wall_s"] is not None:
                totals[r["cache"]] = round(totals.get(r["cache"], 0.0) + r["wall_s"], 3)
    return totals


def times_table(parts: Sequence[dict]) -> str:
    """part, status, and the wall time of each run kind (cold / warm / as found), in seconds, as text."""
    kinds = list(dict.fromkeys(r["cache"] for p in parts for r in p["runs"]))
    rows = [["part", "status"] + [f"{k} (s)" for k in kinds]]
    for p in parts:
        by_kind = {r["cache"]: r["wall_s"] for r in p["runs"]}
        rows.append([p["name"], p["status"]] + [
            "-" if by_kind.get(k) is None else f"{by_kind[k]:.1f}" for k in kinds])
    totals = _totals(list(parts))
    rows.append(["total", ""] + [f"{totals[k]:.1f}" if k in totals else "-" for k in kinds])
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths)))
                     .rstrip() for r in rows)


# --------------------------------------------------------------------------------------------
# command line


def _parse_extra(items: Sequence[str], selected: Sequence[str]) -> dict[str, list[str]]:
    """--args PART=ARGS (repeatable) -> {part: [args]}; a part not selected is an error (it would do nothing)."""
    extra: dict[str, list[str]] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UsageError(f"--args {item!r}: expected PART=ARGS, e.g. reduction='--sizes 4097'")
        if name not in PART_NAMES:
            raise UsageError(f"--args {item!r}: unknown part {name!r}; parts: {', '.join(PART_NAMES)}")
        if name not in selected:
            raise UsageError(f"--args {item!r}: part {name!r} is not among --parts ({', '.join(selected)})")
        try:
            extra.setdefault(name, []).extend(shlex.split(text))
        except ValueError as exc:
            raise UsageError(f"--args {item!r}: {exc}") from None
    return extra


def _prepare_out(out: Path, overwrite: bool) -> None:
    """Create OUT; an existing non-empty folder only with --overwrite, and only when it is a suite folder."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UsageError(f"--out {out}: the folder exists and is not empty; choose another folder or "
                             "pass --overwrite (which empties a previous suite folder)")
        if not bundle.is_bundle(out):
            raise UsageError(f"--out {out}: --overwrite empties only a previous suite folder (one with a "
                             f"{bundle.MANIFEST}); this one has none")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _default_out(device: str) -> str:
    """reports/suite-<cpu | cudaN>-<UTC time> (the GPU's name is on the page; asking torch for it here would set
    up CUDA in this process, which only waits for its children)."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return os.path.join("reports", f"suite-{slug(device).replace('-', '')}-{stamp}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m probes.suite",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Run every probe's default on this machine's device, each through its command line, into one "
            "folder: the reports, plots, fingerprint, a manifest (each part's command, exit status, wall time "
            "cold / warm) and index.html. Compare two machines' folders with `python -m probes.compare DIR_A "
            "DIR_B --html compare.html`.", 100) + "\n\nparts:\n" + "\n".join(
                        f"  {p.name:<12} python -m {p.module}: {p.title}" for p in PARTS))
    parser.add_argument("--device", default="auto", metavar="{auto,cpu,cuda,cuda:N}",
                        help="where every part runs (default auto: the first GPU if one is usable, else the CPU)")
    parser.add_argument("--parts", default="all", metavar="PARTS",
                        help=f"comma-separated parts to run (default all: {','.join(PART_NAMES)})")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="the folder to write (default reports/suite-<cpu|cudaN>-<UTC time>); an existing "
                             "non-empty one needs --overwrite")
    parser.add_argument("--overwrite", action="store_true",
                        help="empty --out first when it holds a previous suite run")
    parser.add_argument("--seed", type=int, default=0, metavar="INT", help="the seed every part gets (default 0)")
    parser.add_argument("--quick", action="store_true",
                        help="the smallest settings of every part (a smoke run: what CI runs on a CPU)")
    parser.add_argument("--cache", default=None, metavar="DIR",
                        help="the driftscope cache folder (Triton, Numba, CuPy, CUDA JIT caches in subfolders; "
                             "default $DRIFTSCOPE_CACHE, else ~/.cache/driftscope)")
    parser.add_argument("--cold", action="store_true",
                        help="use a fresh empty cache folder (deleted at the end): everything compiles")
    parser.add_argument("--rerun-warm", action="store_true",
                        help="run every part a second time right after its first, with the cache that run "
                             "filled, and report both wall times (the second run's files are kept)")
    parser.add_argument("--args", action="append", default=[], metavar="PART=ARGS",
                        help="more options for one part, appended to its command (later options win), e.g. "
                             "--args reduction='--sizes 4097 --runs 10'; repeatable")
    parser.add_argument("--timeout", type=float, default=1800.0, metavar="S",
                        help="time limit of one run of a part, seconds (default 1800); 0: none")
    parser.add_argument("--render", default=None, metavar="DIR",
                        help="only rewrite DIR/index.html from its manifest and files (runs nothing)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    args.argv = argv
    if args.render:
        from probes import page
        bundle.load_bundle(args.render)   # a clear error for a folder that is not a suite folder
        print(f"page: {page.write_index(Path(args.render))}")
        return 0
    names = parse_csv_choice(args.parts, PART_NAMES, "part")
    parts = [p for p in PARTS if p.name in names]
    extra = _parse_extra(args.args, names)
    if args.timeout < 0:
        raise UsageError(f"--timeout {args.timeout:g}: must be >= 0 (0: no limit)")
    args.timeout = args.timeout or None
    if args.cold and args.cache:
        raise UsageError("--cold uses a fresh cache folder of its own; it cannot be combined with --cache")
    device = resolve_device(args.device)
    args.out = args.out or _default_out(device)
    _prepare_out(Path(args.out), args.overwrite)
    suite = Suite(args, device, parts, extra)
    print(f"driftscope suite: {len(parts)} part{'s' if len(parts) != 1 else ''} on {device} -> {suite.out}\n"
          f"cache: {suite.cache}{' (fresh, empty)' if args.cold else ''}", flush=True)
    start = time.monotonic()
    status = "running"
    try:
        suite.fingerprint()
        for i, part in enumerate(parts, 1):
            suite.run_part(i, part)
    except _Interrupted:
        status = "interrupted"
        print("\ninterrupted: the manifest and the page record what ran", flush=True)
    finally:
        if status == "running":
            status = "failed" if suite.manifest["failed"] else "ok"
        suite.finish(status)
    failed = suite.manifest["failed"]
    n_ok = sum(p["status"] == "ok" for p in suite.manifest["parts"])
    print("\n" + times_table(suite.manifest["parts"]))
    totals = ", ".join(f"{k} {v:.1f} s" for k, v in suite.manifest["totals"].items())
    print(f"\n{n_ok}/{len(parts)} parts ok"
          + (f"; failed: {', '.join(failed)}" if failed else "")
          + f"; parts' wall time: {totals or '-'}; suite {time.monotonic() - start:.1f} s")
    print(f"page: {suite.out / bundle.INDEX}")
    if status == "interrupted":
        return EXIT_INTERRUPTED
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(guarded_main(main))
