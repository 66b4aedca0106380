#!/usr/bin/env bash
# GPU part (see scripts/gpu_session.sh): the handoff kernel alone: its GPU tests (anchor config's bits over
# the sweep, repeated launches), then where its time goes: scripts/diagnostics/gemm_handoff_variants.py
# (variants of the kernel and other candidates, each against cuBLAS in the same run),
# gemm_handoff_timeline.py (%globaltimer per program and segment) and gemm_kernel_times.py (kernel-only
# times from the profiler next to the event-timed ones). Arg: output folder.
D=${1:?output folder}
T0=$(date +%s)
stage() { echo "-- [$(( $(date +%s) - T0 )) s] $*"; }
stage "pytest -m gpu tests/test_gemm_gpu.py -k handoff"
timeout -k 5 150 python3 -m pytest -m gpu -q -p no:cacheprovider -rA -k handoff tests/test_gemm_gpu.py \
  > "$D/gemm-handoff-tests.txt" 2>&1
echo "tests exit $?"; grep -E "passed|failed|error|PASSED|FAILED|ERROR" "$D/gemm-handoff-tests.txt" | tail -20
stage "scripts/diagnostics/gemm_handoff_variants.py"
timeout -k 5 240 env PYTHONPATH=. python3 scripts/diagnostics/gemm_handoff_variants.py "$D/gemm-handoff-variants.json" \
  2>&1 | tee "$D/gemm-handoff-variants.txt"
stage "scripts/diagnostics/gemm_handoff_timeline.py"
timeout -k 5 120 env PYTHONPATH=. python3 scripts/diagnostics/gemm_handoff_timeline.py "$D/gemm-handoff-timeline.json" \
  2>&1 | tee "$D/gemm-handoff-timeline.txt"
stage "scripts/diagnostics/gemm_kernel_times.py"
timeout -k 5 120 env PYTHONPATH=. python3 scripts/diagnostics/gemm_kernel_times.py "$D/gemm-kernel-times.json" \
  2>&1 | grep -v -i warn | tee "$D/gemm-kernel-times.txt"
stage "done"
