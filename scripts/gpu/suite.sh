#!/usr/bin/env bash
# GPU part (see scripts/gpu_session.sh): the whole suite, cold then warm. Arg: output folder.
# Cold: a fresh empty cache folder, so Triton, Numba, CuPy and the CUDA JIT compile everything as on a new
# machine; warm: each part run again right after, with the cache its cold run filled (--rerun-warm).
# Targets (issue 15): the cold suite under 5 min on a fresh H200, each part's cold run under 60 s.
# The folder ($D/suite: manifest.json with every part's command, exit status, cold and warm times;
# fingerprint.json; reports; plots; index.html) is the bundle for docs/results/<gpu>-<date>/suite.
# Run it alone, with time for both passes: PART_TIMEOUT=560 bash scripts/gpu_session.sh suite
# SUITE_ARGS adds options, e.g. SUITE_ARGS="--parts reduction,fma" or "--args gemm='--parts sweep,bench'".
D=${1:?output folder}
start=$(date +%s)
eval "python3 -m probes.suite --cold --rerun-warm --timeout 300 --out \"$D/suite\" ${SUITE_ARGS:-}"
echo "suite exit $? in $(( $(date +%s) - start )) s"
