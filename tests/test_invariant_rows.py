"""probes.invariant's row kernels (mean, softmax, log-softmax) in Triton's interpreter: bit for bit against
numerics.rowops, invariant to the other rows, close to torch, bad input refused naming the argument."""
import os

import numpy as np
import pytest
import torch

from numerics import rowops
from numerics.orders import lane_block, lane_tree_sum
from probes.convert import to_numpy
from probes.errors import DriftscopeError

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET", "0") in ("", "0"),
                                reason="GPU machine: tests/test_invariant_gpu.py runs the kernels there")

from probes.invariant import log_softmax, row_mean, softmax  # noqa: E402

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def bits(t):
    a = to_numpy(t) if isinstance(t, torch.Tensor) else np.asarray(t)
    return a.view({4: np.uint32, 2: np.uint16}[a.dtype.itemsize])


def same_bits(a, b):
    return a.shape == b.shape and np.array_equal(bits(a), bits(b))


def rand(shape, dtype, seed, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * scale).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 16, 100, 1500])
def test_kernels_equal_their_models_bit_for_bit(dtype, n):
    x = rand((4, n), dtype, n)
    xn = to_numpy(x)
    assert same_bits(row_mean(x, -1), rowops.row_mean(xn))
    assert same_bits(softmax(x, -1), rowops.softmax(xn))
    assert same_bits(log_softmax(x, -1), rowops.log_softmax(xn))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_to_float_and_mean_dtype(dtype):
    x = rand((3, 50), dtype, 5)
    xn = to_numpy(x)
    s = softmax(x, 1, half_to_float=True)
    assert s.dtype == torch.float32 and same_bits(s, rowops.softmax(xn, "float32"))
    ls = log_softmax(x, 1, True)
    assert ls.dtype == torch.float32 and same_bits(ls, rowops.log_softmax(xn, "float32"))
    m = row_mean(x, [1], dtype=torch.float32)
    assert m.dtype == torch.float32 and same_bits(m, rowops.row_mean(xn, "float32"))


def test_row_bits_do_not_depend_on_the_other_rows():
    """Row 0 alone, among 2, 7 or 20 rows, or as the last row: the same bits (one program per row, an
    order that depends on n only)."""
    x = rand((20, 300), torch.bfloat16, 11)
    probe = x[:1]
    ref = {"mean": row_mean(probe, -1), "soft": softmax(probe, -1), "log": log_softmax(probe, -1)}
    for rows in (x[:2], x[:7], x, torch.cat([x[5:9], probe])):
        at = 0 if rows.data_ptr() == x.data_ptr() else rows.shape[0] - 1
        assert same_bits(row_mean(rows, -1)[at:at + 1], ref["mean"])
        assert same_bits(softmax(rows, -1)[at:at + 1], ref["soft"])
        assert same_bits(log_softmax(rows, -1)[at:at + 1], ref["log"])


def test_rmsnorm_pattern_over_tokens():
    """hidden.float().pow(2).mean(-1, keepdim=True) of a [batch, tokens, hidden] tensor: a token's
    variance is the same whatever the batch and its position."""
    h = rand((3, 5, 64), torch.bfloat16, 2, 1.0)
    var = row_mean(h.float().pow(2), [-1], keepdim=True)
    assert var.shape == (3, 5, 1) and var.dtype == torch.float32
    alone = row_mean(h[2, 3:4].float().pow(2), [-1], keepdim=True)
    assert same_bits(var[2, 3], alone[0])
    assert torch.allclose(var, h.float().pow(2).mean(-1, keepdim=True), rtol=1e-6, atol=0)


@pytest.mark.parametrize("dims, keepdim", [(None, False), ([0, 2], True), ([1], False), ((2, 0), False),
                                           ([], True)])
def test_mean_over_dims_like_torch(dims, keepdim):
    x = rand((3, 4, 5), torch.float32, 3)
    got = row_mean(x, dims, keepdim)
    want = x.mean(dim=dims if dims is not None else None, keepdim=keepdim) if dims is not None \
        else x.mean()
    assert got.shape == want.shape
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-7)
    # the model of the same rows: the reduced dims moved last
    red = sorted(d % 3 for d in (dims if dims else range(3)))
    keep = [d for d in range(3) if d not in red]
    rows = to_numpy(x.permute(*keep, *red).reshape(-1, int(np.prod([x.shape[d] for d in red]))))
    assert np.array_equal(bits(got).reshape(-1), bits(rowops.row_mean(rows)))


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_along_any_dim_close_to_torch(dim):
    x = rand((3, 4, 9), torch.float32, 4)
    assert torch.allclose(softmax(x, dim), torch.softmax(x, dim), rtol=1e-5, atol=1e-7)
    assert torch.allclose(log_softmax(x, dim), torch.log_softmax(x, dim), rtol=1e-5, atol=1e-6)
    xb = x.to(torch.bfloat16)
    assert torch.allclose(softmax(xb, dim).float(), torch.softmax(xb.float(), dim), rtol=2 ** -7, atol=1e-6)


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_edge_values_and_shapes():
    x = torch.tensor([[0.0, float("-inf"), 1.0], [float("-inf")] * 3, [5.0, 5.0, 5.0]])
    s = softmax(x, -1)
    assert torch.equal(s[0], torch.softmax(x[0], -1)) or torch.allclose(s[0], torch.softmax(x[0], -1))
    assert torch.isnan(s[1]).all()                       # all -inf: NaN, as torch gives
    assert torch.equal(s[2], torch.full((3,), 1 / 3))
    assert softmax(torch.tensor(2.0), 0).item() == 1.0   # 0-d
    assert row_mean(torch.tensor(3.0)).item() == 3.0
    assert softmax(torch.empty(0, 4), -1).shape == (0, 4)
    assert row_mean(torch.empty(0, 4), [1]).shape == (0,)


def test_model_lane_order_by_hand():
    # n = 20 -> 32 lanes: lane j holds x[j] (j < 20) or +0, then the halving tree.
    assert lane_block(20) == 32 and lane_block(1) == 16 and lane_block(5000) == 1024
    x = np.zeros(20, np.float32)
    x[0], x[16] = 2.0 ** 24, 1.0                       # tree: lane 0 + lane 16 = 2^24 + 1 -> 2^24
    x[1], x[17] = 1.0, 1.0                             # lane 1 + lane 17 = 2, then 2^24 + 2 exact
    assert lane_tree_sum(x) == 2.0 ** 24 + 2           # sequential would give 2^24 (+1 +1 lost)
    # n = 2048 -> 1024 lanes, two per lane: lane j = x[j] + x[j + 1024]
    y = np.zeros(2048, np.float32)
    y[3], y[1027] = 2.0 ** 24, 1.0
    assert lane_tree_sum(y) == 2.0 ** 24


@pytest.mark.parametrize("call, msg", [
    (lambda: row_mean([1.0, 2.0]), "x: must be a torch.Tensor"),
    (lambda: row_mean(torch.ones(3, dtype=torch.int32)), "x: dtype"),
    (lambda: row_mean(torch.ones(3, 4), [2]), "dims: 2 is out of range"),
    (lambda: row_mean(torch.ones(3, 4), [1, -1]), "dims: [1, -1] names a dim twice"),
    (lambda: row_mean(torch.ones(3, 4), [1], dtype=torch.int64), "dtype: must be"),
    (lambda: row_mean(torch.ones(3, 0), [1]), "x: empty reduction"),
    (lambda: softmax(torch.ones(3, 4), 2), "dim: 2 is out of range"),
    (lambda: softmax(torch.ones(3, 4), 1.5), "dim: must be an int"),
    (lambda: log_softmax(torch.ones(3, 4), 1, True), "half_to_float"),
])
def test_bad_input_names_the_argument(call, msg):
    with pytest.raises(DriftscopeError) as e:
        call()
    assert msg in str(e.value)
