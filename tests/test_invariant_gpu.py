"""probes.invariant on a GPU at real sizes: a row's / a request's bits do not depend on the batch (Mistral:
Hq 32, Hk 8, D 128; SmolLM2: Hq 9, Hk 3, D 64; up to ~2000 keys a request, 1..64 requests packed as
continuous batching packs them), closeness to torch, the mean's bits equal to its model, CUDA-graph
capture, and the timing table runs."""
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from probes.invariant.packed import Request

pytestmark = pytest.mark.gpu

MODELS = {"mistral": (32, 8, 128), "smollm2": (9, 3, 64)}


def _bits(t):
    return t.contiguous().view({4: torch.int32, 2: torch.int16}[t.element_size()])


def _same(a, b):
    return a.shape == b.shape and torch.equal(_bits(a), _bits(b))


# ---- rows ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("hidden", [4096, 576])
def test_mean_rows_invariant_and_equal_to_model(hidden):
    from numerics import rowops
    from probes.invariant import row_mean

    g = torch.Generator(device="cuda").manual_seed(0)
    h = torch.randn((2048, hidden), device="cuda", generator=g).to(torch.bfloat16)
    x = h.float().pow(2)
    full = row_mean(x, [-1], keepdim=True)
    for m in (1, 2, 7, 64, 333, 1024, 2047):
        assert _same(row_mean(x[:m], [-1], keepdim=True), full[:m]), m
        assert _same(row_mean(x[m:m + 1], [-1], keepdim=True), full[m:m + 1]), m   # at offset 0 alone
    # adds and one IEEE division: the GPU gives the model's bits
    model = rowops.row_mean(x[:64].cpu().numpy())
    assert np.array_equal(full[:64, 0].cpu().numpy().view(np.uint32), model.view(np.uint32))
    assert torch.allclose(full, x.mean(-1, keepdim=True), rtol=1e-5, atol=0)


@pytest.mark.parametrize("vocab", [32768, 49152])
def test_softmax_rows_invariant_and_close(vocab):
    from probes.invariant import log_softmax, softmax

    g = torch.Generator(device="cuda").manual_seed(1)
    logits = (torch.randn((64, vocab), device="cuda", generator=g) * 4).to(torch.bfloat16)
    s_full = softmax(logits, -1, half_to_float=True)
    l_full = log_softmax(logits, -1)
    for m in (1, 3, 17, 63):
        assert _same(softmax(logits[:m], -1, half_to_float=True), s_full[:m]), m
        assert _same(log_softmax(logits[m:], -1), l_full[m:]), m
    ref = torch.softmax(logits.float(), -1)
    assert float((s_full - ref).abs().max()) < 1e-6 + 1e-5 * float(ref.abs().max())
    assert torch.allclose(l_full.float(), torch.log_softmax(logits.float(), -1), rtol=2 ** -7, atol=2 ** -6)


# ---- attention -------------------------------------------------------------------------------------

def _others(n, seed, decode=True):
    rng = random.Random(seed)
    return [Request(1 if decode or rng.random() < 0.7 else rng.randint(2, 40), rng.randint(60, 2000), 1000 * seed + i)
            for i in range(n)]


def _probe_out(probe, others, at, model, dtype=torch.bfloat16, repeat=False, tiled=False, tile_rows=None, **kw):
    from probes.invariant import attention
    from probes.invariant.packed import pack

    hq, hk, d = MODELS[model]
    reqs = list(others)
    reqs.insert(at, probe)
    call = pack(reqs, hq=hq, hk=hk, d=d, dtype=dtype, device="cuda", **kw)
    k, v = call.k, call.v
    if repeat:  # as transformers' paged sdpa path calls SDPA: kv heads repeated to Hq
        k, v = (t.repeat_interleave(hq // hk, 1).contiguous() for t in (k, v))
    r = attention(call.q, k, v, attn_mask=call.mask, tiled=tiled, **({'tile_rows': tile_rows} if tiled else {}))
    assert int(r.uncovered) == 0
    qo = call.q_offsets[at]
    return r.out[:, :, qo:qo + probe.q_len], call, k, v, r.out


@pytest.mark.parametrize("model", ["mistral", "smollm2"])
@pytest.mark.parametrize("probe", [Request(1, 1500, 7), Request(1, 100, 8), Request(48, 700, 9)],
                         ids=["decode-1500", "decode-100", "prefill-48"])
@pytest.mark.parametrize("repeat", [False, True], ids=["gqa", "repeated"])
def test_attention_request_bits_do_not_depend_on_the_batch(model, probe, repeat):
    alone = _probe_out(probe, [], 0, model, repeat=repeat)[0]
    for n, seed in ((1, 1), (7, 2), (63, 3)):
        others = _others(n, seed, decode=probe.q_len == 1)
        for at in (0, n // 2, n):
            assert _same(_probe_out(probe, others, at, model, repeat=repeat)[0], alone), (n, at)
    # padded rows / keys, as the engine's static buffers have
    assert _same(_probe_out(probe, _others(5, 4), 2, model, repeat=repeat, pad_q=13, pad_k=300)[0], alone)


@pytest.mark.parametrize("model", ["mistral", "smollm2"])
@pytest.mark.parametrize("probe", [Request(1, 1500, 7), Request(48, 700, 9), Request(300, 1200, 11)],
                         ids=["decode-1500", "prefill-48", "prefill-300"])
@pytest.mark.parametrize("tile_rows", ["auto", 16], ids=["tiles-per-request", "fixed-tiles"])
def test_tiled_attention_request_bits_do_not_depend_on_the_batch(model, probe, tile_rows):
    """attention(..., tiled=True): a request's rows alone, and packed among 1-63 others at any offset (its rows in
    tiles of its own with tile_rows='auto', or in tiles shared with other requests' rows with fixed tiles), give
    the same bits; close to the row kernel."""
    alone = _probe_out(probe, [], 0, model, tiled=True, tile_rows=tile_rows)[0]
    for n, seed in ((1, 1), (7, 2), (63, 3)):
        others = _others(n, seed, decode=probe.q_len == 1)
        for at in (0, n // 2, n):
            assert _same(_probe_out(probe, others, at, model, tiled=True, tile_rows=tile_rows)[0], alone), (n, at)
    rows = _probe_out(probe, [], 0, model)[0]
    diff = int((_bits(alone) != _bits(rows)).sum())
    print(f"tiled ({tile_rows}) vs row kernel ({model}, {probe.q_len} rows): {diff} of {alone.numel()} outputs differ")
    assert float((alone.float() - rows.float()).abs().max()) < 1.6e-2


@pytest.mark.parametrize("model", ["mistral", "smollm2"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_attention_close_to_sdpa(model, dtype):
    hq, hk, _ = MODELS[model]
    others = _others(20, 5, decode=False)
    _, call, k, v, out = _probe_out(Request(30, 900, 10), others, 10, model, dtype=dtype)
    g = hq // hk
    ref = F.scaled_dot_product_attention(call.q.double(), k.double().repeat_interleave(g, 1),
                                         v.double().repeat_interleave(g, 1), attn_mask=call.mask.double())
    err = float((out.float() - ref).abs().max())
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    assert err < tol * max(1.0, float(ref.abs().max())), err


def test_is_causal_and_no_mask_close_to_sdpa():
    from probes.invariant import attention

    g = torch.Generator(device="cuda").manual_seed(3)
    q = torch.randn((2, 32, 300, 128), device="cuda", generator=g).to(torch.bfloat16)
    k = torch.randn((2, 8, 700, 128), device="cuda", generator=g).to(torch.bfloat16)
    v = torch.randn((2, 8, 700, 128), device="cuda", generator=g).to(torch.bfloat16)
    for kw in ({"is_causal": True}, {}):
        out = attention(q, k, v, **kw).out
        ref = F.scaled_dot_product_attention(q.float(), k.float().repeat_interleave(4, 1),
                                             v.float().repeat_interleave(4, 1), **kw)
        assert float((out.float() - ref).abs().max()) < 1.6e-2, kw


def test_uncovered_rows_counted_on_the_device():
    from probes.invariant import attention
    from probes.invariant.packed import pack

    call = pack(_others(8, 6), hq=32, hk=8, d=128, dtype=torch.bfloat16, device="cuda")
    mask = call.mask.clone()
    mask[0, 0, 3, call.k_offsets[3] + 10] = torch.finfo(torch.bfloat16).min   # a hole in row 3
    mask[0, 0, 5, call.k_offsets[5]] = 0.25                                  # a bias in row 5
    r = attention(call.q, call.k, call.v, attn_mask=mask)
    assert r.uncovered.device.type == "cuda" and int(r.uncovered) == 2


def test_attention_runs_inside_a_cuda_graph():
    """No host sync: captured once, replayed on another packed step of the same shapes, the graph gives the
    eager call's bits."""
    from probes.invariant import attention
    from probes.invariant.packed import pack

    a = pack([Request(1, 900, 11), Request(1, 400, 12)], hq=32, hk=8, d=128, dtype=torch.bfloat16, device="cuda")
    b = pack([Request(1, 300, 13), Request(1, 1000, 14)], hq=32, hk=8, d=128, dtype=torch.bfloat16, device="cuda")
    static = [t.clone() for t in (a.q, a.k, a.v, a.mask)]
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        attention(*static[:3], attn_mask=static[3])      # warm-up (compiles the kernels)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        res = attention(*static[:3], attn_mask=static[3])
    for call in (b, a):
        for dst, src in zip(static, (call.q, call.k, call.v, call.mask)):
            dst.copy_(src)
        graph.replay()
        torch.cuda.synchronize()
        eager = attention(call.q, call.k, call.v, attn_mask=call.mask)
        assert _same(res.out, eager.out) and int(res.uncovered) == 0


def test_bench_table_runs(capsys):
    from probes.invariant import bench

    rows = bench.run(models=("smollm2",), reps=3, quick=True)
    assert rows and all(r["torch_ms"] > 0 and r["ours_ms"] > 0 for r in rows)
    bench.print_table(rows)
    assert "ours/torch" in capsys.readouterr().out


# ---- the mode's cuBLASLt matmul (deterministic(matmul='cublaslt'): split-K off) -------------------------------

@pytest.mark.parametrize("n, k", [(4096, 4096), (1024, 4096), (14336, 4096), (4096, 14336), (32000, 4096)])
def test_cublaslt_no_split_rows_do_not_depend_on_m(n, k):
    """Every row of F.linear(X[:M], W) under the mode's cuBLASLt matmul equals the same row at M = 4096, for M
    across decode and prefill sizes (the sweep of docs/results/h100-2026-12-06 compared row 0 only)."""
    from llm.determinism import deterministic
    g = torch.Generator(device="cuda").manual_seed(n + k)
    x = torch.randn(4096, k, device="cuda", generator=g).to(torch.bfloat16)
    w = (torch.randn(n, k, device="cuda", generator=g) * k ** -0.5).to(torch.bfloat16)
    with deterministic(matmul="cublaslt") as mode:
        full = F.linear(x, w)
        for m in (1, 2, 7, 16, 33, 63, 128, 300, 1024, 1400, 2048, 3001):
            assert _same(F.linear(x[:m], w), full[:m]), f"M={m}"
    s = mode.summary()
    assert s["deterministic"] and s["matmul"] == "cublaslt" and s["calls"]["mm"] >= 13
    ref = F.linear(x[:64].double(), w.double())
    assert ((full[:64].double() - ref).abs().max() / ref.abs().max()).item() < 1e-2


def test_deterministic_cublaslt_serves_copies_equal_alone():
    """The serving property with the cuBLASLt matmul: every copy's logits at every token equal the prompt decoded
    alone (tiny Mistral on the GPU, the engine's paged attention through the mode's kernel)."""
    from llm.engine import Request, run_engine
    from llm.models import load
    from llm.serve import analyse, engine_config, make_traffic
    lm = load("mistral-tiny", device="cuda:0", dtype=torch.bfloat16)
    ids = lm.tokenizer.encode("I enjoy walking in the")
    traffic = make_traffic(lm.tokenizer, ids, copies=4, background=12, seed=3, max_new_tokens=4, span=6,
                           prompt_len=(2, 40))
    cbc = engine_config(traffic, "cuda:0", num_blocks=64, max_batch_tokens=256)
    probes = [r.rid for r in traffic if r.kind == "probe"]
    from llm.determinism import mode_context
    with mode_context("deterministic-cublaslt") as det:
        run = run_engine(lm.model, traffic, tracked=probes, cb_config=cbc)
        alone = run_engine(lm.model, [Request("alone", "alone", 0, ids, 4)], tracked=["alone"], cb_config=cbc)
    res = analyse(run, probes, alone, lm.tokenizer)
    s = det.summary()
    assert s["deterministic"] and s["matmul"] == "cublaslt", s["uncovered"]
    assert res["copies_logits_equal_alone"] == res["copies"] == 4 and res["n_distinct"] == 1


def test_the_modes_default_matmul_on_cuda_tensors_is_cublaslt():
    """deterministic() with matmul='auto' (the default) computes CUDA bf16 linears by the cuBLASLt route, bit for
    bit what matmul='cublaslt' gives, and counts them in summary()['matmul_routes']."""
    from llm.determinism import deterministic
    g = torch.Generator(device="cuda").manual_seed(9)
    x = torch.randn(37, 4096, device="cuda", generator=g).to(torch.bfloat16)
    w = torch.randn(1024, 4096, device="cuda", generator=g).to(torch.bfloat16)
    with deterministic() as auto:
        a = F.linear(x, w)
    with deterministic(matmul="cublaslt"):
        b = F.linear(x, w)
    assert auto.summary()["matmul_routes"] == {"cublaslt": 1} and _same(a, b)
