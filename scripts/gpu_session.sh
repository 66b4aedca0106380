#!/usr/bin/env bash
# One GPU-machine session (the device tool runs it in a copy of the working tree; no network there):
# build the extension offline, fingerprint the GPU, then run each part scripts/gpu/<part>.sh (gpu tests
# and probe runs of one probe). A part writes what it measured into the folder given as its argument.
# The device tool brings back at most 8 files, so everything is packed into $OUT/results.tgz, with the
# log in $OUT/session.log; unpack into docs/results/<gpu>-<date>/ and keep there the README, fingerprint,
# final reports, tables and plots, not the raw logs and stderr dumps (docs/results/README.md).
# Usage: bash scripts/gpu_session.sh [part ...]        (default: every scripts/gpu/*.sh, sorted)
# Env: PART_TIMEOUT (s, default 240) bounds each part; .carry/*.whl (ignored; carried) is installed first.
set -uo pipefail
OUT=${OUT:-out}
STAGE=${STAGE:-/tmp/driftscope-gpu-session}
rm -rf "$STAGE"; mkdir -p "$OUT" "$STAGE"
log() { echo "== $* ($(date +%T))"; }
exec > >(tee "$OUT/session.log") 2>&1
export PYTHONUNBUFFERED=1
trap 'tar czf "$OUT/results.tgz" -C "$STAGE" . 2>/dev/null' EXIT

log "machine"
nvidia-smi --query-gpu=name,compute_cap,driver_version,clocks.max.sm,clocks.max.mem,power.limit --format=csv
python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
if ls .carry/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .carry/*.whl \
    && export PYTHONPATH=/tmp/site && echo "carried wheels: $(ls .carry/*.whl | xargs -n1 basename | tr '\n' ' ')"
fi

log "build: pip install --no-build-isolation --no-deps -e ."
start=$(date +%s)
python3 -m pip install --no-build-isolation --no-deps -e . > "$STAGE/build.log" 2>&1 || { tail -50 "$STAGE/build.log"; exit 1; }
echo "build seconds: $(( $(date +%s) - start ))"
python3 -c "import probes.ext as e; print(e.build_info())"

log "fingerprint: python -m probes.device --json fingerprint.json"
python3 -m probes.device --json "$STAGE/fingerprint.json" | head -30

parts=("$@")
if [ ${#parts[@]} -eq 0 ]; then
  for f in scripts/gpu/*.sh; do parts+=("$(basename "$f" .sh)"); done
fi
for part in "${parts[@]}"; do
  log "part $part: bash scripts/gpu/$part.sh"
  mkdir -p "$STAGE/$part"
  start=$(date +%s)
  timeout "${PART_TIMEOUT:-240}" bash "scripts/gpu/$part.sh" "$STAGE/$part"
  echo "part $part: exit $? in $(( $(date +%s) - start )) s"
done
log "done"
