"""Static checks over the Python sources: a name used but never defined is a bug that a CPU run may never reach.
On 2026-12-06 `CublasLtLinear.matmul` read `x` where its argument is `x2`; only a GPU run hit that line, and the
NameError cost a GPU call (docs/results/h100-2026-12-06b). pyflakes (requirements-dev.txt) finds such names
without running the code."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("numerics", "probes", "llm", "tests", "scripts")
#: pyflakes messages that are always bugs (unused imports and the like are style, not checked here)
BUGS = ("UndefinedName", "UndefinedExport", "UndefinedLocal", "DuplicateArgument", "ReturnOutsideFunction",
        "YieldOutsideFunction", "ContinueOutsideLoop", "BreakOutsideLoop")


def _sources():
    files = [ROOT / "setup.py"]
    for pkg in PACKAGES:
        files += sorted((ROOT / pkg).rglob("*.py"))
    return [f for f in files if "__pycache__" not in f.parts]


def test_no_undefined_names_anywhere():
    pyflakes = pytest.importorskip("pyflakes.api", reason="pyflakes is in requirements-dev.txt (CI has it)")
    from pyflakes import messages
    from pyflakes.reporter import Reporter

    class Collect(Reporter):
        def __init__(self):
            super().__init__(None, None)
            self.found = []

        def flake(self, message):
            if type(message).__name__ in BUGS:
                self.found.append(str(message))

        def syntaxError(self, filename, msg, lineno, offset, text):
            self.found.append(f"{filename}:{lineno}: syntax error: {msg}")

        def unexpectedError(self, filename, msg):
            self.found.append(f"{filename}: {msg}")

    assert all(hasattr(messages, b) for b in BUGS)
    files = _sources()
    assert len(files) > 100
    rep = Collect()
    for f in files:
        pyflakes.check(f.read_text(), str(f.relative_to(ROOT)), rep)
    assert not rep.found, "\n".join(rep.found)


def test_the_check_finds_a_planted_undefined_name():
    """The negative control: the same check flags the 2026-12-06 bug when it is put back."""
    pyflakes = pytest.importorskip("pyflakes.api", reason="pyflakes is in requirements-dev.txt (CI has it)")
    from pyflakes.reporter import Reporter

    found = []

    class Collect(Reporter):
        def __init__(self):
            super().__init__(None, None)

        def flake(self, message):
            if type(message).__name__ in BUGS:
                found.append(str(message))

    src = "def matmul(x2, w):\n    dev = x.device.index or 0\n    return dev\n"
    pyflakes.check(src, "planted.py", Collect())
    assert found == ["planted.py:2:11: undefined name 'x'"]
