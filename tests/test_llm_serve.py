"""llm.engine / llm.serve / llm.divergence on the CPU: transformers' continuous-batching engine with traffic that
arrives by engine step, logits recorded per token, and a divergence between two copies attributed to ops."""
import subprocess
import sys

import pytest
import torch

from llm.engine import Request, gumbel_noise, row_checksums, run_engine
from llm.serve import analyse, engine_config, load_corpus, make_traffic
from probes.errors import UsageError
from probes.report import load_report


@pytest.fixture(scope="module")
def tiny():
    from llm.models import load
    return load("mistral-tiny", device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def traffic(tiny):
    ids = tiny.tokenizer.encode("I enjoy walking in the")
    return make_traffic(tiny.tokenizer, ids, copies=4, background=8, seed=0, max_new_tokens=6, span=16,
                        prompt_len=(2, 12))


@pytest.fixture(scope="module")
def served(tiny, traffic):
    probes = [r.rid for r in traffic if r.kind == "probe"]
    cbc = engine_config(traffic, "cpu")
    run = run_engine(tiny.model, traffic, tracked=probes, cb_config=cbc)
    prompt = next(r.prompt_ids for r in traffic if r.kind == "probe")
    alone = run_engine(tiny.model, [Request("alone", "alone", 0, prompt, 6)], tracked=["alone"], cb_config=cbc)
    return probes, run, alone


def test_corpus_is_real_text_with_sources():
    passages = load_corpus()
    assert len(passages) >= 25
    assert all(len(p.split()) >= 8 and " -- " not in p for p in passages)


def test_traffic_is_seeded_and_checked(tiny):
    ids = tiny.tokenizer.encode("hello")
    a = make_traffic(tiny.tokenizer, ids, copies=3, background=5, seed=7, max_new_tokens=4, span=10)
    b = make_traffic(tiny.tokenizer, ids, copies=3, background=5, seed=7, max_new_tokens=4, span=10)
    c = make_traffic(tiny.tokenizer, ids, copies=3, background=5, seed=8, max_new_tokens=4, span=10)
    assert a == b and a != c
    assert sorted(r.kind for r in a).count("probe") == 3
    assert all(0 <= r.arrival < 10 for r in a)
    assert all(1 <= r.max_new_tokens <= 8 and 4 <= len(r.prompt_ids) <= 64 for r in a if r.kind == "background")
    for kw, msg in [({"copies": 0}, "--copies"), ({"background": -1}, "--background"), ({"span": 0}, "--span"),
                    ({"max_new_tokens": 0}, "--max-new-tokens")]:
        args = dict(copies=1, background=0, seed=0, max_new_tokens=2, span=2)
        args.update(kw)
        with pytest.raises(UsageError, match=msg):
            make_traffic(tiny.tokenizer, ids, **args)


def test_engine_honours_arrival_steps_and_records_every_token(served, traffic):
    probes, run, _ = served
    assert sorted(run.completions) == sorted(r.rid for r in traffic) and not run.errors
    by_id = {r.rid: r for r in traffic}
    for rid in probes:
        assert len(run.completions[rid]) == 6 == len(run.logits[rid]) == len(run.seen[rid])
        assert run.seen[rid][0][0] >= by_id[rid].arrival          # never computed before it arrived
        for rec, tok in zip(run.logits[rid], run.completions[rid]):
            assert rec["top"][0][0] == tok                           # greedy: the recorded top-1 is the token
            assert rec["top"][0][1] >= rec["top"][1][1]
    assert sum(s["requests"] > 1 for s in run.steps) >= len(run.steps) // 2     # the copies really were batched
    assert run.config["attn_implementation"].startswith("paged|")


def test_default_mode_logits_depend_on_the_batch_on_this_cpu(served, tiny):
    """The issue's negative control: under the shipped kernels the same request's logits change with its batch
    (here the packed paged attention), although the tokens agree."""
    probes, run, alone = served
    res = analyse(run, probes, alone, tiny.tokenizer)
    assert res["n_distinct"] == 1 and res["modal_equals_alone"]
    assert res["copies_logits_equal_alone"] < len(probes)


def test_checksums_see_every_bit():
    x = torch.randn(3, 1000)
    y = x.clone()
    y[1, 777] = torch.nextafter(y[1, 777], torch.tensor(float("inf")))
    a, b = row_checksums(x), row_checksums(y)
    assert a[0] == b[0] and a[2] == b[2] and a[1] != b[1]
    z = x.clone()
    z[0, 5] = -0.0 if x[0, 5] == 0 else x[0, 5]
    assert row_checksums(torch.tensor([[0.0]])) != row_checksums(torch.tensor([[-0.0]]))


def test_gumbel_noise_is_a_function_of_seed_position_and_token():
    s = torch.tensor([1, 1, 2])
    p = torch.tensor([5, 6, 5])
    g = gumbel_noise(s, p, 50)
    assert torch.equal(g[0], gumbel_noise(torch.tensor([1]), torch.tensor([5]), 50)[0])
    assert not torch.equal(g[0], g[1]) and not torch.equal(g[0], g[2])
    assert torch.isfinite(g).all()


def _planted_batch_dependence(model):
    """L1.o_proj's output scaled by a factor that depends on how many tokens the engine step packs: a
    batch-dependent op planted where no shipped kernel is."""
    mod = model.model.layers[1].self_attn.o_proj
    orig = type(mod).forward

    def fwd(x):
        y = orig(mod, x)
        return y * (1.0 + 2.0 ** -12 * (x.shape[-2] % 3))
    mod.forward = fwd
    return lambda: delattr(mod, "forward")


def test_divergence_attribution_finds_a_planted_batch_dependent_op(tiny, traffic):
    """Two copies of the prompt computed their token 2 in different engine steps; the replay rebuilds both
    steps bit for bit and the logit difference is attributed to the op made batch-dependent."""
    from llm.divergence import attribute_divergence
    undo = _planted_batch_dependence(tiny.model)
    try:
        probes = [r.rid for r in traffic if r.kind == "probe"]
        cbc = engine_config(traffic, "cpu")
        run = run_engine(tiny.model, traffic, tracked=probes, cb_config=cbc)
        qtok = {rid: run.seen[rid][2][2] % 3 for rid in probes}
        pair = next((a, b) for a in probes for b in probes if qtok[a] != qtok[b])
        res = attribute_divergence(tiny, traffic, run, pair[0], pair[1], 2, cb_config=cbc)
    finally:
        undo()
    assert res["drift"]["rms_dlogit"] > 0
    ops = [r for r in res["causal"] if r["kind"] == "op"]
    assert ops[0]["unit"] == "L1.o_proj" and ops[0]["contribution"] > 0.5
    local = {r["site"]: r for r in res["local"]}
    assert local["L1.o_proj"]["max_ulp"] > 0


def test_serve_cli_default_mode(tmp_path):
    out = tmp_path / "serve.json"
    r = subprocess.run([sys.executable, "-m", "llm.serve", "--device", "cpu", "--model", "mistral-tiny",
                        "--copies", "3", "--background", "4", "--max-new-tokens", "4", "--modes", "default",
                        "--static", "1,3", "--prompt-len", "3,5", "--json", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = load_report(out)
    exps = {e["key"]: e for e in rep["experiments"]}
    m = exps["serve/default/completions"]["metrics"]
    assert m["copies"] == 3 and m["finished"] == 3 and sum(m["counts"]) == 3
    assert exps["serve/default/generate/batch3"]["metrics"]["batch"] == 3
    assert rep["config"]["copies"] == 3 and exps["serve/default/completions"]["inputs"]["traffic_seed"] == 0
    assert exps["serve/default/completions"]["inputs"]["prompt_len"] == [3, 5]
    assert (tmp_path / "serve.png").stat().st_size > 1000


@pytest.mark.parametrize("args, msg", [
    (["--copies", "0"], "--copies"),
    (["--modes", "fast"], "fast"),
    (["--static", "x"], "--static"),
    (["--temperature", "-1"], "temperature"),
    (["--prompt-len", "x"], "--prompt-len"),
    (["--prompt-len", "9,3"], "--prompt-len"),
    (["--bench-profile"], "--bench"),
    (["--bench", "--bench-profile"], "--device cuda"),
])
def test_serve_cli_bad_arguments_one_line(args, msg):
    r = subprocess.run([sys.executable, "-m", "llm.serve", "--device", "cpu", "--model", "mistral-tiny", *args],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr


def test_kernel_classes_and_busy_time():
    from llm.serve import kernel_class, summarize_kernels
    assert kernel_class("fmha_cutlassF_bf16_aligned_64x128_rf_sm80") == "attention"
    assert kernel_class("nvjet_tst_128x256_64x4_2x1_v_bz_coopB_TNT") == "matmul"
    assert kernel_class("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64") == "matmul"
    assert kernel_class("bi_matmul_tma_kernel") == "matmul"
    assert kernel_class("attn_split_kernel") == "attention"
    assert kernel_class("row_mean_kernel") == "norm/mean"
    assert kernel_class("softmax_kernel") == "softmax"
    assert kernel_class("void at::native::vectorized_elementwise_kernel<4, silu>") == "other"
    # two overlapping kernels and one apart: busy is their union, kernel seconds their sum
    s = summarize_kernels([("nvjet_a", 0, 100), ("attn_split_kernel", 50, 150), ("row_mean_kernel", 1000, 1010)],
                          wall_s=0.001)
    m = s["by_class"]["matmul"]
    assert m["calls"] == 1 and abs(m["seconds"] - 100e-6) < 1e-12
    assert abs(s["kernel_s"] - 210e-6) < 1e-12 and abs(s["busy_s"] - 160e-6) < 1e-12
    assert abs(s["busy_share"] - 0.16) < 1e-9 and s["top"][0][0] == "nvjet_a"
    with pytest.raises(ValueError, match="ends before"):
        summarize_kernels([("k", 5, 1)], 1.0)


@pytest.mark.gpu
def test_bench_profile_on_the_gpu():
    from llm.serve import profile_kernels, summarize_kernels
    x = torch.randn(512, 512, device="cuda", dtype=torch.bfloat16)
    ks = profile_kernels(lambda: [x @ x for _ in range(5)])
    s = summarize_kernels(ks, wall_s=1.0)
    assert s["by_class"]["matmul"]["calls"] >= 5 and 0 < s["busy_s"] <= s["kernel_s"]


def test_plot_draws_the_bench_profile_panel(tmp_path):
    """A report with --bench-profile (the H100 run) gets a third panel: GPU seconds per op class per mode."""
    import json
    from pathlib import Path

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from llm.serve import plot
    rep = json.loads((Path(__file__).resolve().parents[1] / "docs/results/h100-2026-12-06/serve/"
                      "serve-mistral-prefill.json").read_text())
    drawn = []
    real = plt.subplots
    plt.subplots = lambda *a, **k: drawn.append(a) or real(*a, **k)
    try:
        plot(rep, str(tmp_path / "p.png"))
    finally:
        plt.subplots = real
    assert drawn == [(1, 3)] and (tmp_path / "p.png").stat().st_size > 10000


def test_a_dead_engine_thread_is_reported_with_its_cause(tiny, traffic):
    """An exception inside the model's forward in the engine's generation thread (as the cuBLASLt linear's
    NameError of 2026-12-06 was) stops the run with the cause named, not only 'stopped'."""
    calls = []

    def boom(module, args, out):
        calls.append(1)
        if len(calls) == 3:
            raise ZeroDivisionError("planted in the third forward")

    handle = tiny.model.model.layers[0].register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="ZeroDivisionError: planted in the third forward") as e:
            run_engine(tiny.model, traffic, cb_config=engine_config(traffic, "cpu"), timeout_s=120)
    finally:
        handle.remove()
    assert "generation thread stopped" in str(e.value) and isinstance(e.value.__cause__, ZeroDivisionError)


def test_table_names_the_kernels_a_deterministic_mode_ran():
    """format_table: under a deterministic mode's row, its matmul route counts and attention, and whether every op
    was covered (naming what was not); mode names longer than the column keep the table aligned."""
    from llm.serve import format_table

    def res(mode):
        return {"batch_requests_seen": {"min": 1, "median": 3, "max": 9}, "counts": [3], "copies": 3,
                "n_distinct": 1, "copies_logits_equal_alone": 3, "distinct": [{"count": 3}], "mode": mode}

    ok = {"name": "deterministic", "matmul": "auto", "attention": "tiled", "deterministic": True,
          "matmul_routes": {"triton": 40, "cublaslt": 2}, "uncovered": {}}
    bad = dict(ok, deterministic=False, uncovered={"aten::mm: float32 (2, 3) @ float32 (3, 4)": 1})
    text = format_table({"default": (res({"name": "default"}), []), "deterministic-cublaslt-tiled": (res(ok), []),
                         "deterministic": (res(bad), [])})
    lines = text.splitlines()
    assert lines[3] == ("  kernels: matmul=auto (mm calls by route: cublaslt 2, triton 40), attention=tiled; "
                        "every op covered: yes")
    assert lines[5].endswith("every op covered: NO (1 case(s): aten::mm: float32 (2, 3) @ float32 (3, 4); all in the "
                             "report)")
    assert len({ln.index(" 3 ") for ln in (lines[1], lines[2], lines[4])}) == 1 and "kernels" not in lines[2]
