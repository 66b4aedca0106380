#!/usr/bin/env bash
# GPU part (see scripts/gpu_session.sh): GEMM gpu tests, then the probe in three runs (bench -> sweep ->
# algos, each with its own JSON so that a timeout loses only the last one). Arg: output folder.
# Budget (PART_TIMEOUT 240 s): tests 65 s, bench 45 s, sweep 55 s, algos 55 s, each bounded by timeout; a probe
# run that hits its bound writes the experiments it finished (SIGTERM handler) and notes it in the report.
D=${1:?output folder}
T0=$(date +%s)
stage() { echo "-- [$(( $(date +%s) - T0 )) s] $*"; }
python3 -c "import probes._C as C; print('gemm build:', C.gemm_build_info())"

stage "pytest -m gpu tests/test_gemm_gpu.py"
timeout -k 5 65 python3 -m pytest -m gpu -q -p no:cacheprovider -rA --durations=5 tests/test_gemm_gpu.py \
  > "$D/gemm-tests.txt" 2>&1
echo "tests exit $?"; grep -E "passed|failed|error|PASSED|FAILED|ERROR|M with differing|slowest|s call" "$D/gemm-tests.txt" | tail -30

stage "python -m probes.gemm --parts bench (Triton vs cuBLAS, bf16)"
timeout -k 8 45 python3 -m probes.gemm --parts bench --json "$D/gemm-bench.json" --bench-ms 16,64,256,1400,4096 \
  > "$D/gemm-bench.txt" 2> "$D/gemm-bench-stderr.txt"
echo "bench exit $?"; cat "$D/gemm-bench.txt"; grep -iE "error|fallback" "$D/gemm-bench-stderr.txt" | head -10

CH="$D/gemm-bench-triton-choices.json"
[ -f "$CH" ] && export GEMM_TRITON_CHOICES="$CH" && echo "sweep uses the measured Triton choices $CH"
stage "python -m probes.gemm --parts sweep"
timeout -k 8 55 python3 -m probes.gemm --parts sweep --json "$D/gemm-sweep.json" \
  > "$D/gemm-sweep.txt" 2> "$D/gemm-sweep-stderr.txt"
echo "sweep exit $?"; cat "$D/gemm-sweep.txt"; grep -iE "error|fallback" "$D/gemm-sweep-stderr.txt" | head -10

stage "python -m probes.gemm --parts algos"
timeout -k 8 55 python3 -m probes.gemm --parts algos --json "$D/gemm-algos.json" --max-configs 64 --runs 5 \
  --enum-seconds 1.0 \
  > "$D/gemm-algos.txt" 2> "$D/gemm-algos-stderr.txt"
echo "algos exit $?"; cat "$D/gemm-algos.txt"; grep -E "^algos|error" "$D/gemm-algos-stderr.txt" | head -30
stage "done"
