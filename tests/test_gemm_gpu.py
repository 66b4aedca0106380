"""GEMM probe on a GPU: the batch-invariant Triton matmul first, then cuBLASLt enumeration, clusters and
errors (last: a configuration that passes cublasLtMatmulAlgoCheck but faults would poison the context)."""
import pytest
import torch

pytestmark = pytest.mark.gpu

SMALL = (64, 256, 512)          # M, N, K
MISTRAL = (256, 4096, 4096)     # q/o projection at M = 256


def _sweep_bits(shape, dtype, anchor=False):
    """Every M of the sweep: rows of batch_invariant_matmul(X[:M]) == rows [:M] of the M = 4096 result
    (whose config is the largest bucket's), bit for bit. Returns (M that differ, configs used); with anchor,
    also whether the M = 4096 result equals the ANCHOR config's bits."""
    from probes.gemm.sweep import gpu_ms
    from probes.gemm.triton_matmul import MISTRAL_SHAPES, batch_invariant_matmul, config_for, config_name
    n, k = MISTRAL_SHAPES[shape]
    ms = gpu_ms()
    g = torch.Generator(device="cuda").manual_seed(1)
    tdt = getattr(torch, dtype)
    w = (torch.randn((n, k), device="cuda", generator=g) * k ** -0.5).to(tdt)
    x = torch.randn((max(ms), k), device="cuda", generator=g).to(tdt)
    full = batch_invariant_matmul(x, w).view(torch.int16)
    assert torch.equal(full, batch_invariant_matmul(x, w).view(torch.int16)), "repeated runs differ"
    bad = [m for m in ms if not torch.equal(batch_invariant_matmul(x[:m], w).view(torch.int16), full[:m])]
    used = sorted({config_name(config_for(n, k, tdt, m)) for m in ms})
    ref = torch.nn.functional.linear(x[:256], w).float()
    assert float((full[:256].view(tdt).float() - ref).abs().max()) < 0.05 * float(ref.abs().max())
    if anchor:
        from probes.gemm.triton_configs import anchor_for, split_of
        ref = anchor_for(split_of(config_for(n, k, tdt, max(ms))))
        return bad, used, torch.equal(full, batch_invariant_matmul(x, w, config=ref).view(torch.int16))
    return bad, used


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("shape", ["q_o", "k_v", "gate_up", "down", "lm_head"])
def test_triton_matmul_batch_invariant_over_sweep(dtype, shape):
    """With the tables in use (GEMM_TRITON_CHOICES when set, else the ones shipped for this GPU): every M of
    the sweep (1..64, every 256, powers of two +-1, ...) crosses every one of the 11 bucket boundaries; the
    rows equal the largest M's and its split class's anchor config's."""
    import os
    from probes.gemm import triton_configs as C
    from probes.gemm.triton_matmul import use_device_tables
    if os.environ.get("GEMM_TRITON_CHOICES"):
        assert C.CHOICES, "GEMM_TRITON_CHOICES is set but no choice was loaded"
    bad, used, same_as_anchor = _sweep_bits(shape, dtype, anchor=True)
    print(shape, dtype, "tables:", {k: v for k, v in use_device_tables().items() if k != "tables"}, "configs:",
          used, "M with differing rows:", bad[:20])
    assert bad == [] and same_as_anchor


def test_this_gpu_gets_a_table_and_says_which():
    """The shipped tables are picked by this GPU's name and compute capability (as probes.device's
    fingerprint gives them) unless GEMM_TRITON_CHOICES names a file; the choice and its reason are stated."""
    import os
    from probes.device import fingerprint
    from probes.gemm import triton_configs as C
    from probes.gemm.triton_matmul import use_device_tables
    gpu = fingerprint("cuda:0")["gpu"]
    active = use_device_tables()
    print(gpu["name"], gpu["compute_capability"], {k: v for k, v in active.items() if k != "tables"})
    if os.environ.get("GEMM_TRITON_CHOICES"):
        assert active["source"] == C.ENV_VAR
    else:
        assert (active["file"], active["kind"]) == C.select_shipped(gpu["name"], gpu["compute_capability"])[:2]
        assert active["source"] == ("shipped" if active["file"] else "none") and active["reason"]


def _spread(names):
    """A table of one config per bucket (11) from a few names, in order, each used for about as many buckets."""
    from probes.gemm.triton_configs import BUCKETS, config_by_name
    return [config_by_name(names[i * len(names) // len(BUCKETS)]) for i in range(len(BUCKETS))]


MIXED = ["swap-16x64x256-g8-s5-w4", "swap-64x64x128-g8-s5-w4", "tma-64x32x256-g8-s4-w4",
         "tma-128x256x64-g8-s4-w8-sub", "tma-128x256x64-g8-s3-w8"]


@pytest.mark.parametrize("shape", ["q_o", "k_v"])
def test_mixed_bucket_table_is_bit_invariant(shape, monkeypatch):
    """The premise itself, independent of what the bench chose: a table mixing swapped operands, BLOCK_K 256
    / 128 / 64, 4 / 8 warps, 3-5 stages and epilogue subtiling over the buckets gives the same bits."""
    from probes.gemm import triton_configs as C
    from probes.gemm.triton_matmul import MISTRAL_SHAPES
    n, k = MISTRAL_SHAPES[shape]
    monkeypatch.setattr(C, "CHOICES", {(n, k, "bfloat16"): _spread(MIXED)})
    bad, used = _sweep_bits(shape, "bfloat16")
    print(shape, "mixed table", used, "M with differing rows:", bad[:20])
    assert used == sorted(MIXED) and bad == []


HANDOFF_TABLE = ["swap-16x64x256-g8-s5-w4", "handoff-128x128x64-g8-s4-w8", "handoff-128x64x128-g8-s4-w4",
                 "handoff-128x256x64-g8-s4-w8-sub", "handoff-128x256x64-g8-s3-w8"]


WIDE_TABLE = ["swap-16x64x256-g8-s5-w4", "wide-128x96(64+32)x64-g8-s5-w8-nf", "wide-128x224(128+64+32)x64-g8-s3-w8-nf",
              "wide-128x176(128+32+16)x64-g8-s4-w8-nf", "tma-128x256x64-g8-s3-w8"]


MIXED_TABLE = ["swap-16x64x256-g8-s5-w4", "tma-64x32x256-g8-s4-w4", "tma-128x64x128-g8-s4-w4",
               "mixed-128x256/128x64-g8-s4-w8-sub", "mixed-128x256/64x64-g8-s4-w8-sub"]


@pytest.mark.parametrize("table, shape", [("handoff", "q_o"), ("handoff", "k_v"), ("handoff", "down"),
                                          ("wide", "q_o"), ("wide", "k_v"), ("wide", "gate_up"),
                                          ("mixed", "q_o"), ("mixed", "down"), ("mixed", "lm_head")])
def test_handoff_wide_mixed_tables_are_bit_invariant_and_equal_the_anchor(table, shape, monkeypatch):
    """handoff: tiles whose k chain is run by two (or, below one tile per SM, several) programs one after the
    other, handing the float32 accumulator on. wide: tiles of 96, 176, 224 columns (power-of-two parts, one
    tl.dot each). mixed: whole waves of 128x256 tiles, the other columns in 128x128 / 128x64 tiles (which
    columns get big tiles changes with M). Every M of the sweep gives the same rows, equal to the anchor's."""
    from probes.gemm import triton_configs as C
    from probes.gemm.triton_matmul import MISTRAL_SHAPES
    names = {"handoff": HANDOFF_TABLE, "wide": WIDE_TABLE, "mixed": MIXED_TABLE}[table]
    n, k = MISTRAL_SHAPES[shape]
    monkeypatch.setattr(C, "CHOICES", {(n, k, "bfloat16"): _spread(names)})
    bad, used, same_as_anchor = _sweep_bits(shape, "bfloat16", anchor=True)
    print(shape, table, "table", used, "M with differing rows:", bad[:20], "anchor bits:", same_as_anchor)
    assert used == sorted(names) and bad == [] and same_as_anchor


@pytest.mark.parametrize("shape, m, name", [
    ("q_o", 1400, "handoff-128x256x64-g8-s3-w8"),   # 176 tiles: one whole-tile wave and cut tiles
    ("down", 4096, "handoff-128x256x64-g8-s4-w8-sub"),  # 512 tiles: two round-robin waves first
    ("q_o", 256, "handoff-128x256x64-g8-s3-w8"),    # 32 tiles on 132 SMs: chains over 4-5 programs
    ("k_v", 64, "handoff-128x128x64-g8-s4-w8")])    # 8 tiles: chains over ~16 programs
def test_handoff_repeated_runs_equal_the_anchor(shape, m, name):
    """50 launches (each a new epoch of the flags), every one bit-equal to the anchor: a consumer that read
    a slot before its producer's store, or a stale flag, would show up here as a differing run."""
    from probes.gemm.triton_configs import ANCHOR, config_by_name
    from probes.gemm.triton_matmul import MISTRAL_SHAPES, batch_invariant_matmul
    n, k = MISTRAL_SHAPES[shape]
    g = torch.Generator(device="cuda").manual_seed(2)
    w = (torch.randn((n, k), device="cuda", generator=g) * k ** -0.5).to(torch.bfloat16)
    x = torch.randn((m, k), device="cuda", generator=g).to(torch.bfloat16)
    ref = batch_invariant_matmul(x, w, config=ANCHOR).view(torch.int16)
    c = config_by_name(name)
    outs = [batch_invariant_matmul(x, w, config=c) for _ in range(50)]
    torch.cuda.synchronize()
    differing = [i for i, y in enumerate(outs) if not torch.equal(y.view(torch.int16), ref)]
    assert differing == [], differing


def test_fallback_keeps_the_anchor_bits_and_is_recorded(monkeypatch):
    """A chosen config that cannot run here (1 MiB of shared memory per block; the H100/H200 have 227 KiB) makes
    batch_invariant_matmul fall back, for the whole shape class, to the pointer kernel with ANCHOR's tiles. Its
    output is the ANCHOR config's (the TMA kernel) bit for bit at every M tried, across the buckets, and the
    fallback is recorded once (FALLBACKS and the run warning every report of the process carries)."""
    from probes import report as reports
    from probes.gemm import triton_configs as C
    from probes.gemm import triton_matmul as T
    n, k = T.MISTRAL_SHAPES["q_o"]
    too_big = C.cfg("tma", 256, 256, 128, stages=8)             # (256 + 256) * 128 * 2 B * 8 stages = 1 MiB
    fallback = dict(C.ANCHOR, impl="ptr")
    monkeypatch.setattr(C, "CHOICES", {(n, k, "bfloat16"): [too_big] * len(C.BUCKETS)})
    monkeypatch.setattr(T, "FALLBACKS", [])
    monkeypatch.setattr(reports, "RUN_WARNINGS", [])
    g = torch.Generator(device="cuda").manual_seed(3)
    w = (torch.randn((n, k), device="cuda", generator=g) * k ** -0.5).to(torch.bfloat16)
    x = torch.randn((1400, k), device="cuda", generator=g).to(torch.bfloat16)
    differ = []
    for m in (1400, 1, 17, 129, 256, 1000):                      # the first call falls back
        y = T.batch_invariant_matmul(x[:m], w).view(torch.int16)
        if not torch.equal(y, T.batch_invariant_matmul(x[:m], w, config=C.ANCHOR).view(torch.int16)):
            differ.append(m)
    (f,) = T.FALLBACKS
    print("fallback:", f, "M whose bits differ from the anchor's:", differ)
    assert (f["from"], f["to"], f["M"]) == (C.config_name(too_big), C.config_name(fallback), 1400)
    assert [w_["kind"] for w_ in reports.RUN_WARNINGS] == ["triton_fallback"]
    assert C.CHOICES[(n, k, "bfloat16")] == [fallback] * len(C.BUCKETS)
    assert differ == []


SPLIT_TABLE = ["swap-16x64x256-g8-s5-w4-nf-k3", "swap-32x64x256-g8-s4-w4-nf-k3", "tma-64x64x128-g8-s4-w4-nf-k3",
               "tma-64x128x64-g8-s4-w4-nf-k3", "tma-128x128x64-g8-s6-w8-nf-sub-k3", "tma-128x256x64-g8-s3-w8-nf-sub-k3",
               "tma-128x128x64-g8-s5-w8-sub-k3i", "tma-128x256x64-g8-s4-w8-nf-sub-k3"]


@pytest.mark.parametrize("shape", ["q_o", "k_v", "down"])
def test_split_k_table_is_bit_invariant_and_equals_its_anchor(shape, monkeypatch):
    """Split 3 (slices fixed by K) over every bucket: swapped small-M tiles, teams of 3 programs handing
    float32 partials over, one program summing the slices (inline): every M of the sweep gives the rows of
    the largest M, equal to the split anchor's (128x128 tiles, inline) bit for bit."""
    from probes.gemm import triton_configs as C
    from probes.gemm.triton_matmul import MISTRAL_SHAPES
    n, k = MISTRAL_SHAPES[shape]
    monkeypatch.setattr(C, "CHOICES", {(n, k, "bfloat16"): _spread(SPLIT_TABLE)})
    bad, used, same_as_anchor = _sweep_bits(shape, "bfloat16", anchor=True)
    print(shape, "split table", used, "M with differing rows:", bad[:20], "anchor bits:", same_as_anchor)
    assert used == sorted(SPLIT_TABLE) and bad == [] and same_as_anchor


def test_split_k_is_another_sum_than_one_chain_on_the_gpu():
    """triton_splitk.witness_inputs: the one-chain configs give 0 in row 0, every split-3 config 2^-22 (the
    2^-30 products that one chain truncates away, summed in their own slice): the split is real on the GPU
    too, and the GPU's split-3 bits are the interpreter's on these inputs."""
    from probes.gemm.triton_configs import ANCHOR, config_by_name
    from probes.gemm.triton_matmul import batch_invariant_matmul
    from probes.gemm.triton_splitk import witness_inputs
    x, w = witness_inputs(torch.bfloat16, "cuda")
    assert batch_invariant_matmul(x, w, config=ANCHOR)[0].float().abs().max().item() == 0.0
    for name in SPLIT_TABLE:
        y = batch_invariant_matmul(x, w, config=config_by_name(name))
        assert y[0].float().tolist() == [2.0 ** -22] * 8, name


@pytest.mark.parametrize("shape, m, name", [("q_o", 1400, "tma-128x256x64-g8-s3-w8-nf-sub-k3"),
                                            ("k_v", 1400, "tma-128x128x64-g8-s6-w8-nf-sub-k3"),
                                            ("q_o", 1, "swap-16x64x256-g8-s5-w4-nf-k3")])
def test_split_k_team_repeated_runs_and_graph_replays(shape, m, name):
    """50 launches of a team-mode split config are bit-equal to the split anchor (a combiner that read a slot
    before its producer's store would differ); and a CUDA graph of it, replayed on new inputs copied into the
    captured buffer, gives each input's eager bits (flags reset by the reader: no stale partial is taken)."""
    from probes.gemm.triton_configs import anchor_for, config_by_name
    from probes.gemm.triton_matmul import MISTRAL_SHAPES, batch_invariant_matmul
    n, k = MISTRAL_SHAPES[shape]
    g = torch.Generator(device="cuda").manual_seed(3)
    w = (torch.randn((n, k), device="cuda", generator=g) * k ** -0.5).to(torch.bfloat16)
    x = torch.randn((m, k), device="cuda", generator=g).to(torch.bfloat16)
    c = config_by_name(name)
    ref = batch_invariant_matmul(x, w, config=anchor_for(3)).view(torch.int16)
    outs = [batch_invariant_matmul(x, w, config=c) for _ in range(50)]
    torch.cuda.synchronize()
    assert [i for i, y in enumerate(outs) if not torch.equal(y.view(torch.int16), ref)] == []
    _graph_replays_match_eager(x, w, c)


def _graph_replays_match_eager(x, w, c, rounds=5):
    from probes.gemm.triton_matmul import batch_invariant_matmul
    static_x = x.clone()
    out = torch.empty((x.shape[0], w.shape[0]), dtype=x.dtype, device="cuda")
    batch_invariant_matmul(static_x, w, config=c, out=out)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        batch_invariant_matmul(static_x, w, config=c, out=out)
    g = torch.Generator(device="cuda").manual_seed(4)
    for r in range(rounds):
        new = torch.randn(x.shape, device="cuda", generator=g).to(x.dtype)
        static_x.copy_(new)
        graph.replay()
        eager = batch_invariant_matmul(new, w, config=c)
        torch.cuda.synchronize()
        assert torch.equal(out.view(torch.int16), eager.view(torch.int16)), f"replay {r}"


def test_split_k_two_graphs_replayed_before_each_other():
    """Two graphs captured one after the other (a server's graphs per batch size), each with two team-mode
    calls, replayed B before A and then A: each has its own workspace, zeroed at its replays, so every output
    is its input's eager bits."""
    from probes.gemm.triton_configs import config_by_name
    from probes.gemm.triton_matmul import MISTRAL_SHAPES, batch_invariant_matmul
    from probes.gemm.triton_splitk import capture_id
    n, k = MISTRAL_SHAPES["k_v"]
    c = config_by_name("tma-128x128x64-g8-s6-w8-nf-sub-k3")
    g = torch.Generator(device="cuda").manual_seed(6)
    w = (torch.randn((n, k), device="cuda", generator=g) * k ** -0.5).to(torch.bfloat16)
    xs = {name: torch.randn((m, k), device="cuda", generator=g).to(torch.bfloat16) for name, m in (("a", 1400),
                                                                                              ("b", 600))}
    graphs, outs, ids = {}, {}, []
    for name, x in xs.items():
        batch_invariant_matmul(x, w, config=c)
        torch.cuda.synchronize()
        graphs[name] = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graphs[name]):
            ids.append(capture_id(torch.cuda.current_stream().cuda_stream))
            outs[name] = [batch_invariant_matmul(x, w, config=c), batch_invariant_matmul(x, w, config=c)]
    print("capture ids (None: CUDA Python's cuda.bindings missing, one workspace per call):", ids)
    for order in (("b", "a"), ("a", "b")):
        for name in order:
            graphs[name].replay()
        torch.cuda.synchronize()
        for name, x in xs.items():
            eager = batch_invariant_matmul(x, w, config=c).view(torch.int16)
            assert all(torch.equal(o.view(torch.int16), eager) for o in outs[name]), (order, name)


def test_handoff_config_in_a_cuda_graph_replays_fresh_inputs():
    """The handoff kernel's launch counter (EPOCH) is an argument, which a graph freezes: its consumers lower
    the flags they took, so every replay waits for its own producers; replays on new inputs give the eager
    bits."""
    from probes.gemm.triton_configs import config_by_name
    from probes.gemm.triton_matmul import MISTRAL_SHAPES
    n, k = MISTRAL_SHAPES["q_o"]
    g = torch.Generator(device="cuda").manual_seed(5)
    w = (torch.randn((n, k), device="cuda", generator=g) * k ** -0.5).to(torch.bfloat16)
    x = torch.randn((1400, k), device="cuda", generator=g).to(torch.bfloat16)
    _graph_replays_match_eager(x, w, config_by_name("handoff-128x256x64-g8-s3-w8"))


def test_graph_call_times_exclude_the_host():
    """The graph timer: calls whose host side sleeps 0.3 ms each read as their kernels (the host work happens
    at capture, never at replay), and call i gets its own input."""
    import time
    from probes.timing import graph_call_times, median
    a = [torch.randn((1024, 1024), device="cuda", dtype=torch.bfloat16) for _ in range(2)]
    seen = []

    def slow_host(i):
        seen.append(i)
        time.sleep(0.0003)
        return a[i % 2] @ a[i % 2]
    fast, slow = graph_call_times([lambda i: a[i % 2] @ a[i % 2], slow_host], calls=10, replays=5)
    assert median(slow) < 0.1 and abs(median(slow) - median(fast)) < 0.02, (median(fast), median(slow))
    assert seen == list(range(10)) * 2  # once eagerly, once captured; replays run no Python


def test_cold_gpu_times_keep_the_host_launch_path_out():
    """The bench's timer: a call whose host side takes 0.3 ms before launching a ~20 us kernel reads as the
    kernel's time, and the plain event pair around it (no GPU sleep first) reads the host's 0.3 ms too."""
    import time
    from probes.timing import cold_gpu_times, median
    a = torch.randn((1024, 1024), device="cuda", dtype=torch.bfloat16)

    def slow_host():
        time.sleep(0.0003)
        return a @ a
    fast, slow = cold_gpu_times([lambda: a @ a, slow_host], 15)
    assert median(slow) < 0.1 and abs(median(slow) - median(fast)) < 0.02, (median(fast), median(slow))
    naive = []
    for _ in range(15):
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        slow_host()
        end.record()
        torch.cuda.synchronize()
        naive.append(start.elapsed_time(end))
    assert median(naive) > 0.25, naive


def test_triton_matmul_rejects_bad_gpu_inputs():
    from probes.ext import KernelInputError
    from probes.gemm.triton_matmul import batch_invariant_matmul
    x = torch.randn((8, 64), device="cuda", dtype=torch.bfloat16)
    w = torch.randn((32, 64), device="cuda", dtype=torch.bfloat16)
    with pytest.raises(KernelInputError, match="device mismatch"):
        batch_invariant_matmul(x, w.cpu())
    with pytest.raises(KernelInputError, match="K differs"):
        batch_invariant_matmul(x, w[:, :32].contiguous())
    with pytest.raises(KernelInputError, match="dtype"):
        batch_invariant_matmul(x.float(), w.float())


@pytest.fixture(scope="module")
def algos_small():
    from probes.gemm.cublaslt import run_algos
    return run_algos(*SMALL, "bfloat16", max_valid=48, max_checks=20000, runs=3, log=print)


def test_enumeration_small_runs_many_and_marks_default(algos_small):
    r = algos_small
    print({k: v for k, v in r.items() if k not in ("rows", "failure_examples", "run_failures", "enumeration", "groups")})
    assert r["heuristic_status"] == "CUBLAS_STATUS_SUCCESS"
    assert r["ran"] > 1, r["enumeration"]
    assert r["default"] is not None and r["default"]["heuristic_rank"] == 0
    assert r["default_group"] is not None
    assert r["enumeration"]["checks"] >= 1 and r["library"]["path"]


def test_clusters_cover_every_run_and_errors_are_small(algos_small):
    r = algos_small
    assert sum(g["size"] for g in r["groups"]) == r["ran"]
    assert sorted({row["group"] for row in r["rows"]}) == sorted(g["group"] for g in r["groups"] if g["size"])
    for g in r["groups"]:
        # Normwise: even a split-K reduction in the output type (bf16 partials) stays within a few bf16 ulps
        # of max|Y|. Element-wise ulps are reported, not bounded: near-zero outputs have tiny ulps.
        assert g["rel_error"] < 2e-2, g
        assert isinstance(g["max_ulp"], int), g
    # max_ulp 0 = every element equals the rounded reference: groups have distinct bits, so at most one can
    assert sum(g["max_ulp"] == 0 for g in r["groups"]) <= 1, [g["max_ulp"] for g in r["groups"]]
    default = next(g for g in r["groups"] if g["has_default"])
    assert default["rel_error"] < 1e-2, default


def test_enumeration_mistral_shape():
    from probes.gemm.cublaslt import run_algos
    r = run_algos(*MISTRAL, "bfloat16", max_valid=32, max_checks=20000, runs=3, log=print)
    print(r["distinct"], [(g["size"], g["max_ulp"], g["has_default"], g["has_torch"]) for g in r["groups"]])
    assert r["ran"] > 1 and r["default"] is not None
    assert all(g["rel_error"] < 2e-2 for g in r["groups"])


def test_plan_run_is_repeatable_and_checks_pointers():
    from probes import ext
    from probes.gemm.cublaslt import make_inputs, plan_for
    m, n, k = SMALL
    x, w = make_inputs(m, n, k, "bfloat16", torch.device("cuda"), 0)
    plan = plan_for(m, n, k, "bfloat16", "32f", 0)
    ws = torch.empty(1 << 22, dtype=torch.uint8, device="cuda")
    pick = plan.heuristic(1, ws.numel())["picks"][0]
    ys = []
    for _ in range(3):
        y = torch.empty((m, n), dtype=torch.bfloat16, device="cuda")
        assert plan.run(pick["algo"], x.data_ptr(), w.data_ptr(), y.data_ptr(), ws.data_ptr(), ws.numel()) \
            == "CUBLAS_STATUS_SUCCESS"
        torch.cuda.synchronize()
        ys.append(y.view(torch.int16))
    assert torch.equal(ys[0], ys[1]) and torch.equal(ys[0], ys[2])
    cpu = torch.empty((m, n), dtype=torch.bfloat16)
    with pytest.raises(ValueError):
        plan.run(pick["algo"], x.data_ptr(), w.data_ptr(), cpu.data_ptr(), ws.data_ptr(), ws.numel())
    with pytest.raises(ValueError, match="bytes"):
        plan.run(b"123", x.data_ptr(), w.data_ptr(), y.data_ptr(), ws.data_ptr(), ws.numel())
    with pytest.raises(ValueError, match="null"):
        plan.run(pick["algo"], 0, w.data_ptr(), y.data_ptr(), ws.data_ptr(), ws.numel())
    assert ext  # the module is the one probes.ext loads
