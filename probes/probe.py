"""What every probe is: its axes, its cases, its backends, and what it measures in one case.

A probe is declared the way nvbench declares a benchmark (``NVBENCH_BENCH(fn).add_int64_axis("N", {...})``):
the values it sweeps are data, and one generic driver (probes.runner) runs them. A probe says

- its **axes** (`Axis`): a name, the values, and the command-line flag that overrides them (``--dtypes``,
  ``--sizes``, ``--backends``); values may depend on the device (small sizes on a CPU);
- its **plan**: the cases (`Case`: a value per axis, on one device), by default the cross product of its axes
  minus the combinations it `excluded` (a strategy its backend does not have); a probe with several parts
  chains several `grid`s;
- its **backends** (`Backend`): what each needs installed (`requires`, checked once per process) and why it
  cannot run a given case (`unavailable(case)`: the device, a dtype, a size);
- `record(case)`: the key, inputs, parameters and `compares` declaration of the case's experiment (what a
  case that is skipped or fails records, with the reason, and what `add` fills with the results);
- `run_case(case, report)`: one case measured into the report;
- `finish(report)`: what is derived from several cases (ratios, pairs) once they all ran.

The driver (probes.runner) does the rest the same way for every probe: the loop and its progress line, skips
with their reasons, one error recorded per failing case, checkpoints, interruption (a partial report, and
``--resume``), the report, the table, the plot and the exit status. docs/probes.md shows a whole probe.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import itertools
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from probes import cli
from probes import report as reports

__all__ = ["Axis", "Case", "Backend", "Probe", "NOT_RUN"]

#: The `compares` of the record of a case that stands for a whole part (its experiments are known only once it
#: runs): what a skipped or failed part records.
NOT_RUN = {"reason": "the record of a part that did not run"}


@dataclass(frozen=True)
class Axis:
    """One dimension of a probe's cases: its values, and how the command line chooses among them.

    `values`: the default values, or a function of the device that gives them (sizes differ between a CPU and
    a GPU). `flag`: the option that overrides them (None: the values are fixed by the probe). `parse`:
    "choice" (comma-separated names out of `choices`, "all" for every one; `choices` defaults to the values)
    or "sizes" (probes.cli.parse_sizes: 1000,2^20,1e6). `what`: the word in messages ("unknown backend 'x'")."""
    name: str
    values: Sequence | Callable[[str], Sequence]
    flag: str | None = None
    help: str = ""
    choices: Sequence | None = None
    parse: str = "choice"
    what: str | None = None

    @property
    def dest(self) -> str:
        """The argparse destination of the flag, and the axis's key in the report's config."""
        return (self.flag or self.name).lstrip("-").replace("-", "_")

    def defaults(self, device: str) -> list:
        return list(self.values(device) if callable(self.values) else self.values)

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        if self.flag:
            parser.add_argument(self.flag, dest=self.dest, default=None, help=self.help)

    def select(self, text: str | None, device: str) -> list:
        """The values that the flag's `text` selects (None: the defaults). Raises UsageError naming a bad one."""
        if text is None:
            return self.defaults(device)
        if self.parse == "sizes":
            return cli.parse_sizes(text)
        choices = list(self.choices if self.choices is not None else self.defaults(device))
        return cli.parse_csv_choice(text, choices, self.what or self.name)


class Case(Mapping):
    """One point of a probe's plan: a value per axis (and whatever else the plan adds), on one device.

    Read a value as ``case.dtype`` or ``case["dtype"]``; ``case.get("backend")`` where it may be absent."""

    __slots__ = ("device", "_values")

    def __init__(self, device: str, **values: Any):
        object.__setattr__(self, "device", device)
        object.__setattr__(self, "_values", values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"this case has no {name!r} (it has {', '.join(self._values)})") from None

    def __setattr__(self, name, value):
        raise AttributeError("a Case is immutable: use case.with_(...)")

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def with_(self, **changes: Any) -> "Case":
        return Case(self.device, **{**self._values, **changes})

    def __repr__(self) -> str:
        return f"Case({self.device!r}, " + ", ".join(f"{k}={v!r}" for k, v in self._values.items()) + ")"


@functools.lru_cache(maxsize=None)
def missing_module(modules: tuple[str, ...]) -> str | None:
    """Why the first of `modules` that does not import cannot be used, else None (once per process)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return f"{module} is not installed ({exc})"
        except Exception as exc:  # a broken install is a reason too, not a crash of the probe
            return f"{module} fails to import ({type(exc).__name__}: {exc})"
    return None


class Backend:
    """One way of computing a probe's results: a library, a compiler, a kernel language, an exact model.

    `requires` names the modules it imports; a missing one makes it unavailable for every case (checked once).
    `unavailable(case)` says why it cannot run one case (the device, a dtype, a size), or None: a subclass adds
    its own conditions after ``super().unavailable(case)``."""

    name = ""
    requires: tuple[str, ...] = ()

    def unavailable(self, case: Case) -> str | None:
        return missing_module(tuple(self.requires))


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Probe:
    """A probe declared as data; probes.runner runs it (see the module docstring).

    An instance is one run's choice: `device`, `seed`, the values each axis selected (`values(name)`), and the
    probe's own options (`configure`). Make one from command-line arguments with `from_argv`."""

    #: the report's "probe", and the default report's name (reports/<name>-<device>.json)
    name = ""
    #: the --help text: what the probe measures, on which backends, what it writes
    description = ""
    #: its axes, in the order their flags appear in --help
    axes: tuple[Axis, ...] = ()
    #: its backends by name: the values of a "backend" axis, asked by `unavailable`
    backends: Mapping[str, Backend] = {}
    #: the arguments that say where results go, not what is measured (a resumed run may change them)
    output_options: tuple[str, ...] = ("json", "plot", "no_plot", "resume")

    def __init__(self, args: argparse.Namespace, device: str, log: Callable[[str], None] | None = None):
        self.args = args
        self.device = device
        self.seed = args.seed
        self.log = log or _stderr
        self.selected = {axis.name: axis.select(getattr(args, axis.dest, None), device) for axis in self.axes}
        self.configure(args)

    # ---- the command line --------------------------------------------------------------------------------

    @classmethod
    def module(cls) -> str:
        """What `python -m` runs: the probe's package (probes.reduction)."""
        return cls.__module__.rsplit(".", 1)[0]

    @classmethod
    def parser(cls) -> argparse.ArgumentParser:
        """--device, --seed, --json; a flag per axis; the probe's own options; --plot, --no-plot, --resume."""
        parser = argparse.ArgumentParser(prog=f"python -m {cls.module()}", description=cls.description,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        cli.add_common_args(parser)
        for axis in cls.axes:
            axis.add_to(parser)
        cls.add_arguments(parser)
        cli.add_plot_args(parser)
        parser.add_argument("--resume", default=None, metavar="PATH",
                            help="go on with the partial report at PATH (one that an interrupted run wrote, with "
                                 "the same options, on the same machine and code): its cases are not run again; "
                                 "the report is written back to PATH unless --json says otherwise")
        return parser

    @classmethod
    def from_argv(cls, argv: Sequence[str] | None = None, log: Callable[[str], None] | None = None) -> "Probe":
        """Parse `argv`, resolve the device (on a CPU Triton and Numba switch to their interpreters, before they
        are imported) and make the probe. Raises UsageError / NoGPUError with one clear line."""
        args = cls.parser().parse_args(argv)
        return cls(args, cli.select_device(args.device), log=log)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """The probe's own options (--runs, --samples): whatever is not an axis."""

    def configure(self, args: argparse.Namespace) -> None:
        """Check the probe's own options (UsageError names a bad one) and keep them."""

    def options(self) -> dict:
        """What this run measures: its arguments but the `output_options`, with the device as resolved."""
        chosen = {k: v for k, v in vars(self.args).items() if k not in self.output_options}
        return reports.jsonable({**chosen, "device": self.device})

    def config(self, fingerprint: Mapping) -> dict:
        """What the report's config records beyond the device, the seed and each axis's values."""
        return {}

    # ---- the plan ----------------------------------------------------------------------------------------

    def values(self, name: str) -> list:
        """The values that this run selected for the axis `name`."""
        return self.selected[name]

    def case(self, **values: Any) -> Case:
        return Case(self.device, **values)

    def grid(self, *names: str, **fixed: Any) -> Iterator[Case]:
        """The cross product of the named axes' values (the first varies slowest), each case with the `fixed`
        values too, less the `excluded` ones."""
        for combo in itertools.product(*(self.values(n) for n in names)):
            case = self.case(**dict(zip(names, combo)), **fixed)
            if not self.excluded(case):
                yield case

    def plan(self) -> Iterable[Case]:
        """The cases of this run, in order: by default the grid of every axis."""
        return self.grid(*(axis.name for axis in self.axes))

    def excluded(self, case: Case) -> bool:
        """True for a combination that is no case at all (a strategy its backend does not have): it is
        not run and not reported. What could run elsewhere is `unavailable` instead."""
        return False

    # ---- one case ----------------------------------------------------------------------------------------

    def unavailable(self, case: Case) -> str | None:
        """Why `case` cannot run here (it is then recorded as skipped, with this reason), or None. By default
        its backend's answer."""
        backend = self.backends.get(case.get("backend"))
        return backend.unavailable(case) if backend is not None else None

    def record(self, case: Case) -> dict:
        """{key, inputs, params, compares} of the case's experiment (probes.report.add_experiment): its key is
        the case's name in progress lines and partial reports; a skipped or failed case records this."""
        raise NotImplementedError

    def run_case(self, case: Case, report: dict) -> None:
        """Measure `case` into `report`, usually with `add`. An exception is recorded as the case's error
        (what the case added before it is withdrawn) and the run goes on."""
        raise NotImplementedError

    def add(self, report: dict, case: Case, **results: Any) -> dict:
        """add_experiment with the case's record and `results` (output, metrics, status, message; inputs or
        params given here replace the record's)."""
        return reports.add_experiment(report, **{**self.record(case), **results})

    # ---- the whole run -----------------------------------------------------------------------------------

    def finish(self, report: dict) -> None:
        """What several cases give together (ratios, pairs), added once every case ran."""

    def restore(self, report: dict) -> None:
        """Before a resumed run: rebuild what the cases of the partial `report` left in memory."""

    def table(self, report: dict) -> str:
        """The printed summary."""
        return ""

    def plot(self, report: dict, path: str) -> bool | None:
        """Draw the report at `path` (matplotlib; False: nothing to draw)."""
        return False

    def write_extras(self, report: dict, json_path: str) -> None:
        """Files the probe writes beside its report (the GEMM probe's Triton tables)."""
