#!/usr/bin/env bash
# One GPU-machine session (the device tool runs it in a copy of the working tree; no network there):
# build the extension offline, fingerprint the GPU, run the gpu-marked tests, run the reduction probe.
# Everything measured lands in $OUT (at most 8 files come back); copy it into docs/results/.
# Usage: bash scripts/gpu_session.sh [pytest -k expression]
set -uo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
log() { echo "== $* ($(date +%T))"; }
exec > >(tee "$OUT/session.log") 2>&1

log "machine"
nvidia-smi --query-gpu=name,compute_cap,driver_version,clocks.max.sm,clocks.max.mem,power.limit --format=csv
python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"

log "build: pip install --no-build-isolation --no-deps -e ."
start=$(date +%s)
python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
echo "build seconds: $(( $(date +%s) - start ))"
python3 -c "import probes._C as c, probes.ext as e; print(e.build_info())"

log "fingerprint: python -m probes.device --json $OUT/fingerprint.json"
python3 -m probes.device --json "$OUT/fingerprint.json"

rm -rf ~/.triton/cache  # so the timings below include Triton's compiles
log "gpu tests: python -m pytest -m gpu"
timeout 300 python3 -m pytest -m gpu -q -p no:cacheprovider ${1:+-k "$1"} 2>&1 | grep -vE "^(tests|[.sF]+ *\[)" | tail -60

log "reduction probe (default run): python -m probes.reduction --json $OUT/reduction.json"
start=$(date +%s)
timeout 300 python3 -m probes.reduction --json "$OUT/reduction.json" > "$OUT/reduction-table.txt" 2> "$OUT/reduction-stderr.txt"
echo "probe exit $? in $(( $(date +%s) - start )) s (JIT caches as the tests left them)"
cat "$OUT/reduction-table.txt"
grep "error in" "$OUT/reduction-stderr.txt" | cut -c1-300 | head
log "reduction probe again, all JIT caches warm"
start=$(date +%s)
timeout 120 python3 -m probes.reduction --json "$OUT/reduction-warm.json" --no-plot > /dev/null 2>&1
echo "probe exit $? in $(( $(date +%s) - start )) s (warm)"
log "done"
