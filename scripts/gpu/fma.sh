#!/usr/bin/env bash
# GPU part (see scripts/gpu_session.sh): FMA probe gpu tests, then the probe's default run. Arg: output folder.
# Expected ~1.5 min on an H100 (Triton and Numba compiles dominate); the timeouts cap it at 4 min.
D=${1:?output folder}
echo "-- python -m pytest -m gpu tests/test_fma_gpu.py"
start=$(date +%s)
timeout 150 python3 -m pytest -m gpu -q -p no:cacheprovider -rf tests/test_fma_gpu.py > "$D/fma-pytest.txt" 2>&1
echo "pytest exit $? in $(( $(date +%s) - start )) s"
grep -E "passed|failed|skipped|error|FAILED|predicted" "$D/fma-pytest.txt" | tail -40
echo "-- python -m probes.fma --json fma.json"
start=$(date +%s)
timeout 90 python3 -m probes.fma --json "$D/fma.json" > "$D/fma-table.txt" 2> "$D/fma-stderr.txt"
echo "probe exit $? in $(( $(date +%s) - start )) s (plot: $D/fma.png)"
head -14 "$D/fma-table.txt"
grep -E "^(model|ext)/.*(fma~mul_add|plain_contract~plain_nocontract) +dot/" "$D/fma-table.txt"
tail -5 "$D/fma-stderr.txt"
