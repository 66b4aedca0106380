#!/usr/bin/env bash
# GPU part (see scripts/gpu_session.sh): dequant gpu tests, then the probe (tables, speed vs copy bandwidth,
# fused matmul, Mistral-shaped layer). Arg: output folder. Budget: < 2 minutes on an H100 (60 s + 55 s caps).
D=${1:?output folder}
python3 -c "import probes._C as c, torch, triton; print('ext cuda', c.built_with_cuda(), 'archs', c.compiled_cuda_archs(), '| torch', torch.__version__, '| triton', triton.__version__)" 2>&1 | tail -1
echo "-- python -m pytest -m gpu tests/test_dequant_gpu.py"
start=$(date +%s)
timeout 60 python3 -m pytest -m gpu -q -p no:cacheprovider -rf --durations=5 tests/test_dequant_gpu.py > "$D/dequant-gpu-tests.txt" 2>&1
echo "gpu tests: exit $? in $(( $(date +%s) - start )) s (124 = timed out)"
grep -E "^(FAILED|ERROR)|passed|failed|error" "$D/dequant-gpu-tests.txt" | cut -c1-400 | tail -25
echo "-- python -m probes.dequant --json dequant.json"
start=$(date +%s)
timeout 55 python3 -m probes.dequant --json "$D/dequant.json" > "$D/dequant-table.txt" 2> "$D/dequant-stderr.txt"
echo "probe exit $? in $(( $(date +%s) - start )) s (1 = some experiment has status error; 124 = timed out)"
cat "$D/dequant-table.txt"
echo "-- stderr tail (progress lines, speed, errors)"
grep -v "^dequant \[" "$D/dequant-stderr.txt" | tail -40 | cut -c1-400
