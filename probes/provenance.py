"""Which code made a result: the git commit of driftscope's source tree, and whether it had uncommitted changes.

Standard library only: setup.py loads this file by path at build time (where numpy may be absent) to record
the commit in the built package, as the module probes.build_info (COMMIT, DIRTY, REASON; ignored by git).

    python -m probes.provenance            # write probes/build_info.py into the source tree

does the same for a copy of the tree that travels without .git (e.g. to a GPU machine): carry that file with
it, and reports written there name the commit the copy was made from.
"""
from __future__ import annotations

import functools
import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Mapping

__all__ = ["git_identity", "build_record", "carried_record", "RECORD_ENV", "write_record", "identity", "code_summary", "BUILD_RECORD", "ROOT"]

#: The folder that holds probes/: driftscope's source tree, and a git checkout when it holds .git itself.
ROOT = Path(__file__).resolve().parent.parent
#: The module setup.py (or `python -m probes.provenance`) writes: the commit the package was built from.
BUILD_RECORD = "probes.build_info"


def git_identity(root: str | os.PathLike) -> dict:
    """{"commit", "dirty"} of the git checkout at `root`: HEAD, and whether tracked files have uncommitted
    changes (untracked files do not count). `root` must hold .git itself, so that an installation inside some
    other repository is never taken for driftscope's. Never raises: {"commit": None, "dirty": None, "reason"}."""
    root = Path(root)
    if not (root / ".git").exists():
        return {"commit": None, "dirty": None, "reason": f"{root} is not a git checkout (no .git)"}
    try:
        commit = _git(root, "rev-parse", "HEAD")
        dirty = bool(_git(root, "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError) as exc:
        detail = " ".join(((getattr(exc, "stderr", "") or "").strip() or str(exc)).split())
        return {"commit": None, "dirty": None, "reason": f"git failed in {root}: {detail[:200]}"}
    return {"commit": commit, "dirty": dirty}


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20,
                          check=True).stdout.strip()


def write_record(path: str | os.PathLike, root: str | os.PathLike = ROOT) -> dict:
    """Write the build record module (COMMIT, DIRTY, REASON) of the checkout at `root` to `path`; return it."""
    ident = git_identity(root)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('"""Written by probes.provenance (setup.py build_py): the commit this package was built from."""\n'
                    f"COMMIT = {ident['commit']!r}\nDIRTY = {ident['dirty']!r}\nREASON = {ident.get('reason', '')!r}\n",
                    encoding="utf-8")
    return ident


def build_record() -> dict | None:
    """The commit recorded in probes.build_info when this installation was built, or None without a record."""
    try:
        mod = importlib.import_module(BUILD_RECORD)
    except ImportError:
        return None
    commit = getattr(mod, "COMMIT", None)
    if commit is None:
        return {"commit": None, "dirty": None,
                "reason": "built without git: " + str(getattr(mod, "REASON", "") or "no commit recorded")}
    return {"commit": str(commit), "dirty": getattr(mod, "DIRTY", None)}


#: A build record file (as `python -m probes.provenance --out FILE` writes) that names the code for this process
#: ahead of git: for a copy of the tree whose .git is stale, as the GPU machine's copy is (its .git is the
#: checkout's original metadata, not the HEAD the copy was made from); scripts/gpu_session.sh sets it.
RECORD_ENV = "DRIFTSCOPE_CODE_RECORD"


def carried_record(path: str | os.PathLike) -> dict:
    """{"commit", "dirty", "source"} read from a build record file, never imported; a clear error otherwise."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{RECORD_ENV}={path}: cannot read it ({exc.strerror or exc})") from None
    values = {}
    for line in text.splitlines():
        name, sep, value = line.partition(" = ")
        if sep and name in ("COMMIT", "DIRTY"):
            values[name] = value.strip()
    commit, dirty = values.get("COMMIT", ""), values.get("DIRTY", "")
    if len(commit) != 42 or not all(c in "0123456789abcdef" for c in commit.strip("'")) or dirty not in ("True", "False"):
        raise ValueError(f"{RECORD_ENV}={path}: not a build record with a commit "
                         "(write one with python -m probes.provenance --out FILE)")
    return {"commit": commit.strip("'"), "dirty": dirty == "True", "source": f"carried record {path.name}"}


@functools.lru_cache(maxsize=None)
def _identity(root: Path) -> tuple:
    carried = os.environ.get(RECORD_ENV)
    if carried:
        return tuple(carried_record(carried).items())
    ident = dict(git_identity(root), source="git")
    if ident["commit"] is None:
        built = build_record()
        if built is not None and built["commit"] is not None:
            ident = dict(built, source="recorded at build time")
        else:
            ident["reason"] += "; " + (built["reason"] if built else "no build record (installed without one?)")
            ident["source"] = None
    return tuple(ident.items())


def identity(root: str | os.PathLike | None = None) -> dict:
    """{"commit", "dirty", "source"[, "reason"]} of the code at `root` (default: driftscope's source tree):
    a record file named by $DRIFTSCOPE_CODE_RECORD (ValueError if it is not one); else its git checkout;
    else the build record; else commit null and the reason. Cached per root."""
    return dict(_identity(Path(root) if root is not None else ROOT))


def code_summary(code: Mapping | None) -> str:
    """A report's `code` in a few words: "commit 3f1c2a9b0d1e", "+ uncommitted changes" when dirty."""
    if not code:
        return "commit not recorded (report written before reports carried it)"
    if not code.get("commit"):
        return "commit unknown" + (f" ({code['reason']})" if code.get("reason") else "")
    dirty = code.get("dirty")
    return f"commit {str(code['commit'])[:12]}" + (" + uncommitted changes" if dirty else
                                                    "" if dirty is False else " (dirty: unknown)")


def main(argv=None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m probes.provenance",
                                     description="Record the source tree's git commit in probes/build_info.py "
                                                 "(ignored by git), for a copy of the tree without .git.")
    parser.add_argument("--out", default=str(ROOT / "probes" / "build_info.py"), help="where (default: %(default)s)")
    args = parser.parse_args(argv)
    ident = write_record(args.out)
    print(f"{args.out}: {code_summary(ident)}")
    return 0 if ident["commit"] else 1


if __name__ == "__main__":
    sys.exit(main())
