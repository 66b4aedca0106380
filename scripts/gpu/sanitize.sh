#!/usr/bin/env bash
# GPU part (see scripts/gpu_session.sh): compute-sanitizer over every csrc kernel's gpu tests (issue 19).
# Arg: output folder. Writes $D/sanitize/sanitize.txt: per tool (memcheck, racecheck, initcheck, synccheck)
# and test selection, the pytest counts and compute-sanitizer's "ERROR SUMMARY", with the commit
# (probes.provenance); each run's full log beside it (<tool>-<selection>.log, the first 400 lines).
# The selections run the extension's kernels (probes._C): reduction (fixed-order, sequential, atomic sums),
# fma (the explicit and plain programs), dequant (int4, Q4_0/Q4_1, fp8 and the scale checks). Torch's and
# Triton's own kernels launched by the same tests are checked too; a report names the kernel, so one in
# csrc/ is told from one of theirs.
# The sanitizer slows kernels 10-100x: SANITIZE_TIMEOUT (s, default 120) bounds each run; a run cut by it is
# recorded as "timeout", not as clean. SANITIZE_TOOLS picks tools (default: all four),
# SANITIZE_ONLY selections by name (e.g. ext,fma; default: all).
# Run it alone: PART_TIMEOUT=580 bash scripts/gpu_session.sh sanitize
D=${1:?output folder}/sanitize
mkdir -p "$D"
SUMMARY="$D/sanitize.txt"
CS=${COMPUTE_SANITIZER:-$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)}
if [ -z "$CS" ]; then echo "compute-sanitizer: not found on this machine" | tee "$SUMMARY"; exit 1; fi
{
  echo "compute-sanitizer over the csrc kernels' gpu tests ($(date -u +%FT%TZ))"
  echo "sanitizer: $CS ($("$CS" --version | tail -1))"
  python3 -c "from probes.provenance import code_summary, identity; print('code:', code_summary(identity()))"
} > "$SUMMARY"

# name|test file|-k expression (empty: the whole file); each launches only or mostly the extension's kernels.
# Timing assertions are left out (the sanitizer slows kernels 10-100x: test_pass1_bandwidth_report failed under it).
SELECTIONS=(
  "ext|tests/test_ext_gpu.py|not bandwidth"
  "reduction|tests/test_reduction_gpu.py|cuda_ext"
  "fma|tests/test_fma_gpu.py|cuda_kernels or cuda_errors"
  "dequant|tests/test_dequant_gpu.py|cuda or refused"
)
one() {  # one tool over one selection; prints its summary line
  local tool=$1 name=$2 file=$3 kexpr=$4 log="$D/$1-$2.log" start rc counts errors
  start=$(date +%s)
  # --report-api-errors no: a failed driver-API call is not a kernel's memory error; cuda-python's
  # cuGetProcAddress probing alone filled memcheck's log with CUDA_ERROR_INVALID_VALUE reports (H100, 2026-12-05).
  timeout -k 5 "${SANITIZE_TIMEOUT:-120}" "$CS" --tool "$tool" --target-processes all --print-limit 20 \
    --report-api-errors no python3 -m pytest -m gpu -q -p no:cacheprovider -rf "$file" ${kexpr:+-k "$kexpr"} \
    > "$log.full" 2>&1
  rc=$?
  counts=$(grep -E "[0-9]+ (passed|failed|skipped|deselected).* in [0-9.]+s" "$log.full" | tail -1)
  errors=$(grep -E "(ERROR|RACECHECK) SUMMARY" "$log.full" | tail -1)
  { head -300 "$log.full"; echo "[...]"; tail -60 "$log.full"; } > "$log"; rm -f "$log.full"
  { [ $rc -eq 124 ] || [ $rc -eq 137 ]; } && errors="timeout after ${SANITIZE_TIMEOUT:-120} s (not clean: unfinished)"
  printf '%-10s %-10s exit %-3s %4ss  %s | %s\n' "$tool" "$name" "$rc" "$(( $(date +%s) - start ))" \
    "${counts:-no pytest summary}" "${errors:-no ERROR SUMMARY line}"
}
# SANITIZE_PARALLEL=1 starts every (tool, selection) run at once (the GPU machine has 16 cores; the runs share
# the GPU, which changes no result here, only the times); the lines are then sorted into the summary.
pids=()
for tool in ${SANITIZE_TOOLS:-memcheck racecheck initcheck synccheck}; do
  for sel in "${SELECTIONS[@]}"; do
    IFS='|' read -r name file kexpr <<< "$sel"
    [ -n "${SANITIZE_ONLY:-}" ] && [[ ",$SANITIZE_ONLY," != *",$name,"* ]] && continue
    if [ "${SANITIZE_PARALLEL:-0}" = 1 ]; then
      one "$tool" "$name" "$file" "$kexpr" > "$D/.line-$tool-$name" & pids+=($!)
    else
      one "$tool" "$name" "$file" "$kexpr" | tee -a "$SUMMARY"
    fi
  done
done
if [ ${#pids[@]} -gt 0 ]; then
  wait "${pids[@]}"
  echo "(the runs were started together: SANITIZE_PARALLEL=1)" >> "$SUMMARY"
  cat "$D"/.line-* | tee -a "$SUMMARY"; rm -f "$D"/.line-*
fi
