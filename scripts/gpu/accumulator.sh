#!/usr/bin/env bash
# GPU part (see scripts/gpu_session.sh): the tensor-core accumulator probe, then its gpu tests.
# Arg: output folder. Prints the detected models, match rates, and the design evidence.
D=${1:?output folder}
echo "-- python -m probes.accumulator --json accumulator.json (cublas, cublas_fast, triton; 100k samples; designs + fit at 317x256x317)"
start=$(date +%s)
timeout 140 python3 -m probes.accumulator --json "$D/accumulator.json" --samples 100000 \
    > "$D/accumulator-table.txt" 2> "$D/accumulator-stderr.txt"
echo "probe exit $? in $(( $(date +%s) - start )) s"
tr '\r' '\n' < "$D/accumulator-stderr.txt" | grep -a -E '^(skip|error|cublas|triton|simulated|Traceback|  File|[A-Za-z]*Error)' | head -60
cat "$D/accumulator-table.txt"
if [ -f "$D/accumulator.json" ]; then
python3 - "$D/accumulator.json" <<'PY'
import json, sys
rep = json.load(open(sys.argv[1]))
g = rep["fingerprint"].get("gpu") or {}
print("fingerprint:", g.get("name"), "cc", g.get("compute_capability"), "wall", rep["config"].get("wall_seconds"))
for e in rep["experiments"]:
    m = e.get("metrics") or {}
    if e["status"] != "ok":
        print(f"{e['key']}: {e['status']}: {e['message']}")
        continue
    print(f"== {e['key']}: {m['model_text']} designs_ok={m['consistent_with_designs']} "
          f"survivors={m['survivors']} ambiguity={m['ambiguity']} match={m['match_rate']:.6f} "
          f"by_kind={m['match_rate_by_row_kind']} max_ulp={m['max_ulp_mismatch']}")
    print(f"   designs' model: {m.get('design_model_text')}; fit at {m.get('shapes_MxKxN', {}).get('fit_and_validation')}"
          f" (rate {m.get('fit', {}).get('rate')}, changed {m.get('fit', {}).get('changed')}), K per slice {m.get('K_per_slice')}")
    if m["design_mismatches"]:
        print("   design mismatches:", m["design_mismatches"][:20])
    for ex in m["mismatch_examples"][:3]:
        print("   mismatch:", ex)
    print("   scale_exp", m["evidence"]["scale_exp"], "skipped designs:", len(m["evidence"]["skipped_designs"]))
    for fam, s in m["evidence"]["family_summary"].items():
        print(f"   {fam}: {s[:400]}")
PY
fi
echo "-- cuBLAS kernels chosen for the design / promotion / validation shapes (split-K shows in the names)"
timeout 25 python3 - <<'PY' 2>&1 | tail -40
import numpy as np, torch
from torch.profiler import profile, ProfilerActivity
from probes.accumulator.backends import Cublas, CublasFast
from probes.probe import Case
shapes = [(64, 64, 64), (256, 512, 256), (317, 256, 317)]
for be in (Cublas("cuda"), CublasFast("cuda")):
    for fmt in be.formats:
        if be.unavailable(Case("cuda", backend=be.name, format=fmt)):
            continue
        for M, K, N in shapes:
            A, B = np.ones((M, K)) * 0.5, np.ones((K, N)) * 0.25
            try:
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    be.matmul(A, B, fmt)
                names = sorted({e.name for e in prof.events() if e.device_type.name == "CUDA"
                                and "copy" not in e.name.lower() and "elementwise" not in e.name.lower()})
                print(f"{be.name}/{fmt} {M}x{K}x{N}: {' | '.join(n[:90] for n in names)}")
            except Exception as e:
                print(f"{be.name}/{fmt} {M}x{K}x{N}: {type(e).__name__}: {str(e)[:200]}")
PY
echo "-- python -m pytest -m gpu tests/test_accumulator_gpu.py"
timeout 75 python3 -m pytest -m gpu -q -s -p no:cacheprovider tests/test_accumulator_gpu.py 2>&1 | tail -60
