"""Errors that driftscope reports to a user as one clear line (see probes.cli.guarded_main)."""


class DriftscopeError(Exception):
    """A problem with the user's input, environment or files; the message says what and where."""


class UsageError(DriftscopeError):
    """Bad command-line input: an unknown device, backend, dtype or size."""


class NoGPUError(DriftscopeError):
    """A CUDA GPU was asked for and none is usable."""


class ReportError(DriftscopeError):
    """A report file is missing, truncated, foreign or from a newer schema."""
