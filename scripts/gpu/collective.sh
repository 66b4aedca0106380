#!/usr/bin/env bash
# GPU part (see scripts/gpu_session.sh), for a machine with 2 or more GPUs (issue 18): probes.collective under
# torchrun on 2 and 4 GPUs, once per NCCL variant (NCCL_ALGO Ring/Tree x NCCL_PROTO LL/LL128/Simple, and NCCL's
# own choice: NCCL reads them when the communicator is made, so one launch each), then tensor parallelism
# (llm.tp: Mistral-7B shape, seeded weights, bf16 and fp32, TP=2 and TP=4 vs TP=1, native and fixed-order
# all-reduce; bf16 under llm.deterministic() with the fixed order). NVLink multicast stays off (NCCL_NVLS_ENABLE=0; probes.collective.dist sets it too).
# Arg: output folder. On a machine with fewer than 2 GPUs it says so and exits 0 (the default session runs it).
# Env: COLLECTIVE_NP (default "2 4", capped by the GPU count), COLLECTIVE_PARTS (default "probe tp").
# Expected: ~30 s per probe launch (14 launches on 4 GPUs) and ~2 min per TP launch: more than the session's
# default PART_TIMEOUT of 240 s; run it alone (PART_TIMEOUT=1200 bash scripts/gpu_session.sh collective) or in
# pieces under the device tool's 10-minute limit: COLLECTIVE_NP=2 COLLECTIVE_PARTS=probe, then =tp, then NP=4.
# Not with PARALLEL_PARTS=1: it uses every GPU and times the collectives.
D=${1:?output folder}
export NCCL_NVLS_ENABLE=0 HF_HUB_OFFLINE=1 DRIFTSCOPE_NO_PROGRESS=1 OMP_NUM_THREADS=4
export DRIFTSCOPE_MISTRAL_TOKENIZER=${DRIFTSCOPE_MISTRAL_TOKENIZER:-$PWD/.carry/tokenizer.model.v1}
export DRIFTSCOPE_ALLOW_BYTE_TOKENIZER=1
NGPU=$(nvidia-smi -L 2>/dev/null | grep -c "^GPU")
echo "GPUs: $NGPU"
if [ "$NGPU" -lt 2 ]; then
  echo "collective: skipped, $NGPU GPU(s) here (needs 2 or more)"; exit 0
fi
nvidia-smi topo -m > "$D/topo.txt" 2>&1; head -8 "$D/topo.txt"
python3 -c "import torch; print('torch', torch.__version__, 'nccl', torch.cuda.nccl.version())"
NPS=""
for np in ${COLLECTIVE_NP:-2 4}; do [ "$np" -le "$NGPU" ] && NPS="$NPS $np"; done
PARTS=${COLLECTIVE_PARTS:-probe tp}

if [[ " $PARTS " == *" probe "* ]]; then
  for np in $NPS; do
    for variant in default-default Ring-LL Ring-LL128 Ring-Simple Tree-LL Tree-LL128 Tree-Simple; do
      algo=${variant%-*}; proto=${variant#*-}
      name="collective-np$np-$variant"
      echo "-- NCCL_ALGO=$algo NCCL_PROTO=$proto torchrun --nproc-per-node $np -m probes.collective --json $name.json"
      start=$(date +%s)
      ( [ "$algo" = default ] || export NCCL_ALGO=$algo NCCL_PROTO=$proto
        timeout 180 torchrun --standalone --nproc-per-node "$np" -m probes.collective --device cuda \
          --json "$D/$name.json" --no-plot > "$D/$name.txt" 2> "$D/$name-stderr.txt" )
      echo "exit $? in $(( $(date +%s) - start )) s"
      grep -E "^nccl|/(all_reduce|fixed_order)/" "$D/$name.txt" | head -14
      grep -iE "error|warn" "$D/$name-stderr.txt" | grep -v FutureWarning | tail -3
    done
  done
  # two variants side by side (same world size): does the algorithm change the bits?
  for np in $NPS; do
    [ -f "$D/collective-np$np-Ring-Simple.json" ] && [ -f "$D/collective-np$np-Tree-Simple.json" ] && \
      python3 -m probes.compare "$D/collective-np$np-Ring-Simple.json" "$D/collective-np$np-Tree-Simple.json" \
        > "$D/compare-np$np-ring-vs-tree.txt" 2>&1; tail -5 "$D/compare-np$np-ring-vs-tree.txt" 2>/dev/null
  done
fi

if [[ " $PARTS " == *" tp "* ]]; then
  for np in $NPS; do
    for dtype in bfloat16 float32; do
      name="tp-np$np-$dtype"
      echo "-- torchrun --nproc-per-node $np -m llm.tp --model mistral-7b-random --dtype $dtype --json $name.json"
      start=$(date +%s)
      timeout 400 torchrun --standalone --nproc-per-node "$np" -m llm.tp --device cuda --model mistral-7b-random \
        --dtype "$dtype" --runs 5 --gen-steps 16 --json "$D/$name.json" > "$D/$name.txt" 2> "$D/$name-stderr.txt"
      echo "exit $? in $(( $(date +%s) - start )) s"
      cat "$D/$name.txt"; grep -iE "error" "$D/$name-stderr.txt" | tail -3
    done
  done
  # the deterministic mode of the serving issue with the fixed-order all-reduce: TP=W must repeat its bits
  for np in $NPS; do
    name="tp-np$np-bfloat16-deterministic"
    echo "-- torchrun --nproc-per-node $np -m llm.tp --dtype bfloat16 --deterministic --allreduce fixed --json $name.json"
    start=$(date +%s)
    timeout 400 torchrun --standalone --nproc-per-node "$np" -m llm.tp --device cuda --model mistral-7b-random \
      --dtype bfloat16 --deterministic --allreduce fixed --runs 5 --gen-steps 16 --json "$D/$name.json" \
      > "$D/$name.txt" 2> "$D/$name-stderr.txt"
    echo "exit $? in $(( $(date +%s) - start )) s"
    cat "$D/$name.txt"; grep -iE "error" "$D/$name-stderr.txt" | tail -3
  done
  # TP=2 vs TP=1 attributed to ops (emulated TP in one process, the same kernels at the same shapes)
  echo "-- python -m llm.attribute --reference dtype=bfloat16 --variant dtype=bfloat16,tp=2 (emulated)"
  start=$(date +%s)
  timeout 300 python3 -m llm.attribute --device cuda --model mistral-7b-random --reference "dtype=bfloat16" \
    --variant "dtype=bfloat16,tp=2" --units layer,class --gen-steps 16 --json "$D/attribute-tp2-bf16.json" \
    > "$D/attribute-tp2-bf16.txt" 2> "$D/attribute-tp2-bf16-stderr.txt"
  echo "exit $? in $(( $(date +%s) - start )) s"
  head -40 "$D/attribute-tp2-bf16.txt"
fi
