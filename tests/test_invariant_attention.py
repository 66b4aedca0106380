"""probes.invariant.attention in Triton's interpreter: bit for bit against numerics.attention, a request's
bits independent of what it is packed with (continuous batching's layout), close to torch SDPA, the
mask's uncovered rows counted, bad input refused naming the argument. Small sizes (the interpreter is
slow); split / block_n are made small so that rows reach several KV splits."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from numerics import attention as model
from probes.convert import to_numpy
from probes.errors import DriftscopeError

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET", "0") in ("", "0"),
                                reason="GPU machine: tests/test_invariant_gpu.py runs the kernels there")

from probes.invariant import attention  # noqa: E402
from probes.invariant.packed import Request, pack  # noqa: E402

SMALL = dict(split=32, block_n=16)          # 3 splits at 70 keys
HQ, HK, D = 4, 2, 16


def bits(t):
    a = to_numpy(t) if isinstance(t, torch.Tensor) else np.asarray(t)
    return a.view({4: np.uint32, 2: np.uint16}[a.dtype.itemsize])


def same_bits(a, b):
    return tuple(a.shape) == tuple(b.shape) and np.array_equal(bits(a), bits(b))


def modelled(call, split=SMALL["split"], block_n=SMALL["block_n"], mask=None, is_causal=False):
    """numerics.attention's output for a call's q, k, v and mask."""
    q, k, v = (to_numpy(t) for t in (call.q, call.k, call.v))
    lq, lk = q.shape[2], k.shape[2]
    if mask is not None:
        start, end, _ = model.mask_intervals(to_numpy(mask))
    elif is_causal:
        start, end = model.causal_intervals(lq, lk)
    else:
        start, end = 0, lk
    return model.attention(q, k, v, start, end, split=split, block_n=block_n)


def sdpa(q, k, v, **kw):
    g = q.shape[1] // k.shape[1]
    return F.scaled_dot_product_attention(q.float(), k.float().repeat_interleave(g, 1),
                                          v.float().repeat_interleave(g, 1), **kw)


REQS = [Request(2, 40, 1), Request(1, 70, 2), Request(3, 20, 3)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_packed_call_equals_model_bit_for_bit(dtype):
    call = pack(REQS, hq=HQ, hk=HK, d=D, dtype=dtype)
    r = attention(call.q, call.k, call.v, attn_mask=call.mask, **SMALL)
    assert r.out.dtype == dtype and r.out.shape == call.q.shape
    assert same_bits(r.out, modelled(call, mask=call.mask))
    assert int(r.uncovered) == 0
    # and close to torch's SDPA on the same values (float32 math)
    tol = {torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    assert float((r.out.float() - sdpa(call.q, call.k, call.v, attn_mask=call.mask.float())).abs().max()) < tol


@pytest.mark.parametrize("tiled", [False, True], ids=["rows", "tiled"])
@pytest.mark.parametrize("kind", ["bool", "causal", "none", "per_head", "per_head_rows"])
def test_other_masks_equal_model(kind, tiled):
    """Masks other than the engine's packed one, through the row kernel and the tiled one (tile_rows='auto' cuts
    tiles by head 0's key starts: with per_head_rows the other heads' rows in one tile start at different keys, so
    the tile takes the row-by-row path there)."""
    call = pack([Request(5, 37, 4)], hq=HQ, hk=HK, d=D, dtype=torch.bfloat16, bool_mask=True)
    kw, mask = {"tiled": tiled}, None
    if kind == "bool":
        mask = kw["attn_mask"] = call.mask
    elif kind == "causal":
        kw["is_causal"] = True
    elif kind == "per_head":  # a different window per query head: the G heads of a kv head split up
        lq, lk = call.q.shape[2], call.k.shape[2]
        i, j = torch.arange(lq)[:, None], torch.arange(lk)[None, :]
        mask = torch.stack([(j <= lk - lq + i) & (j >= 3 * h) for h in range(HQ)])[None]
        kw["attn_mask"] = mask
    elif kind == "per_head_rows":  # head 0: one start for every row; the others: row i starts at key 2 i
        lq, lk = call.q.shape[2], call.k.shape[2]
        i, j = torch.arange(lq)[:, None], torch.arange(lk)[None, :]
        mask = torch.stack([(j <= lk - lq + i) & (j >= (2 * i if h else 0)) for h in range(HQ)])[None]
        kw["attn_mask"] = mask
    r = attention(call.q, call.k, call.v, **kw, **SMALL)
    assert same_bits(r.out, modelled(call, mask=mask, is_causal=kind == "causal"))
    kw.pop("tiled")
    ref = sdpa(call.q, call.k, call.v, **kw)
    assert float((r.out.float() - ref).abs().max()) < 1.6e-2


def test_is_causal_is_top_left_as_in_torch():
    """torch's is_causal with Lq < Lk: query i sees keys 0..i (not the last Lq keys)."""
    call = pack([Request(3, 20, 5)], hq=HQ, hk=HK, d=D, dtype=torch.float32)
    r = attention(call.q, call.k, call.v, is_causal=True, **SMALL)
    assert torch.allclose(r.out, sdpa(call.q, call.k, call.v, is_causal=True), rtol=0, atol=2e-6)


def _probe_rows(probe, others, at, dtype=torch.bfloat16, tiled=False, **kw):
    reqs = list(others)
    reqs.insert(at, probe)
    call = pack(reqs, hq=HQ, hk=HK, d=D, dtype=dtype, **kw)
    r = attention(call.q, call.k, call.v, attn_mask=call.mask, tiled=tiled, **SMALL)
    qo = call.q_offsets[at]
    return r.out[:, :, qo:qo + probe.q_len]


def test_request_bits_do_not_depend_on_the_batch():
    """The continuous-batching layout: a request's output alone, packed first / in the middle / last among
    requests of other lengths (its keys at another offset of Lk, its rows at another offset of Lq), with
    other numbers of requests, next to rows with more KV splits than its own, with padded rows and keys:
    always the same bits."""
    probe = Request(2, 45, 7)                              # 2 splits of 32
    alone = _probe_rows(probe, [], 0)
    longer = Request(1, 100, 8)                            # 4 splits
    layouts = [([Request(3, 20, 9), longer], 0), ([Request(3, 20, 9), longer], 1), ([longer], 1),
               ([Request(1, 5, 10), Request(2, 31, 11), Request(1, 9, 12), longer], 3)]
    for others, at in layouts:
        assert same_bits(_probe_rows(probe, others, at), alone), (others, at)
    assert same_bits(_probe_rows(probe, [Request(1, 3, 13)], 1, pad_q=3, pad_k=17), alone)


def test_decode_row_bits_do_not_depend_on_the_batch():
    """Decode: one new token per request (Lq = number of requests)."""
    probe = Request(1, 33, 14)
    alone = _probe_rows(probe, [], 0, dtype=torch.float16)
    others = [Request(1, 60 + 7 * i, 20 + i) for i in range(5)]
    assert same_bits(_probe_rows(probe, others, 2, dtype=torch.float16), alone)


# ---- the tiled split kernel (attention(..., tiled=True)): R query rows a program -----------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tiled_kernel_equals_the_model_bit_for_bit(dtype):
    """The packed call (three requests) and the other masks: numerics.attention's bits, as the row kernel gives,
    with tiles per request (tile_rows='auto', the default: every tile takes the shared-block path) and with fixed
    tiles of 32 rows (tiles on request boundaries take the row-by-row path)."""
    call = pack(REQS, hq=HQ, hk=HK, d=D, dtype=dtype)
    for rows in ("auto", 32):
        r = attention(call.q, call.k, call.v, attn_mask=call.mask, tiled=True, tile_rows=rows, **SMALL)
        assert same_bits(r.out, modelled(call, mask=call.mask)) and int(r.uncovered) == 0, rows
    one = pack([Request(40, 70, 4)], hq=HQ, hk=HK, d=D, dtype=dtype, bool_mask=True)   # a 40-row prefill: 2 tiles
    for kw, mask, causal in (({"attn_mask": one.mask}, one.mask, False), ({"is_causal": True}, None, True),
                             ({}, None, False)):
        r = attention(one.q, one.k, one.v, tiled=True, **kw, **SMALL)
        assert same_bits(r.out, modelled(one, mask=mask, is_causal=causal)), kw.keys()


def test_tiled_rows_a_program_change_nothing_in_the_bits():
    """tile_rows is scheduling: 1, 3, the most rows a program (32 here) and 'auto' give the same bits; a bad value
    is refused naming the argument."""
    call = pack(REQS + [Request(37, 45, 21)], hq=HQ, hk=HK, d=D, dtype=torch.bfloat16)
    outs = [attention(call.q, call.k, call.v, attn_mask=call.mask, tiled=True, tile_rows=r, **SMALL).out
            for r in (1, 3, 32, "auto")]
    assert all(same_bits(outs[0], o) for o in outs[1:])
    for bad in (33, 0, True, "all"):
        with pytest.raises(DriftscopeError, match="tile_rows: must be 'auto' or an int in 1..32"):
            attention(call.q, call.k, call.v, attn_mask=call.mask, tiled=True, tile_rows=bad, **SMALL)


def test_tile_heads_cut_each_request_into_tiles_of_its_own():
    """tile_rows='auto': a tile never holds rows of two runs of equal start (two requests), and a run longer than
    R rows is cut every R rows from its first row; worked by hand for R = 3."""
    from probes.invariant.attention import tile_heads
    start = torch.tensor([[0, 0, 0, 0, 0, 7, 9, 9, 12, 0, 0]], dtype=torch.int32)
    got = tile_heads(start, (11, 1), 1, 11, 3)
    assert got.tolist() == [[0, 0, 0, 3, 3, 5, 6, 6, 8, 9, 9]]
    assert tile_heads(start[:, :1], (0, 0), 2, 5, 2).tolist() == [[0, 0, 2, 2, 4]] * 2   # one start for all rows


def test_tiled_request_bits_do_not_depend_on_the_batch():
    """As test_request_bits_do_not_depend_on_the_batch, with the tiled kernel: a 37-row prefill (a tile of 32 rows
    and a tail) alone, after other requests (its rows at another offset, sharing tiles with theirs), and the same
    bits as the row kernel gives."""
    probe = Request(37, 45, 7)
    alone = _probe_rows(probe, [], 0, tiled=True)
    assert same_bits(alone, _probe_rows(probe, [], 0))
    longer = Request(5, 100, 8)
    for others, at in (([Request(3, 20, 9), longer], 1), ([longer], 1), ([Request(1, 5, 10), longer], 0)):
        assert same_bits(_probe_rows(probe, others, at, tiled=True), alone), (others, at)
    decode = Request(1, 33, 14)
    d_alone = _probe_rows(decode, [], 0, dtype=torch.float16, tiled=True)
    others = [Request(1, 60 + 7 * i, 20 + i) for i in range(5)]
    assert same_bits(_probe_rows(decode, others, 2, dtype=torch.float16, tiled=True), d_alone)


def test_row_in_another_batch_entry_same_bits():
    """B = 2: batch entry 1 holds the probe; its bits equal the B = 1 call."""
    a = pack([Request(2, 30, 15)], hq=HQ, hk=HK, d=D, dtype=torch.bfloat16)
    b = pack([Request(2, 30, 16)], hq=HQ, hk=HK, d=D, dtype=torch.bfloat16)
    q, k, v, m = (torch.cat([getattr(b, f), getattr(a, f)]) for f in ("q", "k", "v", "mask"))
    both = attention(q, k, v, attn_mask=m, **SMALL).out
    assert same_bits(both[1:], attention(a.q, a.k, a.v, attn_mask=a.mask, **SMALL).out)


def test_strided_inputs_and_scale():
    """q, k, v as transposed views of [B, L, H, D] buffers (the models' layout before SDPA), another scale:
    the same bits as contiguous copies, and the model's."""
    call = pack([Request(3, 35, 19)], hq=HQ, hk=HK, d=D, dtype=torch.float16)
    q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (call.q, call.k, call.v))
    assert not q.is_contiguous()
    a = attention(q, k, v, attn_mask=call.mask, scale=0.3, **SMALL).out
    assert same_bits(a, attention(call.q, call.k, call.v, attn_mask=call.mask, scale=0.3, **SMALL).out)
    start, end, _ = model.mask_intervals(to_numpy(call.mask))
    ref = model.attention(*(to_numpy(t) for t in (call.q, call.k, call.v)), start, end, scale=0.3, **SMALL)
    assert same_bits(a, ref)


def test_split_count_is_the_rows_own():
    """A row with 70 keys takes 3 splits of 32 (the model with split 32), not one: 1 and 3 splits are
    different arithmetic, so the count must come from the row alone (the invariance test above)."""
    call = pack([Request(1, 70, 17)], hq=HQ, hk=HK, d=D, dtype=torch.bfloat16)
    out = attention(call.q, call.k, call.v, attn_mask=call.mask, **SMALL).out
    assert same_bits(out, modelled(call, mask=call.mask))
    one_split = modelled(call, split=128, mask=call.mask)
    assert not np.array_equal(bits(out), bits(one_split))
    # which program computes a split is scheduling only: one program per row taking all 3 in turn
    for programs in (1, 2):
        again = attention(call.q, call.k, call.v, attn_mask=call.mask, split_programs=programs, **SMALL).out
        assert same_bits(again, out)


def test_noncontiguous_mask_slice_like_the_engine():
    """The engine passes mask_buffer[..., :Lq, :Lk] of a larger preallocated buffer."""
    call = pack(REQS, hq=HQ, hk=HK, d=D, dtype=torch.bfloat16)
    lq, lk = call.mask.shape[-2:]
    buf = torch.full((1, 1, lq + 5, lk + 30), torch.finfo(torch.bfloat16).min, dtype=torch.bfloat16)
    buf[..., :lq, :lk] = call.mask
    sliced = buf[..., :lq, :lk]
    assert not sliced.is_contiguous()
    a = attention(call.q, call.k, call.v, attn_mask=sliced, **SMALL).out
    assert same_bits(a, attention(call.q, call.k, call.v, attn_mask=call.mask, **SMALL).out)


def test_pack_mask_is_the_engines():
    from transformers.generation.continuous_batching.utils import build_attention_mask

    call = pack(REQS, hq=HQ, hk=HK, d=D, dtype=torch.bfloat16)
    buf = torch.full(call.mask.shape, torch.finfo(torch.bfloat16).min, dtype=torch.bfloat16)
    cq = np.cumsum([0] + [r.q_len for r in REQS]).tolist()
    ck = np.cumsum([0] + [r.k_len for r in REQS]).tolist()
    build_attention_mask(buf, cq, ck)
    assert torch.equal(buf, call.mask)


def test_uncovered_rows_counted_and_empty_rows_zero():
    lq, lk = 6, 24
    mn = torch.finfo(torch.float32).min
    mask = torch.full((lq, lk), mn)
    mask[0, 2:10] = 0                      # an interval: covered
    mask[1, 2:10] = 0
    mask[1, 5] = float("-inf")             # a hole: not one interval
    mask[2, 0:4] = 0.5                     # a bias: not covered
    mask[3, 1:7] = 0
    mask[3, 3] = float("nan")              # NaN counts as a bias
    # row 4: no allowed key: covered, output zeros
    mask[5, 10:24] = 0
    mask[5, 12] = mn * 0.5                 # > finfo.min: allowed with a bias
    call = pack([Request(lq, lk, 18)], hq=HQ, hk=HK, d=D, dtype=torch.float32)
    r = attention(call.q, call.k, call.v, attn_mask=mask, **SMALL)
    _, _, unc = model.mask_intervals(to_numpy(mask))
    assert unc.tolist() == [False, True, True, True, False, True]
    assert r.uncovered.dtype == torch.int64 and r.uncovered.dim() == 0 and int(r.uncovered) == 4
    assert torch.equal(r.out[:, :, 4], torch.zeros_like(r.out[:, :, 4]))
    assert same_bits(r.out[:, :, 0], modelled(call, mask=mask)[:, :, 0])
    assert torch.allclose(r.out[:, :, 0], sdpa(call.q, call.k, call.v, attn_mask=mask)[:, :, 0], atol=2e-6)
    # per-head and per-batch masks count their own rows
    bmask = torch.zeros((2, HQ, 1, lk), dtype=torch.bool)
    bmask[1, 2, 0, ::2] = True             # one non-interval row
    bmask[0, :, 0, 3:9] = True
    two = torch.cat([call.q, call.q]), torch.cat([call.k, call.k]), torch.cat([call.v, call.v])
    assert int(attention(*two, attn_mask=bmask, **SMALL).uncovered) == 1


def test_fully_masked_block_leaves_the_state_alone():
    """The claim behind aligned blocks: an online-softmax step over a block with no valid key leaves m and
    l bit-identical and acc too (acc * 1 + 0), except that a -0 entry of acc would become +0. The kernels
    never take such a step (their block count comes from the row's own interval); a program holding
    rows of other lengths could, and then this is why it would not change them."""
    rng = np.random.default_rng(0)
    m, l, acc = np.full(3, -np.inf, np.float32), np.zeros(3, np.float32), np.zeros((3, 8), np.float32)
    v = rng.standard_normal((16, 8)).astype(np.float32)
    valid = np.arange(16) < 11
    scores = rng.standard_normal((3, 16)).astype(np.float32)
    m, l, acc = model.online_block(m, l, acc, scores, valid, np.where(valid[:, None], v, 0), np.float32)
    none = np.zeros(16, bool)
    for state in [(m, l, acc), (np.full(3, -np.inf, np.float32), np.zeros(3, np.float32), np.zeros((3, 8), np.float32))]:
        m2, l2, acc2 = model.online_block(*state, rng.standard_normal((3, 16)).astype(np.float32), none,
                                          np.zeros((16, 8), np.float32), np.float32)
        assert same_bits(m2, state[0]) and same_bits(l2, state[1]) and same_bits(acc2, state[2])
    neg0 = acc.copy()
    neg0[0, 0] = -0.0
    acc3 = model.online_block(m, l, neg0, scores, none, np.zeros((16, 8), np.float32), np.float32)[2]
    assert bits(acc3)[0, 0] == 0 and same_bits(acc3[1:], acc[1:])


BAD = [
    (lambda q, k, v: attention(q.numpy(), k, v), "q: must be a torch.Tensor"),
    (lambda q, k, v: attention(q[0], k, v), "q: must be 4-D"),
    (lambda q, k, v: attention(q.double(), k, v), "q: dtype"),
    (lambda q, k, v: attention(q, k.half(), v), "k: dtype"),
    (lambda q, k, v: attention(q, k[:, :1].expand(1, 3, -1, -1), v[:, :1].expand(1, 3, -1, -1)),
     "Hq % Hk must be 0"),
    (lambda q, k, v: attention(q, k, v[:, :, :5]), "v: shape"),
    (lambda q, k, v: attention(q, k[..., :8], v[..., :8]), "k: shape"),
    (lambda q, k, v: attention(q, k, v, dropout_p=0.1), "dropout_p"),
    (lambda q, k, v: attention(q, k, v, is_causal=True, attn_mask=torch.ones(3, 7, dtype=torch.bool)),
     "is_causal"),
    (lambda q, k, v: attention(q, k, v, attn_mask=torch.ones(3, 6, dtype=torch.bool)), "attn_mask: shape"),
    (lambda q, k, v: attention(q, k, v, attn_mask=torch.ones(3, 7, dtype=torch.int32)), "attn_mask: dtype"),
    (lambda q, k, v: attention(q, k, v, scale=float("nan")), "scale"),
    (lambda q, k, v: attention(q, k, v, split=40, block_n=16), "split / block_n"),
    (lambda q, k, v: attention(q[:, :, :0], k, v), "q: empty"),
    (lambda q, k, v: attention(q, k, v, split_programs=0), "split_programs"),
]


@pytest.mark.parametrize("call, msg", BAD)
def test_bad_input_names_the_argument(call, msg):
    q = torch.zeros(1, HQ, 3, D)
    k = torch.zeros(1, HK, 7, D)
    with pytest.raises(DriftscopeError) as e:
        call(q, k, k.clone())
    assert msg in str(e.value)


def test_every_kernel_compiles_for_sm90():
    """Triton compiles every kernel variant the wrappers launch for sm_90 without a GPU (ptxas included);
    the 16-bit attention's dots run on the tensor cores (mma.sync: one instruction shape for every row)."""
    import subprocess
    import sys
    env = dict(os.environ, TRITON_INTERPRET="0")
    r = subprocess.run([sys.executable, "-m", "probes.invariant.compile_check"], env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    split16 = [line for line in r.stdout.splitlines() if line.startswith("ok   split") and "float32" not in line]
    assert len(split16) == 12 and all("mma.sync   0" not in line for line in split16), r.stdout
    # the tiled split kernel (tiles per request, and fixed tiles): TILE_M = 64 dot rows on both of its paths, one
    # wgmma shape for every row
    tiled16 = [line for line in r.stdout.splitlines() if line.startswith("ok   tiled") and "float32" not in line]
    assert len(tiled16) == 24 and all("mma.sync   0" in line and "wgmma   0" not in line for line in tiled16), r.stdout


def test_bench_scenarios_are_seeded_and_cover_the_serving_steps():
    """probes.invariant.bench's steps: the same requests on every call (seeded), and --quick keeps decode, the
    serve load's long prefill and a chunk next to decodes (what the tiled kernel's tiling is for)."""
    from probes.invariant.bench import scenarios
    quick = scenarios(quick=True)
    assert [n for n, _ in quick] == ["decode x1", "decode x8", "prefill 128", "prefill 1024", "chunk 256 + 15 decodes"]
    assert quick == scenarios(quick=True)
    full = dict(scenarios())
    assert {"decode x64", "prefill 512", "chunk 256 + 15 decodes"} <= set(full)
    assert [r.q_len for r in full["chunk 256 + 15 decodes"]] == [256] + [1] * 15
