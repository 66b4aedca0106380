"""A small progress line for long probes (stderr; never mixed into stdout or the JSON report).

    with Progress(len(cases), "reduction") as bar:
        for case in cases:
            run(case)
            bar.update(note=case.key)

On a terminal: one line, redrawn in place: ``reduction [12/40] float32 n=4097 (3.2s)``.
Not a terminal (CI logs, files): a line at most every ~5 s, and one at the end.
Silent when DRIFTSCOPE_NO_PROGRESS=1.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from typing import TextIO

__all__ = ["Progress", "progress_disabled"]


def progress_disabled() -> bool:
    return os.environ.get("DRIFTSCOPE_NO_PROGRESS", "").strip() not in ("", "0", "false", "no")


def _fmt_elapsed(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(seconds), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s"


class Progress:
    """Context manager showing "desc [k/total] note (elapsed)"."""

    def __init__(self, total: int | None, desc: str, stream: TextIO | None = None, *,
                 interval: float = 5.0, tty_interval: float = 0.1, clock=time.monotonic):
        self.total = total
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        self.count = 0
        self.note = ""
        self.interval = interval
        self.tty_interval = tty_interval
        self._clock = clock
        self._start = clock()
        self._last_emit: float | None = None
        self._last_len = 0
        self._closed = False
        self.enabled = not progress_disabled()
        try:
            self.is_tty = bool(self.stream.isatty())
        except (AttributeError, ValueError, OSError):
            self.is_tty = False

    # context manager ------------------------------------------------------------------------
    def __enter__(self) -> "Progress":
        self._start = self._clock()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(interrupted=exc_type is not None)

    # api --------------------------------------------------------------------------------------
    def update(self, n: int = 1, note: str = "") -> None:
        self.count += n
        if note:
            self.note = str(note)
        if not self.enabled or self._closed:
            return
        now = self._clock()
        limit = self.tty_interval if self.is_tty else self.interval
        done = self.total is not None and self.count >= self.total
        if self._last_emit is None:
            due = self.is_tty or now - self._start >= self.interval
        else:
            due = now - self._last_emit >= limit
        if due and not (done and not self.is_tty):  # non-TTY: the final line is written by close()
            self._emit(now)

    def line(self, now: float | None = None) -> str:
        now = self._clock() if now is None else now
        total = "?" if self.total is None else str(self.total)
        parts = [f"{self.desc} [{self.count}/{total}]"]
        if self.note:
            parts.append(self.note)
        parts.append(f"({_fmt_elapsed(now - self._start)})")
        return " ".join(parts)

    def close(self, interrupted: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.enabled:
            return
        # Always report where we got to, so a log shows the end (or where it was interrupted).
        if self.count or self._last_emit is not None or not self.is_tty:
            self._emit(self._clock(), final=True, interrupted=interrupted)

    # output -----------------------------------------------------------------------------------
    def _emit(self, now: float, final: bool = False, interrupted: bool = False) -> None:
        text = self.line(now) + (" interrupted" if interrupted else "")
        try:
            if self.is_tty:
                width = shutil.get_terminal_size((100, 20)).columns - 1
                if len(text) > width > 10:
                    text = text[: width - 1] + "…"
                pad = " " * max(0, self._last_len - len(text))
                self.stream.write("\r" + text + pad + ("\n" if final else ""))
                self._last_len = len(text)
            else:
                self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # closed stream: progress is best effort
            self.enabled = False
        self._last_emit = now
