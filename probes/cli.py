"""Command-line plumbing shared by every driftscope CLI.

A probe's command line is probes.runner.main (built from the probe's declared axes, docs/probes.md); the
other CLIs (probes.device, probes.compare, llm.*) are built the same way from these helpers::

    def main(argv=None):
        parser = argparse.ArgumentParser(prog="python -m probes.compare", description=...)
        add_common_args(parser)
        args = parser.parse_args(argv)
        device = resolve_device(args.device)          # "cpu" or "cuda:N"
        ...

    if __name__ == "__main__":
        sys.exit(guarded_main(main))

`guarded_main` turns a DriftscopeError into exactly one line ``error: <message>`` on stderr and
exit status 2 (set DRIFTSCOPE_DEBUG=1 for the traceback instead).
"""
from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from typing import Callable, Iterable, Sequence

from probes.errors import DriftscopeError, NoGPUError, UsageError

__all__ = [
    "add_common_args",
    "add_plot_args",
    "resolve_device",
    "select_device",
    "report_path",
    "write_plot",
    "gpu_status",
    "parse_csv_choice",
    "parse_sizes",
    "guarded_main",
    "debug_enabled",
]

DEVICE_HELP = (
    "where to run: 'auto' (default: the first CUDA GPU if one is usable, else the CPU), "
    "'cpu', 'cuda' (= cuda:0) or 'cuda:N' for the N-th visible GPU"
)


def add_common_args(parser: argparse.ArgumentParser, *, json_help: str | None = None,
                    default_device: str = "auto") -> argparse.ArgumentParser:
    """Add --device, --seed and --json to `parser` (every driftscope CLI has them)."""
    parser.add_argument("--device", default=default_device, metavar="{auto,cpu,cuda,cuda:N}",
                        help=DEVICE_HELP)
    parser.add_argument("--seed", type=int, default=0, metavar="INT",
                        help="seed of the random inputs (numpy.default_rng); the same seed gives "
                             "bit-identical inputs on every machine (default: 0)")
    parser.add_argument("--json", default=None, metavar="PATH",
                        help=json_help or "write the full JSON report to PATH (parent folders are "
                                          "created); compare reports with `python -m probes.compare`")
    return parser


def add_plot_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add --plot PATH and --no-plot (probes that draw their results)."""
    parser.add_argument("--plot", default=None, metavar="PATH",
                        help="where to write the plot (default: next to the JSON, .png)")
    parser.add_argument("--no-plot", action="store_true", help="do not draw the plot")
    return parser


def slug(text: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3' (file names of default reports)."""
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "device"


def report_path(args: argparse.Namespace, probe: str, fingerprint: dict, device: str) -> str:
    """--json, else reports/<probe>-<gpu name (from the device fingerprint) or cpu>.json."""
    if getattr(args, "json", None):
        return args.json
    name = ((fingerprint or {}).get("gpu") or {}).get("name") if device != "cpu" else "cpu"
    return os.path.join("reports", f"{probe}-{slug(name or device)}.json")


def save_report(args: argparse.Namespace, path: str, report: dict, plot: Callable[[dict, str], None]) -> None:
    """Write the report to `path`, print where it went and how long the run took, then draw its plot
    (`write_plot`)."""
    from probes import report as reports

    reports.write_report(report, path)
    print(f"\nreport: {path}  ({report['config']['wall_seconds']:.1f} s)")
    write_plot(args, path, plot, report)


def write_plot(args: argparse.Namespace, json_path: str, plot: Callable[[dict, str], None],
               report: dict) -> str | None:
    """Draw `plot(report, path)` unless --no-plot (path: --plot, else the JSON's path with .png) and
    print where it went; without matplotlib say so and go on; a plot that returns False had nothing to draw
    (no file is written). Returns the path or None."""
    if getattr(args, "no_plot", False):
        return None
    path = getattr(args, "plot", None) or os.path.splitext(json_path)[0] + ".png"
    try:
        drawn = plot(report, path)
    except ImportError:
        print("plot:   skipped (matplotlib is not installed)")
        return None
    if drawn is False:
        print("plot:   none (nothing to plot: no part of the run has results)")
        return None
    print(f"plot:   {path}")
    return path


# --------------------------------------------------------------------------------------------
# devices


@functools.lru_cache(maxsize=None)
def gpu_status() -> tuple[int, str]:
    """(number of usable CUDA GPUs, reason when there are none). Cached for the process.

    Asks torch when it is importable; when torch sees no GPU (or is absent) asks the driftscope
    extension (probes.ext.cuda_device_count).
    """
    reasons: list[str] = []
    try:
        import torch  # noqa: PLC0415  (heavy; only imported when a device must be resolved)
    except ImportError:
        reasons.append("torch is not installed")
    except Exception as exc:  # a broken torch install must not crash device resolution
        reasons.append(f"torch failed to import ({type(exc).__name__}: {exc})")
    else:
        try:
            if torch.cuda.is_available():
                n = int(torch.cuda.device_count())
                if n > 0:
                    return n, ""
                reasons.append("torch sees 0 CUDA devices")
            elif getattr(torch.version, "cuda", None) is None:
                reasons.append(f"torch {torch.__version__} is a CPU-only build")
            else:
                reasons.append(f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no "
                               "usable GPU (no NVIDIA driver or no device)")
        except Exception as exc:
            reasons.append(f"torch.cuda failed ({type(exc).__name__}: {exc})")
    try:
        from probes import ext  # noqa: PLC0415
        if not ext.available():
            reasons.append("the driftscope extension is not built")
        else:
            count = getattr(ext, "cuda_device_count", None)
            n = int(count() if count is not None else ext.build_info().get("gpu_count") or 0)
            if n > 0:
                return n, ""
            reasons.append("the driftscope extension sees 0 CUDA devices")
    except ImportError:
        reasons.append("the driftscope extension is not available")
    except Exception as exc:  # ExtensionUnavailable, CUDA driver errors
        reasons.append(f"the driftscope extension found no GPU ({exc})")
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        reasons.append(f"CUDA_VISIBLE_DEVICES={cvd!r}")
    return 0, "; ".join(reasons) or "unknown reason"


_CUDA_RE = re.compile(r"^cuda(?::(\d+))?$")


def resolve_device(spec: str | None) -> str:
    """Turn a --device value into "cpu" or "cuda:N".

    Raises UsageError for an unknown spec or an index past the last GPU, and NoGPUError when a
    GPU is asked for explicitly and none is usable. 'auto' never raises: it falls back to cpu.
    """
    text = "auto" if spec is None else str(spec).strip().lower()
    if text == "cpu":
        return "cpu"
    if text == "auto":
        n, _ = gpu_status()
        return "cuda:0" if n > 0 else "cpu"
    m = _CUDA_RE.match(text)
    if not m:
        raise UsageError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")
    index = int(m.group(1) or 0)
    n, reason = gpu_status()
    if n == 0:
        raise NoGPUError(f"--device {text} asked for a GPU but none is usable: {reason}")
    if index >= n:
        which = "cuda:0" if n == 1 else f"cuda:0..cuda:{n - 1}"
        raise UsageError(f"--device {text}: there {'is' if n == 1 else 'are'} only {n} usable "
                         f"GPU{'' if n == 1 else 's'} ({which})")
    return f"cuda:{index}"


def select_device(spec: str | None) -> str:
    """resolve_device, and on the CPU switch Triton to its interpreter and Numba to its CUDA simulator
    (TRITON_INTERPRET / NUMBA_ENABLE_CUDASIM, read once when they are first imported: call this before)."""
    device = resolve_device(spec)
    if device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")
        os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
    return device


# --------------------------------------------------------------------------------------------
# argument parsing helpers


def parse_csv_choice(text: str | Iterable[str], choices: Sequence[str], what: str) -> list[str]:
    """Parse "a,b" against `choices`; "all" selects every choice. Order kept, duplicates dropped.

    >>> parse_csv_choice("numpy, torch", ["numpy", "torch", "cupy"], "backend")
    ['numpy', 'torch']
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    items = [str(i).strip() for i in items if str(i).strip()]
    available = ", ".join(choices)
    if not items:
        raise UsageError(f"no {what} given; available: {available}")
    out: list[str] = []
    for item in items:
        if item == "all" and "all" not in choices:
            picked = list(choices)
        elif item in choices:
            picked = [item]
        else:
            raise UsageError(f"unknown {what} {item!r}; available: {available}")
        out.extend(p for p in picked if p not in out)
    return out


_POW_RE = re.compile(r"^(\d+)\s*(?:\^|\*\*)\s*(\d+)\s*(?:([+-])\s*(\d+))?$")
_INT_RE = re.compile(r"^[+-]?\d+$")
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$|^[+-]?\d+\.\d*$")


def _parse_size(token: str) -> int:
    t = token.strip().replace("_", "")
    m = _POW_RE.match(t)
    if m:
        base, exp = int(m.group(1)), int(m.group(2))
        if exp > 64:
            raise UsageError(f"size {token.strip()!r} is too large")
        value = base ** exp
        if m.group(3):
            value += int(m.group(4)) if m.group(3) == "+" else -int(m.group(4))
    elif _INT_RE.match(t):
        value = int(t)
    elif _FLOAT_RE.match(t):
        f = float(t)
        if f != f or f in (float("inf"), float("-inf")) or f != int(f):
            raise UsageError(f"size {token.strip()!r} is not a whole number")
        value = int(f)
    else:
        raise UsageError(f"bad size {token.strip()!r}; use integers like 1000, 2^20, 2^20+3, 2**24 or 1e6")
    if value <= 0:
        raise UsageError(f"size {token.strip()!r} must be positive")
    return value


def parse_sizes(text: str) -> list[int]:
    """Parse "1000,4097,2^20,2^20+3,1e6,2**24" into [1000, 4097, 1048576, 1048579, 1000000, 16777216]."""
    tokens = [t for t in str(text).split(",")]
    if not any(t.strip() for t in tokens):
        raise UsageError("no sizes given; use e.g. 1000,4097,2^20")
    return [_parse_size(t) for t in tokens if t.strip()]


# --------------------------------------------------------------------------------------------
# entry point wrapper


def debug_enabled() -> bool:
    return os.environ.get("DRIFTSCOPE_DEBUG", "").strip() not in ("", "0", "false", "no")


def _one_line(message: object) -> str:
    text = " ".join(str(message).split())
    return text or "unknown error"


def guarded_main(main: Callable[[Sequence[str] | None], int | None],
                 argv: Sequence[str] | None = None) -> int:
    """Run main(argv) and return its exit status.

    DriftscopeError -> one line "error: <message>" on stderr, status 2. KeyboardInterrupt -> one
    line "error: interrupted", status 130. With DRIFTSCOPE_DEBUG=1 both are re-raised (traceback).
    A closed stdout pipe (`... | head`) ends the program quietly with status 1.
    argparse's own SystemExit (status 2 with usage, or 0 for --help) passes through.
    Run warnings the process recorded (probes.report.note_run_warning, e.g. a kernel config that fell
    back to another) are printed last, one line "warning: <message>" each on stderr, whatever the status.
    """
    try:
        return _guarded(main, argv)
    finally:
        print_run_warnings()


def print_run_warnings() -> None:
    """One line "warning: <message>" on stderr per run warning recorded in this process."""
    from probes.report import RUN_WARNINGS
    for w in RUN_WARNINGS:
        try:
            print(f"warning: {w['message']}", file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass


def _guarded(main, argv):
    try:
        status = main(argv)
        sys.stdout.flush()
        return 0 if status is None else int(status)
    except DriftscopeError as exc:
        if debug_enabled():
            raise
        _print_error(_one_line(exc))
        return 2
    except KeyboardInterrupt:
        if debug_enabled():
            raise
        _print_error("interrupted")
        return 130
    except BrokenPipeError:
        # Python's recommended recipe: point stdout at devnull so the interpreter's final flush
        # does not raise again.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 1


def _print_error(line: str) -> None:
    try:
        print(f"error: {line}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass
