"""numerics.attention and numerics.rowops, the models of probes.invariant's kernels: the orders they claim
(against slow references written from docs/reduction-orders.md), and that they compute what they
model (attention, mean, softmax) to float32 accuracy."""
import ml_dtypes
import numpy as np
import pytest

from numerics import attention as A
from numerics import rowops
from numerics.orders import halving_tree_reduce

F32 = np.float32


def _bits(a):
    a = np.asarray(a)
    return a.view({4: np.uint32, 2: np.uint16}[a.dtype.itemsize])


def test_k_order_dot_is_the_k_ordered_float32_sum():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 7)).astype(F32)
    b = rng.standard_normal((7, 5)).astype(F32)
    d = rng.standard_normal((3, 5)).astype(F32)
    got = A.k_order_dot(a, b, d)
    for i in range(3):
        for j in range(5):
            s = F32(0)
            for k in range(7):
                s = F32(s + F32(a[i, k] * b[k, j]))
            assert _bits(got[i, j]) == _bits(F32(s + d[i, j]))
    # 16-bit operands: the products are exact in float32
    a16 = a.astype(ml_dtypes.bfloat16)
    exact = (a16.astype(np.float64)[:, :1] * b.astype(ml_dtypes.bfloat16).astype(np.float64)[:1, :]).astype(F32)
    assert np.array_equal(A.k_order_dot(a16[:, :1], b.astype(ml_dtypes.bfloat16)[:1, :]), exact)


def _reference(q, k, v, start, end, scale):
    q, k, v = (np.asarray(t).astype(np.float64) for t in (q, k, v))
    B, Hq, Lq, D = q.shape
    G = Hq // k.shape[1]
    out = np.zeros(q.shape)
    for b in range(B):
        for h in range(Hq):
            for i in range(Lq):
                st, en = int(start[i]), int(end[i])
                if en > st:
                    s = k[b, h // G, st:en] @ q[b, h, i] * scale
                    p = np.exp(s - s.max())
                    out[b, h, i] = p @ v[b, h // G, st:en] / p.sum()
    return out


@pytest.mark.parametrize("split, block_n", [(512, 64), (32, 16), (16, 16)])
def test_attention_model_computes_attention(split, block_n):
    rng = np.random.default_rng(1)
    q = rng.standard_normal((1, 4, 5, 16)).astype(F32)
    k = rng.standard_normal((1, 2, 70, 16)).astype(F32)
    v = rng.standard_normal((1, 2, 70, 16)).astype(F32)
    start = np.array([0, 3, 10, 50, 69])
    end = np.array([70, 40, 11, 70, 69])           # the last row: no key
    got = A.attention(q, k, v, start, end, split=split, block_n=block_n)
    ref = _reference(q, k, v, start, end, 0.25)
    assert np.max(np.abs(got - ref)) < 2e-6
    assert np.all(got[:, :, 4] == 0)


def test_more_splits_is_other_arithmetic_but_close():
    rng = np.random.default_rng(2)
    q = rng.standard_normal((1, 2, 3, 16)).astype(ml_dtypes.bfloat16)
    k = rng.standard_normal((1, 1, 200, 16)).astype(ml_dtypes.bfloat16)
    v = rng.standard_normal((1, 1, 200, 16)).astype(ml_dtypes.bfloat16)
    one = A.attention(q, k, v, 0, 200, split=256, block_n=16)
    four = A.attention(q, k, v, 0, 200, split=64, block_n=16)
    assert not np.array_equal(_bits(one), _bits(four))
    assert np.max(np.abs(one.astype(F32) - four.astype(F32))) < 2 ** -7


def test_combine_of_one_split_is_acc_over_l():
    m, l = np.array([1.5], F32), np.array([3.0], F32)
    acc = np.array([[1.0, -2.0, 0.5]], F32)
    assert np.array_equal(A.combine([(m, l, acc)]), acc / l[:, None])


def test_mask_intervals_by_hand():
    mn = np.finfo(F32).min
    mask = np.full((5, 8), mn, F32)
    mask[0, 2:5] = 0
    mask[1, [1, 3]] = 0                                # not one interval
    mask[2, 4:] = 0
    mask[2, 6] = -1.0                                  # a bias
    mask[3, 7] = -np.inf                               # row 3: -inf and min only: no key
    mask[4, :] = 0
    start, end, unc = A.mask_intervals(mask)
    assert start.tolist() == [2, 1, 4, 0, 0] and end.tolist() == [5, 4, 8, 0, 8]
    assert unc.tolist() == [False, True, True, False, False]
    b = np.zeros((2, 4), bool)
    b[0, 1:3] = True
    s, e, u = A.mask_intervals(b)
    assert s.tolist() == [1, 0] and e.tolist() == [3, 0] and not u.any()
    assert [x.tolist() for x in A.causal_intervals(3, 2)] == [[0, 0, 0], [1, 2, 2]]


def test_row_models_by_the_page_and_close():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((3, 40)) * 3).astype(F32)
    # mean: lane tree (n = 40 -> 64 lanes: lane j = x[j]) / n
    lanes = np.zeros((3, 64), F32)
    lanes[:, :40] = x
    assert np.array_equal(rowops.row_mean(x), halving_tree_reduce(lanes) / F32(40))
    assert np.array_equal(rowops.row_max(x), x.max(1))
    ref = np.exp(x.astype(np.float64) - x.max(1, keepdims=True))
    ref /= ref.sum(1, keepdims=True)
    assert np.max(np.abs(rowops.softmax(x) - ref)) < 1e-6
    assert np.max(np.abs(rowops.log_softmax(x) - np.log(ref))) < 1e-5
    assert rowops.softmax(x.astype(ml_dtypes.bfloat16)).dtype == ml_dtypes.bfloat16
    assert rowops.softmax(x.astype(np.float16), "float32").dtype == F32
    with pytest.raises(ValueError, match="2-D"):
        rowops.row_mean(x[0])
