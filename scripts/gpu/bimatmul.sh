#!/usr/bin/env bash
# GPU part (see scripts/gpu_session.sh, which builds the extension the cuBLASLt part needs): issue 14's
# batch-invariant matmul check in one run, `python -m probes.gemm.bimatmul`:
#   GPU tests of the matmul, then for every Mistral shape and M in 1..4096 the Triton matmul as shipped
#   (batch_invariant_matmul(x, w), no GEMM_TRITON_CHOICES) vs cuBLAS, cold and as CUDA-graph kernel time,
#   and cuBLASLt without split-K (row-0 invariance over the sweep, speed). ~3-5 minutes on an H200.
# Arg: output folder (default $OUT, else ./out). Env BIMATMUL_ARGS: extra arguments, e.g. "--quick" (a few
# M), "--shapes q_o,k_v", "--tune" (first re-tune the tables; writes bimatmul-choices.json to ship).
# Run: PART_TIMEOUT=560 bash scripts/gpu_session.sh bimatmul     (or, with probes._C built: bash scripts/gpu/bimatmul.sh)
D=${1:-${OUT:-out}}
mkdir -p "$D"
unset GEMM_TRITON_CHOICES   # measure the shipped tables, as a user gets them
export PYTHONUNBUFFERED=1
python3 -c "import probes._C as C; print('gemm build:', C.gemm_build_info())" \
  || echo "probes._C is not built: the cuBLASLt part will record an error (bash scripts/gpu_session.sh builds it)"
# shellcheck disable=SC2086
timeout -k 10 "${BIMATMUL_TIMEOUT:-530}" python3 -m probes.gemm.bimatmul --out "$D" ${BIMATMUL_ARGS:-} \
  2> >(tee "$D/bimatmul-stderr.txt" >&2)
echo "bimatmul exit $?"
