"""The reduction probe's kernels on the GPU: every fixed order equals the numerics model bit for bit on
fresh inputs of several sizes (non-powers of two included), and the probe runs end to end."""
import numpy as np
import pytest
import torch

from probes.convert import to_numpy, to_torch
from probes.probe import Case
from probes.reduction.backends import BACKENDS, Input
from probes.reduction.probe import make_input

pytestmark = pytest.mark.gpu

SIZES = [1, 7, 1000, 4097, (1 << 20) + 3, (1 << 24) + 1]
CASES = [("float32", "float32"), ("float16", "float32"), ("float16", "float16"),
         ("bfloat16", "float32"), ("bfloat16", "bfloat16")]


def run_backend(name, strategy, dtype, acc, n, runs=3, seed=11):
    backend = BACKENDS[name]
    reason = backend.unavailable(Case("cuda:0", backend=name, strategy=strategy, dtype="float32",
                                      accumulate="float32", n=1))
    if reason:
        pytest.fail(f"{name} must be available on the GPU machine: {reason}")
    skip = backend.unavailable(Case("cuda:0", backend=name, strategy=strategy, dtype=dtype,
                                    accumulate="float32" if acc == "float32" else "input", n=n))
    if skip:
        pytest.skip(skip)
    x_host = make_input(seed, n, dtype)
    case = Input("cuda:0", dtype, acc, n, to_torch(x_host, "cuda:0"), x_host)
    params = backend.defaults("cuda:0")
    results = torch.zeros(runs, dtype={"float32": torch.float32, "float16": torch.float16,
                                       "bfloat16": torch.bfloat16}[acc], device="cuda:0")
    launch = backend.prepare(strategy, case, params, results)
    for i in range(runs):
        launch(i)
    torch.cuda.synchronize()
    return to_numpy(results), backend, case, params


def bits(a):
    a = np.asarray(a).reshape(-1)
    return a.view({4: np.uint32, 2: np.uint16}[a.dtype.itemsize])


@pytest.mark.parametrize("backend", ["cuda_ext", "cupy", "triton", "numba"])
@pytest.mark.parametrize("dtype,acc", CASES)
@pytest.mark.parametrize("n", SIZES)
def test_fixed_order_equals_model_bit_for_bit(backend, dtype, acc, n):
    values, b, case, params = run_backend(backend, "fixed", dtype, acc, n)
    model = b.model("fixed", case, params)
    assert (bits(values) == bits(model)[0]).all(), (values, model)


@pytest.mark.parametrize("dtype,acc", CASES)
def test_sequential_equals_model(dtype, acc):
    values, b, case, params = run_backend("cuda_ext", "sequential", dtype, acc, 4097)
    assert (bits(values) == bits(b.model("sequential", case, params))[0]).all()


@pytest.mark.parametrize("backend", ["cuda_ext", "cupy", "triton", "numba"])
def test_atomic_is_close_to_exact(backend):
    from numerics import exact

    values, _, case, _ = run_backend(backend, "atomic", "float32", "float32", (1 << 20) + 3, runs=20)
    exact_value = float(exact.exact_sum(case.x_host))
    assert np.all(np.abs(values.astype(np.float64) - exact_value) < 1e-3 * max(1.0, abs(exact_value)))


def test_probe_end_to_end_on_gpu(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, "-m", "probes.reduction", "--device", "cuda", "--sizes", "4097,65537",
                           "--runs", "10", "--json", str(out), "--no-plot"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    from probes import report as reports

    rep = reports.load_report(out)
    ok = [e for e in rep["experiments"] if e["status"] == "ok"]
    assert any(e["params"]["backend"] == "cupy" for e in ok)
    for e in ok:
        if e["params"]["strategy"] == "fixed" and "special" not in e["inputs"]:
            assert e["metrics"]["distinct"] == 1 and e["metrics"]["matches_model"], e["key"]
