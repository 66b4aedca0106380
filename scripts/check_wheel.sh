#!/usr/bin/env bash
# Install as users do (`make wheel-check`, run by CI after `make test`): build a wheel of this checkout,
# check that it holds every package, data file and the compiled extension, install it into a fresh virtual
# environment outside the checkout, and run a probe from there.
#
#   PYTHON=.venv/bin/python bash scripts/check_wheel.sh
#
# PYTHON (default .venv/bin/python, the environment `make setup` made) builds the wheel without build
# isolation and makes the fresh environment (same Python version as the wheel's tag). The extension is
# built with the same interpreter and options as the editable install, so setup.py's CMake build tree
# (build/cmake-<key>) is reused: relinking only, no nvcc. The fresh environment gets the wheel and its
# dependencies (numpy, ml_dtypes, torch), pinned to requirements-dev.txt (torch==2.13.0: the CPU wheel where
# pip's find-links has it), and nothing else: no Triton, Numba, CuPy or matplotlib, whose backends and plot
# are skipped with a line saying why. KEEP=1 keeps the temporary folder.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
case $PYTHON in /*) ;; */*) PYTHON=$PWD/$PYTHON ;; esac   # not resolved further: a venv's python must stay one
WORK=$(mktemp -d "${TMPDIR:-/tmp}/driftscope-wheel.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then echo "wheel check folder: $WORK"; else trap 'rm -rf "$WORK"' EXIT; fi
start=$(date +%s)
stage() { echo "-- $1 ($(( $(date +%s) - start )) s)"; }

stage "build the wheel"
# What an earlier build left would go into the wheel: setuptools' staging folders (files removed since), and
# its file list (*.egg-info/SOURCES.txt, which puts every file under a listed package into the wheel, listed
# subpackage or not). A fresh clone has neither; the CMake build tree under build/ stays.
rm -rf "$ROOT"/build/lib.* "$ROOT"/build/bdist.* "$ROOT"/*.egg-info
(cd "$ROOT" && "$PYTHON" -m pip wheel --quiet --no-build-isolation --no-deps --wheel-dir "$WORK/dist" .)
WHEEL=$(ls "$WORK"/dist/driftscope-*.whl)
ls -l "$WHEEL"

stage "wheel contents"
(cd "$ROOT" && git ls-files numerics probes llm) > "$WORK/tracked.txt"
"$PYTHON" - "$WHEEL" "$WORK/tracked.txt" <<'EOF'
"""Every tracked file of the packages (sources and data) and the compiled extension are in the wheel."""
import sys
import zipfile

wheel, tracked = sys.argv[1:]
names = set(zipfile.ZipFile(wheel).namelist())
missing = [f for f in open(tracked).read().split() if f not in names]
if missing:
    sys.exit(f"{wheel} lacks {len(missing)} files of the checkout: " + ", ".join(missing[:20]))
if not any(n.startswith("probes/_C.") and n.endswith((".so", ".pyd")) for n in names):
    sys.exit(f"{wheel} has no compiled extension probes/_C")
print(f"{len(names)} files, every tracked package file among them, and probes/_C")
EOF

stage "fresh environment"
"$PYTHON" -m venv "$WORK/venv"
VPY=$WORK/venv/bin/python
"$VPY" -m pip install --quiet --disable-pip-version-check -c "$ROOT/requirements-dev.txt" "$WHEEL"

# From here on the current directory is outside the checkout, and nothing points Python at it.
mkdir "$WORK/run" && cd "$WORK/run"
unset PYTHONPATH
stage "imports from the installed wheel"
"$VPY" - "$WORK/venv" <<'EOF'
"""Every package of the wheel imports, from the fresh environment, with its extension and data files."""
import importlib
import os
import pkgutil
import sys

venv = os.path.realpath(sys.argv[1])
import llm, numerics, probes  # noqa: E402,E401

names = []
for top in (numerics, probes, llm):
    names.append(top.__name__)
    names += [m.name for m in pkgutil.walk_packages(top.__path__, top.__name__ + ".") if m.ispkg]
for name in names:
    mod = importlib.import_module(name)
    if not os.path.realpath(mod.__file__).startswith(venv + os.sep):
        sys.exit(f"{name} was imported from {mod.__file__}, not from the fresh environment {venv}")
from probes import ext  # noqa: E402
if not ext.available():
    sys.exit("probes._C is not importable from the installed wheel")
print("extension:", ext.build_info())
from llm.seed import CPU_RECORD, read_record  # noqa: E402
rec, last = read_record(CPU_RECORD)
print(f"imported {len(names)} packages: {', '.join(names)}; seed record: {sorted(rec['prompts'])}")
EOF

stage "python -m probes.reduction --device cpu, twice"
# Every backend asked for, as a user would: Triton, Numba and CuPy are not installed here and say so.
for run in a b; do
  "$VPY" -m probes.reduction --device cpu --sizes 1000,4097 --runs 3 \
    --json "$WORK/run/reduction-$run.json" > "$WORK/run/reduction-$run.txt"
done
sed -n "/^skipped:/,/^$/p;/^plot:/p" "$WORK/run/reduction-a.txt" | cut -c1-160
"$VPY" - "$WORK/run/reduction-a.json" <<'EOF'
"""The installed extension's fixed orders give the numerics model's bits; the report names the installed version."""
import json
import sys

report = json.load(open(sys.argv[1]))
checked = [e for e in report["experiments"] if "matches_model" in (e.get("metrics") or {})]
wrong = [e["key"] for e in checked if not e["metrics"]["matches_model"]]
if not checked or wrong:
    sys.exit(f"{len(wrong)} of {len(checked)} fixed-order experiments differ from the numerics model: {wrong[:5]}")
if report["driftscope_version"].endswith("+source"):
    sys.exit(f"the report's version {report['driftscope_version']} is the source tree's, not the installed one")
print(f"{len(report['experiments'])} experiments, {len(checked)} fixed orders equal to the numerics model "
      f"bit for bit (driftscope {report['driftscope_version']})")
EOF
stage "python -m probes.compare"
"$VPY" -m probes.compare "$WORK/run/reduction-a.json" "$WORK/run/reduction-b.json" --only fixed \
  --fail-on-diff | tail -3
stage "wheel check passed"
