#!/usr/bin/env bash
# GPU part (see scripts/gpu_session.sh): dequant gpu tests, then the probe (tables, speed vs copy bandwidth,
# fused matmul, Mistral-shaped layer). Arg: output folder. Budget: < 4 minutes on an H100.
D=${1:?output folder}
echo "-- python -m pytest -m gpu tests/test_dequant_gpu.py"
start=$(date +%s)
timeout 150 python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_dequant_gpu.py 2>&1 | tail -25
echo "gpu tests: exit ${PIPESTATUS[0]} in $(( $(date +%s) - start )) s"
echo "-- python -m probes.dequant --json dequant.json"
start=$(date +%s)
timeout 150 python3 -m probes.dequant --json "$D/dequant.json" > "$D/dequant-table.txt" 2> "$D/dequant-stderr.txt"
echo "probe exit $? in $(( $(date +%s) - start )) s"
cat "$D/dequant-table.txt"
echo "-- stderr tail"
tail -30 "$D/dequant-stderr.txt"
