#!/usr/bin/env bash
# GPU part (see scripts/gpu_session.sh): MoE routing under batching (issue 16, docs/moe.md). The MoE CPU tests on
# the GPU, then python -m probes.moe on the Mixtral-8x7B shape with seeded weights (routing alone, arithmetic
# alone, both, per batch size 1..64 and layer; bf16 vs fp32 router; near ties), then llm.serve's distinct
# completions of one prompt amid seeded traffic: routing alone (--router, deterministic mode), both (--router,
# default mode) and arithmetic alone (no --router, default mode).
# Arg: output folder. Env: MOE_PARTS (default "tests probe serve-router serve-arith"; run one or two per session:
# a device command has 10 minutes), MOE_LAYERS (decoder layers of mixtral-8x7b-random; default all 32 where the
# GPU has >= 120 GB, else 16 (~46 GB): the full shape is ~94 GB in bf16, an H200 holds it, an H100 does not),
# MOE_ROUTER (serve's capacity rule, default capacity:1.25:drop), MOE_COPIES (default 200), MOE_GEN (probe's
# greedy tokens, default 8). Times on the full shape are not measured yet. Needs .carry/tokenizer.model.v1
# (Mixtral uses Mistral-7B-v0.1's tokenizer). Give the part PART_TIMEOUT=560.
D=${1:?output folder}
export HF_HUB_OFFLINE=1 DRIFTSCOPE_NO_PROGRESS=0
export DRIFTSCOPE_MISTRAL_TOKENIZER=${DRIFTSCOPE_MISTRAL_TOKENIZER:-$PWD/.carry/tokenizer.model.v1}
export DRIFTSCOPE_ALLOW_BYTE_TOKENIZER=1      # without the file: UTF-8 bytes, said on stderr
PARTS=${MOE_PARTS:-tests probe serve-router serve-arith}
MEM=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
LAYERS=${MOE_LAYERS:-$([ "${MEM:-0}" -ge 120000 ] && echo 32 || echo 16)}
MODEL=mixtral-8x7b-random:$LAYERS
ROUTER=${MOE_ROUTER:-capacity:1.25:drop}
N=${MOE_COPIES:-200}
GEN=${MOE_GEN:-8}
echo "GPU memory ${MEM} MiB: model $MODEL (full shape: 32 layers)"
run() { local name=$1; shift; echo "-- $*"; local s=$(date +%s); "$@"; echo "$name exit $? in $(( $(date +%s) - s )) s"; }

if [[ " $PARTS " == *" tests "* ]]; then
  run moe-tests python3 -m pytest -q -p no:cacheprovider tests/test_moe_routing.py tests/test_moe_model.py \
    tests/test_moe_probe.py tests/test_moe_serve.py 2>&1 | tail -15
fi
if [[ " $PARTS " == *" probe "* ]]; then
  run moe-probe python3 -m probes.moe --device cuda --model "$MODEL" --gen-steps "$GEN" \
    --json "$D/moe-$LAYERS.json" 2> "$D/moe-stderr.txt" | tee "$D/moe-$LAYERS.txt"
  grep -v "^moe " "$D/moe-stderr.txt" | tail -8
fi
if [[ " $PARTS " == *" serve-router "* ]]; then
  # deterministic mode + capacity = routing alone; default mode + capacity = both
  run serve-router python3 -m llm.serve --device cuda --model "$MODEL" --router "$ROUTER" --copies "$N" \
    --max-new-tokens 16 --attribute 0 --json "$D/serve-router.json" 2> "$D/serve-router-stderr.txt" \
    | tee "$D/serve-router.txt"
  grep -v "^serve " "$D/serve-router-stderr.txt" | tail -8
fi
if [[ " $PARTS " == *" serve-arith "* ]]; then
  # no capacity, the shipped kernels: arithmetic alone
  run serve-arith python3 -m llm.serve --device cuda --model "$MODEL" --modes default --copies "$N" \
    --max-new-tokens 16 --attribute 1 --json "$D/serve-arith.json" 2> "$D/serve-arith-stderr.txt" \
    | tee "$D/serve-arith.txt"
  grep -v "^serve " "$D/serve-arith-stderr.txt" | tail -8
fi
