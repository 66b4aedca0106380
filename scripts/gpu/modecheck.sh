#!/usr/bin/env bash
# GPU part (see scripts/gpu_session.sh): the deterministic mode's faster kernels (issue 14), in one call, ~6 min.
# 1. their GPU tests (all of test_invariant_gpu.py): the cuBLASLt no-split matmul (every row over M, the serving property), the tiled attention
#    (a request's bits over 1-63 other requests; tiled vs row kernel printed), fp8mm and the int4 fused/tiles linears;
# 2. the kernel table: python -m probes.invariant.bench --quick (row kernel, tiled with R = max and R = 1, vs SDPA);
# 3. the serve bench at the prefill-heavy, GPU-bound load of docs/results/h100-2026-12-06, now with the modes
#    deterministic (Triton matmul, row attention) and deterministic-cublaslt-tiled side by side.
# Arg: output folder. Env: MODECHECK_SERVE_ARGS replaces the serve arguments after --model.
D=${1:?output folder}
export HF_HUB_OFFLINE=1 DRIFTSCOPE_NO_PROGRESS=1 PYTHONUNBUFFERED=1
export DRIFTSCOPE_MISTRAL_TOKENIZER=${DRIFTSCOPE_MISTRAL_TOKENIZER:-$PWD/.carry/tokenizer.model.v1}
run() { local name=$1; shift; echo "-- $*"; local s=$(date +%s); "$@"; echo "$name exit $? in $(( $(date +%s) - s )) s"; }

# the whole test_invariant_gpu.py: the row kernel and the tiled one share _split_state_rows since 2026-12-06
run gpu-tests timeout 240 python3 -m pytest -q -p no:cacheprovider -rfs -s tests/test_invariant_gpu.py \
  "tests/test_llm_mechanisms_gpu.py::test_fp8mm_linear_is_the_scaled_mm_of_the_numerics_quantised_operands" \
  "tests/test_llm_mechanisms_gpu.py::test_fp8_fast_accumulation_changes_a_long_dot_product" \
  "tests/test_llm_mechanisms_gpu.py::test_int4_fused_and_tiles_on_the_gpu" > "$D/modecheck-tests.txt" 2>&1
grep -E "differ|passed|failed|Error" "$D/modecheck-tests.txt" | tail -20
run bench timeout 150 python3 -m probes.invariant.bench --quick 2>&1 | tee "$D/invariant-bench.txt" | tail -30
# shellcheck disable=SC2086
run serve timeout 330 python3 -m llm.serve --device cuda --model mistral-7b-random \
  ${MODECHECK_SERVE_ARGS:---copies 32 --background 64 --prompt-len 512,1536 --max-new-tokens 16 --static= --attribute 0 \
  --bench --bench-repeats 2 --bench-profile --modes default,deterministic,deterministic-cublaslt-tiled} \
  --json "$D/serve-modes.json" 2> "$D/serve-modes-stderr.txt" | tee "$D/serve-modes.txt" | grep -v "^serve "
