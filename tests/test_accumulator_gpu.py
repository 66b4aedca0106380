"""On the GPU: for each format, detection (designs + the fit at the validation shape) runs and the
detected model reproduces the GPU bit for bit on >= 100,000 random dot products (match rate 1.0
is the goal; a mismatch fails loudly)."""
import pytest

from numerics.matmul import MIXED_FORMATS
from probes.accumulator.backends import FORMATS, Cublas
from probes.accumulator.detect import detect
from probes.accumulator.fit import fit_at_shape
from probes.accumulator.validate import K_VALIDATE, validate
from probes.probe import Case

# cuBLAS for every format with designs here; the probe run in scripts/gpu/accumulator.sh covers
# Triton and the mixed fp8 format (fit only) too.
CASES = [(Cublas, f) for f in FORMATS if f not in MIXED_FORMATS]


@pytest.mark.gpu
@pytest.mark.parametrize("backend_cls, fmt", CASES, ids=lambda x: getattr(x, "name", x))
def test_detected_model_reproduces_the_gpu(backend_cls, fmt):
    be = backend_cls("cuda")
    why = be.unavailable(Case("cuda", backend=be.name, format=fmt))
    if why:
        pytest.skip(why)
    d = detect(be, fmt)
    fit = fit_at_shape(be, fmt, d.model, M=317, N=317, K=K_VALIDATE, seed=0)
    print(f"\n{be.name}/{fmt}: designs {d.model.describe()} consistent={d.consistent} "
          f"design_mismatches={d.mismatches[:6]}; fit {fit['model'].describe()} "
          f"(rate {fit['fit_rate']:.4f}, changed {fit['changed']})")
    v = validate(be, fmt, fit["model"], samples=100_000)
    print(f"  match {v['match_rate']:.6f} by row kind {v['match_rate_by_row_kind']} "
          f"examples {v['mismatch_examples'][:2]}")
    assert v["samples"] >= 100_000
    assert fit["fit_rate"] == 1.0, f"no model reached by the fit reproduces the fit sample"
    assert v["match_rate"] == 1.0
