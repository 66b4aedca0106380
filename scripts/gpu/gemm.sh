#!/usr/bin/env bash
# GPU part (see scripts/gpu_session.sh): the Triton bench first (it records one config per shape class and
# M bucket), then the GPU tests and the sweep with exactly those recorded choices, then cuBLASLt algos.
# Each probe run has its own JSON so that a timeout loses only that one. Arg: output folder.
# Budget (PART_TIMEOUT 300 s): bench 105 s, tests 120 s, sweep 35 s, algos 30 s, each bounded by timeout; a probe
# run that hits its bound writes the experiments it finished (SIGTERM handler; the bench keeps each finished
# shape's choice) and notes it in the report.
D=${1:?output folder}
T0=$(date +%s)
stage() { echo "-- [$(( $(date +%s) - T0 )) s] $*"; }
python3 -c "import probes._C as C; print('gemm build:', C.gemm_build_info())"

stage "python -m probes.gemm --parts bench (Triton vs cuBLAS, bf16, per M bucket)"
timeout -k 8 105 python3 -m probes.gemm --parts bench --json "$D/gemm-bench.json" --bench-ms 16,64,256,1400,4096 \
  > "$D/gemm-bench.txt" 2> "$D/gemm-bench-stderr.txt"
echo "bench exit $?"; grep -vE "^(q_o|k_v|gate_up|down|lm_head) " "$D/gemm-bench.txt" | grep -v "^---"
grep -iE "error|fallback|DIFFER" "$D/gemm-bench-stderr.txt" | head -10

CH="$D/gemm-bench-triton-choices.json"
if [ -f "$CH" ]; then export GEMM_TRITON_CHOICES="$CH"; echo "tests and sweep use the recorded Triton choices $CH"
else echo "no Triton choices recorded: tests and sweep use the anchor config for every M"; fi

stage "pytest -m gpu tests/test_gemm_gpu.py"
timeout -k 5 120 python3 -m pytest -m gpu -q -p no:cacheprovider -rA --durations=5 -s tests/test_gemm_gpu.py \
  > "$D/gemm-tests.txt" 2>&1
echo "tests exit $?"; grep -E "passed|failed|error|PASSED|FAILED|ERROR|M with differing|slowest|s call" "$D/gemm-tests.txt" | tail -40

stage "python -m probes.gemm --parts sweep"
timeout -k 8 35 python3 -m probes.gemm --parts sweep --json "$D/gemm-sweep.json" \
  > "$D/gemm-sweep.txt" 2> "$D/gemm-sweep-stderr.txt"
echo "sweep exit $?"; cat "$D/gemm-sweep.txt"; grep -iE "error|fallback" "$D/gemm-sweep-stderr.txt" | head -10

stage "python -m probes.gemm --parts algos"
timeout -k 8 30 python3 -m probes.gemm --parts algos --json "$D/gemm-algos.json" --max-configs 64 --runs 5 \
  --enum-seconds 1.0 \
  > "$D/gemm-algos.txt" 2> "$D/gemm-algos-stderr.txt"
echo "algos exit $?"; cat "$D/gemm-algos.txt"; grep -E "^algos|error" "$D/gemm-algos-stderr.txt" | head -30
stage "done"
