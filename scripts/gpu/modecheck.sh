#!/usr/bin/env bash
# GPU part (see scripts/gpu_session.sh): the deterministic mode's faster kernels (issue 14), in one call, ~9 min
# (give it PART_TIMEOUT=560).
# 1. their GPU tests (all of test_invariant_gpu.py): the cuBLASLt no-split matmul (every row over M, the serving property), the tiled attention
#    (a request's bits over 1-63 other requests; tiled vs row kernel printed), fp8mm and the int4 fused/tiles linears;
# 2. the kernel table: python -m probes.invariant.bench --quick (row kernel; tiled with tiles per request (the
#    default), fixed tiles of R = max, and R = 1; vs SDPA; decode, prefill and a chunk next to 15 decodes);
# 3. the serve bench at the prefill-heavy, GPU-bound load of docs/results/h100-2026-12-06: default vs
#    deterministic-tiled (since 2026-12-06b the mode's matmul on a GPU is cuBLASLt with split-K off; with the Triton
#    matmul and the row attention it measured 0.650x there; three modes did not finish in 330 s on 2026-12-06b).
# Arg: output folder. Env: MODECHECK_PARTS (default "tests bench serve"), MODECHECK_SERVE_ARGS replaces the serve
# arguments after --model. The serve's progress lines go to serve-modes-stderr.txt (kept if it is cut).
D=${1:?output folder}
export HF_HUB_OFFLINE=1 DRIFTSCOPE_NO_PROGRESS=1 PYTHONUNBUFFERED=1
export DRIFTSCOPE_MISTRAL_TOKENIZER=${DRIFTSCOPE_MISTRAL_TOKENIZER:-$PWD/.carry/tokenizer.model.v1}
run() { local name=$1; shift; echo "-- $*"; local s=$(date +%s); "$@"; echo "$name exit $? in $(( $(date +%s) - s )) s"; }

PARTS=" ${MODECHECK_PARTS:-tests bench serve} "
for p in $PARTS; do case $p in tests|bench|serve) ;; *) echo "MODECHECK_PARTS: unknown part $p (tests bench serve)"; exit 2;; esac; done
# the whole test_invariant_gpu.py: the row kernel and the tiled one share _split_state_rows since 2026-12-06
[[ $PARTS == *" tests "* ]] && run gpu-tests timeout 240 python3 -m pytest -q -p no:cacheprovider -rfs -s tests/test_invariant_gpu.py \
  "tests/test_llm_mechanisms_gpu.py::test_fp8mm_linear_is_the_scaled_mm_of_the_numerics_quantised_operands" \
  "tests/test_llm_mechanisms_gpu.py::test_fp8_fast_accumulation_changes_a_long_dot_product" \
  "tests/test_llm_mechanisms_gpu.py::test_int4_fused_and_tiles_on_the_gpu" \
  "tests/test_llm_mechanisms_gpu.py::test_int4_quantiser_on_the_gpu_is_the_numerics_one" > "$D/modecheck-tests.txt" 2>&1
[[ $PARTS == *" tests "* ]] && grep -E "differ|passed|failed|Error" "$D/modecheck-tests.txt" | tail -30
[[ $PARTS == *" bench "* ]] && run bench timeout 150 python3 -m probes.invariant.bench --quick 2>&1 | tee "$D/invariant-bench.txt" | tail -30
# shellcheck disable=SC2086
[[ $PARTS == *" serve "* ]] && DRIFTSCOPE_NO_PROGRESS=0 run serve timeout 480 python3 -m llm.serve --device cuda --model mistral-7b-random \
  ${MODECHECK_SERVE_ARGS:---copies 32 --background 64 --prompt-len 512,1536 --max-new-tokens 16 --static= --attribute 0 \
  --bench --bench-repeats 2 --bench-profile --modes default,deterministic-tiled} \
  --json "$D/serve-modes.json" 2> "$D/serve-modes-stderr.txt" | tee "$D/serve-modes.txt"
:   # the part's status is not that of a part left out
