#!/usr/bin/env bash
# GPU part (see scripts/gpu_session.sh): reduction gpu tests, then the probe cold and warm. Arg: output folder.
D=${1:?output folder}
rm -rf ~/.triton/cache  # so the timings below include Triton's compiles
echo "-- python -m pytest -m gpu tests/test_reduction_gpu.py tests/test_ext_gpu.py"
python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_reduction_gpu.py tests/test_ext_gpu.py 2>&1 | tail -15
echo "-- python -m probes.reduction --json reduction.json"
start=$(date +%s)
python3 -m probes.reduction --json "$D/reduction.json" > "$D/reduction-table.txt" 2> "$D/reduction-stderr.txt"
echo "probe exit $? in $(( $(date +%s) - start )) s (cold)"
cat "$D/reduction-table.txt"
