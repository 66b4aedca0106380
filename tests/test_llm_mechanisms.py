"""The mechanism variants of issue 20 on the CPU (llm.mechkernels, llm.runconfig, llm.mechanisms):
each variant equals its exact numerics model bit for bit on a small layer, each variant switched to the
default's choice gives the default's logits bit for bit, bad options are clear errors, and the table runs."""
import json

import ml_dtypes
import numpy as np
import pytest
import torch

from llm import mechkernels as mk
from llm.models import load
from llm.runconfig import parse_run
from llm.runs import Run
from numerics import fma_programs, orders
from probes.errors import UsageError

TEXT = "The quick brown fox jumps over the lazy dog."
U = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}


def bits(t):
    return t.contiguous().view(U[t.dtype])


def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(bits(a), bits(b))


@pytest.fixture(scope="module")
def tiny32():
    return load("mistral-tiny", "cpu", torch.float32)


@pytest.fixture(scope="module")
def tiny16():
    return load("mistral-tiny", "cpu", torch.bfloat16)


def _logits(lm, spec, rules=None):
    cfg = parse_run(spec)
    run = Run(lm, cfg, lm.tokenizer.encode(TEXT))
    if rules:
        for site in run.sites:
            if site[1] in rules:
                rep, fmt, inner = run.rules[site]
                run.rules[site] = (rules[site[1]], fmt, inner)
    return run.forward()


# ---- each variant equals its exact model ------------------------------------------------------------

@pytest.mark.parametrize("n", [64, 576, 1000])
def test_row_sums_equal_the_reduction_models(n):
    x = torch.from_numpy(np.random.default_rng(n).standard_normal((5, n)).astype(np.float32) ** 2)
    fixed = mk.row_sums(x, "fixed")
    atomic = mk.row_sums(x, "atomic", seed=3)
    for r in range(5):
        row = x[r].numpy()
        want = orders.two_pass_tree_sum(row, acc="float32", grid=mk.ROW_GRID, block=mk.ROW_BLOCK,
                                        final_block=mk.ROW_FINAL, chunk=4)
        assert np.float32(fixed[r]).view(np.uint32) == np.float32(want).view(np.uint32)
        arrival = mk.arrival_order(3, n, r)
        want = orders.atomic_tree_sum(row, arrival, acc="float32", grid=mk.ROW_GRID, block=mk.ROW_BLOCK, chunk=4)
        assert np.float32(atomic[r]).view(np.uint32) == np.float32(want).view(np.uint32)


def test_atomic_emulation_is_a_seeded_order_that_matters():
    # rows long enough for every block to hold data: arrival order can change the bits, seeds differ
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((64, 2048)).astype(np.float32))
    a0, a0b, a1 = mk.row_sums(x, "atomic", 0), mk.row_sums(x, "atomic", 0), mk.row_sums(x, "atomic", 1)
    assert same(a0, a0b)                                # reproducible: a seeded order, not threads
    assert not same(a0, a1)                             # and the order is what changes


def test_norm_fixed_equals_model_on_a_layer(tiny32, tiny16):
    for lm in (tiny32, tiny16):
        norm = lm.model.model.layers[0].input_layernorm
        x = torch.randn(2, 9, 64, generator=torch.Generator().manual_seed(0)).to(lm.dtype)
        for order, seed in (("fixed", 0), ("atomic", 5)):
            got = mk.rms_norm_rows(norm, x, order, seed)
            sq = x.float().pow(2).reshape(-1, 64).numpy()
            if order == "fixed":
                s = [orders.two_pass_tree_sum(r, acc="float32", grid=8, block=32, final_block=32, chunk=4) for r in sq]
            else:
                s = [orders.atomic_tree_sum(r, mk.arrival_order(seed, 64, i), acc="float32", grid=8, block=32,
                                            chunk=4) for i, r in enumerate(sq)]
            var = torch.from_numpy(np.array(s, np.float32)).reshape(2, 9, 1) / 64
            h = x.float() * torch.rsqrt(var + norm.variance_epsilon)
            assert same(got, norm.weight * h.to(lm.dtype))


def test_softmax_fixed_equals_model():
    s = torch.randn(3, 2, 7, 200, generator=torch.Generator().manual_seed(2))
    got = mk.softmax_rows(s, "fixed")
    e = torch.exp(s - s.amax(-1, keepdim=True)).reshape(-1, 200).numpy()
    tot = np.array([orders.two_pass_tree_sum(r, acc="float32", grid=8, block=32, final_block=32, chunk=4)
                    for r in e], np.float32)
    assert same(got, torch.from_numpy(e / tot[:, None]).reshape(3, 2, 7, 200))
    # and it is a softmax: close to torch's
    assert torch.allclose(got, torch.softmax(s, -1), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("variant", ["fma", "mul_add"])
def test_rotary_fma_equals_fma_program_model(dtype, variant):
    g = torch.Generator().manual_seed(4)
    q = torch.randn(2, 5, 4, 16, generator=g).to(dtype)          # [B, T, H, D]
    k = torch.randn(2, 5, 2, 16, generator=g).to(dtype)
    cos = torch.randn(2, 5, 16, generator=g).to(dtype)
    sin = torch.randn(2, 5, 16, generator=g).to(dtype)
    qe, ke = mk.rotary_fma(variant)(None, q, k, cos, sin)
    fmt = str(dtype).replace("torch.", "")
    np_dt = {torch.float32: np.float32, torch.bfloat16: ml_dtypes.bfloat16, torch.float16: np.float16}[dtype]
    for x, got in ((q, qe), (k, ke)):
        a, b = mk.rotary_pairs(x.transpose(1, 2), cos.unsqueeze(1), sin.unsqueeze(1))
        an = a.view(U[dtype]).numpy().view(np_dt)
        bn = b.view(U[dtype]).numpy().view(np_dt)
        want = fma_programs.dot(an, bn, fmt, variant)
        got_n = got.transpose(1, 2).contiguous().reshape(-1).view(U[dtype]).numpy()
        assert np.array_equal(got_n, want.view(got_n.dtype))


def test_fma_on_and_off_differ_somewhere():
    q = torch.randn(1, 64, 8, 64, generator=torch.Generator().manual_seed(6))
    cos, sin = torch.randn(1, 64, 64), torch.randn(1, 64, 64)
    on, _ = mk.rotary_fma("fma")(None, q, q[:, :, :1], cos, sin)
    off, _ = mk.rotary_fma("mul_add")(None, q, q[:, :, :1], cos, sin)
    assert not same(on, off)
    assert torch.allclose(on, off, rtol=1e-6, atol=1e-6)


# ---- switched to the default's choice: the default's logits, bit for bit --------------------------------

@pytest.mark.parametrize("which", ["tiny32", "tiny16"])
def test_default_choices_give_default_logits(which, request):
    lm = request.getfixturevalue(which)
    dt = "float32" if which == "tiny32" else "bfloat16"
    base = _logits(lm, f"dtype={dt},attn=eager")
    # fma=off: the rotary through the FMA probe's mul_add program = torch's unfused ops
    assert same(_logits(lm, f"dtype={dt},attn=eager,fma=off"), base)
    # the norm and softmax replacements with the default's own reduction (torch)
    assert same(_logits(lm, f"dtype={dt},attn=eager", rules={
        "input_norm": mk.norm_op("torch"), "post_attn_norm": mk.norm_op("torch"),
        "final_norm": mk.norm_op("torch"), "attn_core": mk.softmax_op("torch")}), base)
    assert same(_logits(lm, f"dtype={dt},attn=eager,softmax=torch,norm=torch,fma=default"), base)
    if dt == "float32":
        assert same(_logits(lm, "dtype=float32,attn=eager,tf32=off"), base)   # the CPU has no TF32
    # and the variants do change something (finite, close)
    for spec in ("norm=fixed", "softmax=fixed", "fma=on", "norm=atomic:2", "softmax=atomic"):
        v = _logits(lm, f"dtype={dt},attn=eager,{spec}")
        assert torch.isfinite(v).all()
        assert (v - base).abs().max() < (1e-4 if dt == "float32" else 0.1), spec


# ---- bad input ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,words", [
    ("linear=cublaslt:0", ["linear=cublaslt:0", "device=cpu", "torch, float64, batch_invariant"]),
    ("linear=fp8mm:fast", ["linear=fp8mm:fast", "device=cpu", "torch, float64, batch_invariant"]),
    ("linear=fp9", ["linear=fp9", "fp8mm:accurate|fast"]),
    ("tf32=on", ["tf32=on", "CUDA"]),
    ("tf32=off,dtype=bfloat16", ["tf32=off", "float32"]),
    ("softmax=fixed", ["softmax=fixed", "attn=eager"]),
    ("softmax=bogus,attn=eager", ["softmax=bogus", "torch, fixed, atomic"]),
    ("norm=atomic:x", ["norm=atomic:x", "SEED"]),
    ("norm=tree", ["norm=tree", "fixed, atomic"]),
    ("fma=maybe", ["fma=maybe", "default, on, off"]),
    ("attn=eager,softmax=fixed,tp=2", ["tp=2", "softmax=fixed"]),
    ("softmax=fixed,attn=eager,inner=L0.attn_core:scores:bfloat16", ["softmax=fixed", "inner="]),
])
def test_bad_options_name_the_option_and_the_choices(spec, words):
    with pytest.raises(UsageError) as e:
        parse_run(spec)
    for w in words:
        assert w in str(e.value)


def test_cublaslt_spec_parsing():
    assert mk.parse_cublaslt("s", "cublaslt:2") == (2, None)
    assert mk.parse_cublaslt("s", "cublaslt:0:m256") == (0, 256)
    for bad in ("cublaslt:x", "cublaslt:0:256", "cublaslt:-1", "cublaslt"):
        with pytest.raises(UsageError, match="cublaslt"):
            mk.parse_cublaslt("s", bad)


def test_cublaslt_linear_refuses_cpu_tensors(tiny32):
    from probes.errors import NoGPUError
    op = mk.CublasLtLinear("cublaslt:0", 0)
    with pytest.raises(NoGPUError, match="cublaslt:0"):
        op(tiny32.model.lm_head, torch.zeros(1, 64))


def test_mechanism_rows_refuse_what_the_device_cannot_run():
    from llm.mechanisms import rows_for
    rows = rows_for(["tf32-on", "norm-fixed"], device="cpu", dtype="float32", model_name="mistral-tiny",
                    prompt_len=5)
    assert rows[0][4] == "needs a CUDA GPU" and rows[1][4] == ""
    with pytest.raises(UsageError, match="cublaslt-m8.*CUDA"):
        rows_for(["cublaslt-m8"], device="cpu", dtype="float32", model_name="mistral-tiny", prompt_len=5,
                 explicit=True)
    with pytest.raises(UsageError, match="available"):
        rows_for(["nope"], device="cpu", dtype="float32", model_name="mistral-tiny", prompt_len=5)
    r = rows_for(["cublaslt-m8"], device="cuda", dtype="bfloat16", model_name="x", prompt_len=5)[0]
    assert r[2].endswith("linear=cublaslt:0") and r[3].endswith("linear=cublaslt:0:m40")


# ---- the table ----------------------------------------------------------------------------------------

def test_mechanism_table_on_tiny_mistral(tmp_path, capsys):
    from llm.mechanisms import main
    out = tmp_path / "mech.json"
    assert main(["--device", "cpu", "--model", "mistral-tiny", "--mechanisms", "norm-fixed,fma-on,batch-8",
                 "--gen-steps", "1", "--drill", "1", "--prompt", "abc abd", "--json", str(out), "--no-plot"]) == 0
    text = capsys.readouterr().out
    assert "norm-fixed" in text and "fma-on" in text and "batch-8" in text
    rep = json.loads(out.read_text())
    assert rep["schema_version"] >= 1 and rep["fingerprint"] and rep["probe"] == "llm-mechanisms"
    ex = {e["key"]: e for e in rep["experiments"]}
    fma = ex["mechanisms/fma-on"]["metrics"]
    assert fma["rms_dlogit"] > 0                           # the contraction moves the logits
    assert fma["top_ops"][0]["unit"].endswith(".rotary")   # and the attribution names the rotary
    norm = ex["mechanisms/norm-fixed"]["metrics"]
    assert norm["top_ops"][0]["unit"].endswith("norm")
    assert len(norm["layer_contributions"]) == 3           # 2 layers + final
    assert ex["mechanisms/batch-8"]["params"]["variant"].endswith("batch=8")


def test_replay_refuses_the_mechanisms():
    from llm.replay import check_replayable
    with pytest.raises(UsageError, match="fma=on, norm=atomic:2"):
        check_replayable(parse_run("fma=on,norm=atomic:2"), [])
    with pytest.raises(UsageError, match="softmax=fixed"):
        check_replayable(parse_run("attn=eager,softmax=fixed"), [])
    check_replayable(parse_run("dtype=float32,tf32=default"), [])


# ---- weights dequantised through the dequant probe's kernels (GGUF Q4_0 / Q4_1, scaled FP8) ---------------

DQ_FORMS = ["q4_0", "q4_1", "fp8:tensor", "fp8:channel", "fp8:block", "fp8:block:e5m2:bfloat16"]


def _dequant_model(w, form):
    """The numerics model of the variant, from numerics.dequant alone: its quantiser, its dequantiser."""
    from numerics import dequant as dq
    wf = w.detach().float().numpy()
    n, k = wf.shape
    if form.startswith("q4"):
        qz, dz = (dq.quantize_q4_0, dq.dequant_q4_0) if form == "q4_0" else (dq.quantize_q4_1, dq.dequant_q4_1)
        return np.ascontiguousarray(dz(qz(wf.reshape(-1))), np.float32).reshape(n, k).view(np.uint32)
    parts = form.split(":")
    fmt = "float8_e5m2" if "e5m2" in parts else "float8_e4m3fn"
    via = "bfloat16" if "bfloat16" in parts else "float32"
    q, s = dq.quantize_fp8(wf, fmt, parts[1])
    return np.ascontiguousarray(dq.dequant_fp8(q, s, parts[1], via=via)).view(np.uint16)


def _ubits(t):
    t = t.contiguous()
    return t.view(torch.int32).numpy().view(np.uint32) if t.dtype == torch.float32 else \
        t.view(torch.int16).numpy().view(np.uint16)


@pytest.mark.parametrize("kernel", ["numerics", "cuda_ext", "torch",
                                    pytest.param("triton", marks=pytest.mark.cpu_modes)])
@pytest.mark.parametrize("form", DQ_FORMS)
def test_dequant_weight_equals_the_numerics_model(form, kernel):
    from llm.kernels import dequant_weight
    # K = 160: Q4 blocks of 32, fp8 128x128 blocks with a partial one; a spread of magnitudes
    w = torch.from_numpy((np.random.default_rng(7).standard_normal((144, 160)) *
                          np.logspace(-3, 0, 160)).astype(np.float32))
    got = dequant_weight(w, f"{form}:{kernel}")
    assert got.dtype == (torch.float32 if form.startswith("q4") else torch.bfloat16)
    want = _dequant_model(w, form)
    assert np.array_equal(_ubits(got), want)
    assert (got.float() - w).abs().max() < 0.15 * w.abs().max()     # a dequantisation of w (Q4_0: <= 1 step at the clip)


def test_q4_quantisers_round_trip_within_a_step():
    from numerics import dequant as dq
    x = np.random.default_rng(3).standard_normal(32 * 50).astype(np.float32)
    for qz, dz, off, steps in ((dq.quantize_q4_0, dq.dequant_q4_0, 2, 1.0), (dq.quantize_q4_1, dq.dequant_q4_1, 4, 0.5)):
        b = qz(x)
        assert b.shape == (50, off + 16)
        d = b[:, :2].copy().view(np.float16).astype(np.float64)
        err = np.abs(dz(b).astype(np.float64) - x.reshape(-1, 32))
        # Q4_1: half a step; Q4_0: a step (ggml maps the largest magnitude to -8: +8 steps clips to 7),
        # plus the float16 rounding of the scale (and min)
        assert np.all(err <= np.abs(d) * steps + np.abs(x.reshape(-1, 32)).max(1, keepdims=True) * 2e-3)
        assert err.max() > np.abs(d).min() * 0.25                  # and it is not exact: 4-bit values
    # ggml's nibble layout: byte j holds weights j (low) and j + 16 (high); Q4_0 of 0..31 - 16: max -16 -> d = 2
    b = dq.quantize_q4_0(np.arange(32, dtype=np.float32) - 16)
    assert b[0, :2].view(np.float16)[0] == 2.0
    assert b[0, 2] == (0 | (8 << 4)) and b[0, 3] == (1 | (9 << 4))   # trunc(x/2 + 8.5): -16 -> 0, -15 -> 1; 0 -> 8, 1 -> 9


@pytest.mark.parametrize("form", ["q4_0", "q4_1:cuda_ext", "fp8:block", "fp8:channel:bfloat16:torch"])
def test_dequant_weights_in_the_model(form):
    lm = load("mistral-tiny", "cpu", torch.bfloat16)
    cfg = parse_run(f"dtype=bfloat16,weights={form}")
    assert cfg.weights.split(":")[-1] in ("numerics", "cuda_ext", "torch")     # the kernel is recorded
    qlm = load("mistral-tiny", "cpu", torch.bfloat16, 0, cfg.weights)
    # every decoder linear: the numerics model of the native weight, cast once to bfloat16
    for name in ("q_proj", "down_proj"):
        w = getattr(lm.model.model.layers[1].self_attn if name == "q_proj" else lm.model.model.layers[1].mlp,
                    name).weight
        qw = getattr(qlm.model.model.layers[1].self_attn if name == "q_proj" else qlm.model.model.layers[1].mlp,
                     name).weight
        m = _dequant_model(w, cfg.weights.rsplit(":", 1)[0])
        want = torch.from_numpy(m.view(np.float32)).to(torch.bfloat16) if m.dtype == np.uint32 else \
            torch.from_numpy(m.view(np.int16)).view(torch.bfloat16)
        assert same(qw.data, want)
    ids = lm.tokenizer.encode(TEXT)
    a, b = Run(qlm, cfg, ids).forward(), Run(qlm, cfg, ids).forward()
    assert same(a, b)                                           # deterministic
    base = Run(lm, parse_run("dtype=bfloat16"), ids).forward()
    assert not same(a, base) and torch.isfinite(a).all()        # and the weights changed something


@pytest.mark.parametrize("spec,words", [
    ("weights=q4_2", ["weights=q4_2", "q4_0[:KERNEL]", "fp8:SCALING"]),
    ("weights=fp8:rows", ["weights=fp8:rows", "tensor|channel|block", "numerics|cuda_ext|triton|torch"]),
    ("weights=fp8:e5m2", ["weights=fp8:e5m2", "tensor, channel, block"]),
    ("weights=q4_0:cuda", ["weights=q4_0:cuda", "numerics|cuda_ext|triton|torch"]),
    ("weights=fp8:block:tensor", ["'tensor' given twice"]),
])
def test_bad_dequant_weights_name_the_option_and_the_choices(spec, words):
    with pytest.raises(UsageError) as e:
        parse_run(spec)
    for w in words:
        assert w in str(e.value)


def test_a_dequant_kernel_the_device_cannot_run_is_an_error(monkeypatch):
    from probes import ext
    from llm.kernels import parse_dequant_spec
    monkeypatch.setattr(ext, "available", lambda: False)
    with pytest.raises(UsageError, match=r"weights=q4_1:cuda_ext: kernel cuda_ext cannot run on device=cpu.*"
                                         r"available there: numerics, "):
        parse_run("weights=q4_1:cuda_ext")
    monkeypatch.undo()
    import sys
    import types
    monkeypatch.setitem(sys.modules, "probes.dequant.triton_dequant", types.SimpleNamespace(INTERPRETED=False))
    with pytest.raises(UsageError, match="kernel triton cannot run on device=cpu.*TRITON_INTERPRET"):
        parse_dequant_spec("fp8:block:triton", "cpu")
    monkeypatch.setitem(sys.modules, "probes.dequant.triton_dequant", types.SimpleNamespace(INTERPRETED=True))
    with pytest.raises(UsageError, match="kernel triton cannot run on device=cuda.*interpreter"):
        parse_dequant_spec("q4_0:triton", "cuda")


def test_dequant_mechanism_rows_parse_and_differ_in_the_weights_only():
    from llm.mechanisms import rows_for
    rows = rows_for(["fp8-via", "fp8-scaling", "q4_1-weights"], device="cpu", dtype="bfloat16",
                    model_name="mistral-tiny", prompt_len=5)
    want = {"fp8-via": ("fp8:channel:e4m3fn:float32:numerics", "fp8:channel:e4m3fn:bfloat16:numerics"),
            "fp8-scaling": ("fp8:channel:e4m3fn:float32:numerics", "fp8:block:e4m3fn:float32:numerics"),
            "q4_1-weights": ("native", "q4_1:numerics")}
    for name, _, ref, var, why in rows:
        assert why == ""
        r, v = parse_run(ref), parse_run(var)
        assert (r.weights, v.weights) == want[name]
        assert r.as_dict() | {"weights": 0, "text": 0} == v.as_dict() | {"weights": 0, "text": 0}


# ---- FMA contraction in the norm and the MLP (fma=on:norm, fma=on:mlp) ----------------------------------

NP_DT = {torch.float32: np.float32, torch.bfloat16: ml_dtypes.bfloat16, torch.float16: np.float16}


def _np(t):
    return t.contiguous().view(U[t.dtype]).numpy().view(NP_DT[t.dtype])


def _products_model(a, b, variant):
    a, b = torch.broadcast_tensors(a, b)
    fmt = str(a.dtype).replace("torch.", "")
    out = fma_programs.dot(_np(a).reshape(-1, 1), _np(b).reshape(-1, 1), fmt, variant)
    raw = out.view(np.int32 if a.dtype == torch.float32 else np.int16)
    return torch.from_numpy(raw).view(a.dtype).view(a.shape)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("variant", ["fma", "mul_add"])
@pytest.mark.parametrize("n", [64, 96])
def test_norm_fma_steps_equal_the_fma_program_model(dtype, variant, n):
    g = torch.Generator().manual_seed(n)
    h = torch.randn(300, n, generator=g).to(dtype).float()
    w = (1 + 0.1 * torch.randn(n, generator=g)).to(dtype)
    s = h.pow(2).sum(-1, keepdim=True)
    got = mk.norm_fma_steps(h, s, 1e-5, w, variant)
    eps, inv = np.float32(1e-5), np.float32(1.0 / n)
    a = np.stack([np.full(300, eps, np.float32), s.numpy().ravel()], axis=1)
    b = np.stack([np.ones(300, np.float32), np.full(300, inv, np.float32)], axis=1)
    ve = torch.from_numpy(fma_programs.dot(a, b, "float32", variant)).reshape(300, 1)
    hn = _products_model(h, torch.rsqrt(ve), variant)
    assert same(got, _products_model(w, hn.to(dtype), variant))


def test_norm_contraction_matters_only_where_n_is_not_a_power_of_two():
    g = torch.Generator().manual_seed(9)
    for n, differs in ((64, False), (96, True)):
        h = torch.randn(4000, n, generator=g)
        s = h.pow(2).sum(-1, keepdim=True)
        w = torch.ones(n)
        on, off = mk.norm_fma_steps(h, s, 1e-5, w, "fma"), mk.norm_fma_steps(h, s, 1e-5, w, "mul_add")
        assert (not same(on, off)) == differs, n     # s*(1/64) is exact: nothing for an fma to fuse
        if n == 64:                                  # and off is torch's own norm, bit for bit
            assert same(off, w * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_act_mul_fma_is_a_product_alone(dtype):
    from llm.opmap import ActMul
    g = torch.Generator().manual_seed(5)
    gate, up = torch.randn(3, 7, 160, generator=g).to(dtype), torch.randn(3, 7, 160, generator=g).to(dtype)
    fn = ActMul(torch.nn.functional.silu)
    on, off = mk.act_mul_fma("fma")(fn, gate, up), mk.act_mul_fma("mul_add")(fn, gate, up)
    assert same(on, _products_model(torch.nn.functional.silu(gate), up, "fma"))
    assert same(on, off)                             # no add to contract: the same bits
    assert same(on, fn(gate, up))                    # and the model's own op's


@pytest.mark.parametrize("which", ["tiny32", "tiny16"])
def test_fma_per_op_default_choices_give_default_logits(which, request):
    lm = request.getfixturevalue(which)
    dt = "float32" if which == "tiny32" else "bfloat16"
    base = _logits(lm, f"dtype={dt},attn=eager")
    # off everywhere = torch's unfused ops; mlp and (hidden 64, a power of two) norm: on = off = default
    for spec in ("fma=off", "fma=off:rotary+norm+mlp", "fma=on:mlp", "fma=on:norm", "fma=on:norm+mlp"):
        assert same(_logits(lm, f"dtype={dt},attn=eager,{spec}"), base), spec
    # fma=on covers the rotary too: it moves the logits, as fma=on:rotary alone does, bit for bit
    on = _logits(lm, f"dtype={dt},attn=eager,fma=on")
    assert not same(on, base) and same(on, _logits(lm, f"dtype={dt},attn=eager,fma=on:rotary"))
    # with norm=fixed: fma=off:norm is norm=fixed's own norm
    assert same(_logits(lm, f"dtype={dt},attn=eager,norm=fixed,fma=off:norm"),
                _logits(lm, f"dtype={dt},attn=eager,norm=fixed"))


def test_fma_spec_is_canonical():
    assert parse_run("fma=on").fma == "on" and parse_run("fma=on").fma_ops == ("rotary", "norm", "mlp")
    assert parse_run("fma=on:rotary+norm+mlp").fma == "on"
    c = parse_run("fma=off:mlp+rotary")
    assert c.fma == "off:rotary+mlp" and c.fma_ops == ("rotary", "mlp") and c.fma_variant == "mul_add"
    assert parse_run("fma=default").fma_ops == ()


@pytest.mark.parametrize("spec,words", [
    ("fma=on:attn", ["fma=on:attn", "rotary, norm, mlp"]),
    ("fma=on:norm+norm", ["fma=on:norm+norm", "twice"]),
    ("fma=default:rotary", ["fma=default:rotary", "on:OPS"]),
    ("fma=on:", ["fma=on:", "on:OPS"]),
    ("fma=on:norm,norm=float64", ["fma=on:norm", "norm=float64"]),
])
def test_bad_fma_ops_name_the_option_and_the_choices(spec, words):
    with pytest.raises(UsageError) as e:
        parse_run(spec)
    for w in words:
        assert w in str(e.value)


# ---- the machine-change row: a trace from another machine, run here --------------------------------------

def _tiny_trace(path, *extra):
    from llm.trace import main as trace_main
    assert trace_main(["--device", "cpu", "--model", "mistral-tiny", "--layers", "all", "--positions", "all",
                       "--prompt", "abc abd", "--out", str(path), *extra]) == 0


def test_machine_change_row_is_zero_for_a_trace_of_this_machine_and_sees_a_planted_change(tmp_path, capsys):
    from llm.mechanisms import main
    a = tmp_path / "a.npz"
    _tiny_trace(a)
    out = tmp_path / "m.json"
    assert main(["--device", "cpu", "--model", "mistral-tiny", "--mechanisms", "", "--trace", str(a),
                 "--prompt", "abc abd", "--json", str(out), "--no-plot"]) == 0
    assert "machine-change" in capsys.readouterr().out
    e = {e["key"]: e for e in json.loads(out.read_text())["experiments"]}["mechanisms/machine-change"]
    m = e["metrics"]
    assert m["rms_dlogit"] == 0 and m["max_dlogit"] == 0 and m["top1_flips"] == 0
    from llm.trace import read_trace
    from probes.device import fingerprint, fingerprint_summary
    machine = read_trace(a)[0]["machine"]                 # the trace names the machine it was recorded on
    assert machine == fingerprint_summary(fingerprint("cpu")) and machine in e["params"]["description"]
    assert m["bitwise_equal_ops"] == len(m["replay"]) == 2 * 14 + 2
    # machine "A" computed one logit differently (and its down_proj of layer 0): the row measures exactly that
    z = dict(np.load(a))
    lm_out = z["final.lm_head|out0"].copy()
    lm_out[1, 7] += np.float32(0.25)
    z["final.lm_head|out0"] = lm_out
    z["L0.down_proj|out0"] = z["L0.down_proj|out0"] * np.float32(1.001)
    b = tmp_path / "b.npz"
    np.savez_compressed(b, **z)
    from llm.mechanisms import trace_row
    tok = load("mistral-tiny", "cpu", torch.float32).tokenizer
    r = trace_row("mistral-tiny", b, tok.encode("abc abd"), device="cpu", dtype="float32", log=lambda s: None)
    assert r["max_dlogit"] == pytest.approx(0.25, rel=1e-6) and r["rms_dlogit"] > 0
    assert {o["unit"] for o in r["top_ops"][:2]} == {"final.lm_head", "L0.down_proj"}
    assert r["bitwise_equal_ops"] == len(r["replay"]) - 2 and r["first_greedy_divergence"] is None


@pytest.mark.parametrize("args, words", [
    (["--model", "tiny-mixtral"], "recorded with model 'mistral-tiny'"),
    (["--prompt", "another prompt"], "another prompt"),
    (["--dtype", "bfloat16"], "recorded in float32"),
])
def test_machine_change_row_refuses_a_trace_of_another_run(tmp_path, args, words):
    from llm.mechanisms import main
    a = tmp_path / "a.npz"
    _tiny_trace(a)
    base = {"--model": "mistral-tiny", "--prompt": "abc abd"}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    argv = ["--device", "cpu", "--mechanisms", "", "--trace", str(a), "--no-plot"]
    for k, v in base.items():
        argv += [k, v]
    with pytest.raises(UsageError, match=words):
        main(argv)


def test_machine_change_row_needs_final_logits_and_some_row(tmp_path):
    from llm.mechanisms import main
    a = tmp_path / "a.npz"
    _tiny_trace(a, "--layers", "0")
    with pytest.raises(UsageError, match="no final logits"):
        main(["--device", "cpu", "--model", "mistral-tiny", "--mechanisms", "", "--trace", str(a),
              "--prompt", "abc abd", "--no-plot"])
    with pytest.raises(UsageError, match="selects no row"):
        main(["--device", "cpu", "--model", "mistral-tiny", "--mechanisms", "", "--prompt", "abc abd", "--no-plot"])


@pytest.mark.parametrize("shape", [(3, 7), (16, 64), (5, 1)])
def test_fp8mm_quantisation_equals_the_numerics_model(shape):
    with pytest.raises(UsageError, match="linear=fp8mm:maybe is not fp8mm:accurate or fp8mm:fast"):
        mk.parse_fp8mm("x", "fp8mm:maybe")
    assert mk.parse_fp8mm("x", "fp8mm:fast") and not mk.parse_fp8mm("x", "fp8mm:accurate")
    from numerics.dequant import quantize_fp8
    g = torch.Generator().manual_seed(sum(shape))
    w = torch.randn(*shape, generator=g) * 3.0
    w[0, 0] = 0.0
    q, s = mk.quantize_fp8_tensor(w)
    qn, sn = quantize_fp8(w.numpy(), "float8_e4m3fn", "tensor")
    assert q.dtype == torch.float8_e4m3fn and s.dtype == torch.float32
    assert np.array_equal(q.view(torch.uint8).numpy(), np.asarray(qn).view(np.uint8))
    assert s.view(torch.int32).item() == np.asarray(sn, np.float32).view(np.int32).item()
    zq, zs = mk.quantize_fp8_tensor(torch.zeros(2, 4))
    assert zs.item() == 1.0 and not zq.view(torch.uint8).any()


def test_int4_fused_row_needs_bfloat16_and_names_its_kernels():
    from llm.mechanisms import rows_for
    (name, _, ref, var, why), = rows_for(["int4-fused"], device="cpu", dtype="float32", model_name="mistral-tiny",
                                         prompt_len=5)
    assert why == "needs bfloat16 runs" and ref.endswith(":g32:tiles") and var.endswith(":g32:fused")
    (_, _, ref, var, why), = rows_for(["int4-fused"], device="cuda", dtype="bfloat16",
                                      model_name="mistral-7b-random", prompt_len=5)
    assert why == "" and var.endswith("weights=int4:sub_mul:float32:g128:fused")
