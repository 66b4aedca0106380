"""Clustering and error metrics of the GEMM probe (CPU)."""
import numpy as np
import pytest
import torch

from numerics import formats
from probes.gemm.cluster import Clusterer, bits, cluster, errors, ulp_distance_torch


def _special_values(dtype, n=4000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n) * np.exp(rng.uniform(-20, 20, n))
    x[:6] = [0.0, -0.0, 1.0, -1.0, 1e-40, -1e-40]
    return torch.tensor(x, dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("dtype,fmt", [(torch.float32, "float32"), (torch.float16, "float16"),
                                       (torch.bfloat16, "bfloat16")])
def test_ulp_distance_matches_numerics(dtype, fmt):
    a, b = _special_values(dtype, seed=1), _special_values(dtype, seed=2)
    got = ulp_distance_torch(a, b).numpy().astype(np.uint64)
    a_np = formats.from_bits(bits(a).numpy().view(np.uint16 if a.element_size() == 2 else np.uint32), fmt)
    b_np = formats.from_bits(bits(b).numpy().view(np.uint16 if b.element_size() == 2 else np.uint32), fmt)
    want = formats.ulp_distance(a_np, b_np, fmt)
    assert np.array_equal(got, want)


def test_ulp_distance_rejects_nan_and_mismatch():
    with pytest.raises(ValueError, match="NaN"):
        ulp_distance_torch(torch.tensor([float("nan")]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="same dtype"):
        ulp_distance_torch(torch.tensor([1.0]), torch.tensor([1.0], dtype=torch.float16))


def test_cluster_groups_by_bits_not_value():
    a = torch.tensor([1.0, 2.0, 0.0])
    b = a.clone()
    c = torch.tensor([1.0, 2.0, -0.0])          # equal as values, different bits
    d = torch.nextafter(a, torch.tensor(3.0))   # one ulp up everywhere
    assert cluster([a, b, c, d, a.clone()]) == [[0, 1, 4], [2], [3]]


def test_cluster_numpy_and_bf16():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    y = x.copy()
    y[1, 2] = np.nextafter(y[1, 2], np.float32(10))
    assert cluster([x, y, x.copy()]) == [[0, 2], [1]]
    t = torch.arange(4, dtype=torch.bfloat16)
    cl = Clusterer()
    assert cl.add(t) == 0 and cl.add(t.clone()) == 0 and cl.add(t + 1) == 1
    assert torch.equal(cl.representative(0).view(torch.bfloat16), t)


def test_errors_known_values():
    ref = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    y = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float32)
    assert errors(y, ref)["max_ulp"] == 0 and errors(y, ref)["rel_error"] == 0.0
    y2 = y.clone()
    y2[2] = torch.nextafter(y2[2], torch.tensor(5.0))  # 4 + 2^-21
    e = errors(y2, ref)
    assert e["max_ulp"] == 1
    assert e["rel_error"] == pytest.approx(2.0 ** -21 / 4)
    yb = torch.tensor([1.0, 2.0, 4.0], dtype=torch.bfloat16)
    assert errors(yb, ref + 2.0 ** -9)["max_ulp"] == 0  # 4 + 2^-9 rounds to 4 in bfloat16
