"""How every probe runs: the loop over its cases, and the command line around it.

    def main(argv=None):                    # probes/<probe>/__main__.py
        return runner.main(ReductionProbe, argv)

`run` goes through the probe's plan (probes.probe): a progress line on stderr; a case that cannot run here is
recorded as skipped with its reason (each reason said once on stderr); a case that raises is recorded as an
error (what it added before is withdrawn) and the run goes on; then the probe's `finish`. While it runs the
report carries ``"partial"`` (why it is not complete, and the cases done), and `main` writes it at least every
CHECKPOINT_SECONDS, so a run that is killed leaves what it measured.

`main` is every probe's command line: the arguments (probes.probe.Probe.parser), the device, the report
(probes.report: schema, fingerprint, config, code identity), the table, the report file, the plot, the
probe's extra files, and the exit status: 0, or 1 when an experiment failed (status "error"); 2 for a usage
error (probes.cli.guarded_main). Ctrl-C or SIGTERM (e.g. from `timeout`) ends the current case, writes the
report marked partial and exits 130; ``--resume PATH`` later runs only the cases it lacks (same options,
machine and code), so a long GPU run can be done in pieces.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import time
from typing import Callable, Sequence

from probes import cli
from probes import report as reports
from probes.errors import UsageError
from probes.probe import Case, Probe
from probes.progress import Progress

__all__ = ["run", "main", "measure", "new_report", "resume_from", "Terminated", "CHECKPOINT_SECONDS"]

#: A running probe writes its partial report at most this often (seconds), after a case ends.
CHECKPOINT_SECONDS = 30.0
#: A run's exit status when it was interrupted (Ctrl-C, SIGTERM), as for a shell's SIGINT.
INTERRUPTED = 130


class Terminated(KeyboardInterrupt):
    """SIGTERM: handled as Ctrl-C is (the current case is withdrawn, the partial report written)."""


# --------------------------------------------------------------------------------------------
# the loop


def planned(probe: Probe) -> list[tuple[str, Case]]:
    """(key, case) of every case of the plan, in order; a case planned twice runs once. UsageError when the
    options select no case at all."""
    cases: dict[str, Case] = {}
    for case in probe.plan():
        cases.setdefault(probe.record(case)["key"], case)
    if not cases:
        raise UsageError(f"{probe.name}: the options select no case to run (every combination of "
                         + ", ".join(f"--{a.dest.replace('_', '-')}" for a in probe.axes if a.flag)
                         + " is excluded)")
    return list(cases.items())


def run(probe: Probe, report: dict, *, checkpoint: Callable[[dict], None] | None = None) -> None:
    """Run the probe's cases into `report` (those that report["partial"]["cases_done"] lists are done
    already), then its `finish`; on return the report is complete (no "partial"). KeyboardInterrupt
    (Terminated) leaves it partial, without the case it interrupted, and passes through."""
    cases = planned(probe)
    partial = report.setdefault("partial", {"options": probe.options()})
    partial.update(reason="running", cases_planned=len(cases))
    done = partial.setdefault("cases_done", [])
    finished = set(done)
    said: set[str] = set()
    seconds = report["config"].setdefault("case_seconds", {})
    last = time.monotonic()
    with Progress(len(cases), probe.name) as progress:
        for key, case in cases:
            progress.update(note=key)
            if key in finished:
                continue
            started = time.perf_counter()
            with _atomic(report):
                _run_one(probe, case, key, report, said)
            seconds[key] = round(time.perf_counter() - started, 4)
            done.append(key)
            if checkpoint and time.monotonic() - last >= CHECKPOINT_SECONDS:
                checkpoint(report)
                last = time.monotonic()
    partial["reason"] = "finishing (the cases ran; what they give together is not added yet)"
    started = time.perf_counter()
    with _atomic(report):
        probe.finish(report)
    report["config"]["finish_seconds"] = round(time.perf_counter() - started, 4)
    del report["partial"]


def _run_one(probe: Probe, case: Case, key: str, report: dict, said: set[str]) -> None:
    why = probe.unavailable(case)
    if why:
        reports.add_experiment(report, **probe.record(case), status="skipped", message=why)
        if why not in said:
            said.add(why)
            probe.log(f"skipped {key}: {why}" + ("" if len(said) > 1 else " (each reason is said once)"))
        return
    mark = len(report["experiments"])
    try:
        probe.run_case(case, report)
    except Exception as exc:  # one failing case is a line in the report, not the end of the run
        del report["experiments"][mark:]
        message = f"{type(exc).__name__}: {exc}"
        reports.add_experiment(report, **probe.record(case), status="error", message=message)
        probe.log(f"error in {key}: {message}")


@contextlib.contextmanager
def _atomic(report: dict):
    """An interrupted step leaves no experiments behind: a case is in the report whole or not at all."""
    mark = len(report["experiments"])
    try:
        yield
    except KeyboardInterrupt:
        del report["experiments"][mark:]
        raise


# --------------------------------------------------------------------------------------------
# the report


def new_report(probe: Probe, command: Sequence[str], fingerprint: dict | None = None) -> dict:
    """An empty report of `probe`: the machine's fingerprint; config = device, seed, each axis's values, and
    the probe's own config."""
    if fingerprint is None:
        from probes.device import fingerprint as machine
        fingerprint = machine(probe.device)
    config = {"device": probe.device, "seed": probe.seed,
              **{axis.dest: probe.values(axis.name) for axis in probe.axes if axis.flag},
              **probe.config(fingerprint)}
    return reports.new_report(probe.name, command=list(command), fingerprint=fingerprint, config=config)


def measure(probe: Probe, command: Sequence[str] | None = None, fingerprint: dict | None = None) -> dict:
    """The whole run in this process, without files: a new report, every case, config.wall_seconds."""
    started = time.perf_counter()
    report = new_report(probe, command or ["python", "-m", probe.module()], fingerprint)
    run(probe, report)
    report["config"]["wall_seconds"] = time.perf_counter() - started
    return report


#: Fingerprint fields that say which machine and software made a report; a resumed run must match them.
SAME_MACHINE = (("gpu", "name"), ("gpu", "uuid"), ("gpu", "driver_version"), ("gpu", "cuda_runtime_version"),
                ("gpu", "cublas_version"), ("cpu", "model"), ("host", "hostname"), ("versions",), ("env",))


def resume_from(path: str, probe: Probe, fresh: dict) -> dict:
    """The partial report at `path`, to go on with: the same probe and options (Probe.options), machine and
    software (SAME_MACHINE) and code commit as the `fresh` report of this run. UsageError says what differs."""
    old = reports.load_report(path)
    where = f"--resume {path}"
    if old["probe"] != probe.name:
        raise UsageError(f"{where}: a {old['probe']} report, not a {probe.name} one")
    if "partial" not in old:
        raise UsageError(f"{where}: the report is complete; nothing to resume")
    was, now = old["partial"].get("options", {}), probe.options()
    for key in sorted(set(was) | set(now)):
        if was.get(key) != now.get(key):
            raise UsageError(f"{where}: it ran with --{key.replace('_', '-')} {was.get(key)!r}, this run has "
                             f"{now.get(key)!r}; resume with the options it ran with")
    for field in SAME_MACHINE:
        if _get(old["fingerprint"], field) != _get(fresh["fingerprint"], field):
            raise UsageError(f"{where}: another machine or software ({'.'.join(field)} "
                             f"{_get(old['fingerprint'], field)!r}, here {_get(fresh['fingerprint'], field)!r})")
    if (old.get("code") or {}).get("commit") != fresh["code"].get("commit"):
        raise UsageError(f"{where}: made by code {(old.get('code') or {}).get('commit')}, this is "
                         f"{fresh['code'].get('commit')}")
    old.setdefault("resumed", []).append({"created_utc": fresh["created_utc"], "command": fresh["command"],
                                          "cases_done_before": len(old["partial"].get("cases_done", []))})
    return old


def _get(d, path):
    for p in path:
        d = d.get(p) if isinstance(d, dict) else None
    return d


# --------------------------------------------------------------------------------------------
# the command line


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM raises Terminated (a KeyboardInterrupt) in the main thread while the probe runs."""
    def terminate(signum, frame):
        raise Terminated("SIGTERM")
    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(probe_class: type[Probe], argv: Sequence[str] | None = None) -> int:
    """`python -m probes.<probe>`: see the module docstring. Returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    probe = probe_class.from_argv(argv)
    args = probe.args
    report = new_report(probe, ["python", "-m", probe.module(), *argv])
    if args.resume:
        report = resume_from(args.resume, probe, report)
        probe.restore(report)
    path = args.json or args.resume or cli.report_path(args, probe.name, report["fingerprint"], probe.device)
    before = report["config"].get("wall_seconds", 0.0)
    started = time.perf_counter()

    def write(rep):
        rep["config"]["wall_seconds"] = before + time.perf_counter() - started
        reports.write_report(rep, path)

    try:
        with _sigterm_interrupts():
            run(probe, report, checkpoint=write)
    except KeyboardInterrupt as stop:
        return _interrupted(report, path, write, "SIGTERM" if isinstance(stop, Terminated) else "Ctrl-C")
    report["config"]["wall_seconds"] = before + time.perf_counter() - started
    text = probe.table(report)
    if text:
        print(text)
    cli.save_report(args, path, report, probe.plot)
    probe.write_extras(report, path)
    failed = [e["key"] for e in report["experiments"] if e["status"] == "error"]
    if failed:
        print(f"error: {len(failed)} experiment{'s' * (len(failed) > 1)} failed ({failed[0]}"
              f"{', ...' if len(failed) > 1 else ''}); the report lists why", file=sys.stderr)
    return 1 if failed else 0


def _interrupted(report: dict, path: str, write: Callable[[dict], None], how: str) -> int:
    partial = report.setdefault("partial", {})
    partial["reason"] = f"interrupted ({how})"
    write(report)
    done, total = len(partial.get("cases_done", [])), partial.get("cases_planned", "?")
    print(f"interrupted ({how}): partial report {path} ({done} of {total} cases); go on with "
          f"--resume {path}", file=sys.stderr, flush=True)
    return INTERRUPTED

