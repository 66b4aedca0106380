"""The probes' kernels as run variants on tiny Mistral (CPU): linear=batch_invariant (Triton interpreter)
and weights=int4:FORMULA:COMPUTE:gGROUP (numerics.dequant)."""
import os

import pytest
import torch

from llm.attribute import attribute
from llm.models import load
from llm.runconfig import parse_run
from llm.runs import Run
from probes.errors import UsageError

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET", "0") in ("", "0"),
                                reason="GPU machine: the batch-invariant linear runs on CUDA tensors there")

TEXT = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def bf16():
    return load("mistral-tiny", "cpu", torch.bfloat16)


def _bits(t):
    return t.contiguous().view(torch.int32 if t.dtype == torch.float32 else torch.int16)


def _same(a, b):
    if isinstance(a, tuple):
        return all(_same(x, y) for x, y in zip(a, b))
    return torch.equal(_bits(a), _bits(b))


def test_batch_invariant_linear_close_to_torch(bf16):
    lin = bf16.model.model.layers[0].mlp.down_proj          # K = 160, N = 64: a K tail in the 64-wide tiles
    x = torch.randn(2, 7, 160).to(torch.bfloat16)
    from llm.kernels import batch_invariant_linear
    y = batch_invariant_linear(lin, x)
    ref = torch.nn.functional.linear(x.double(), lin.weight.double())
    assert y.shape == (2, 7, 64) and y.dtype == torch.bfloat16
    # the interpreter's fp32 -> bf16 cast truncates: within 1 bf16 ulp (2^-7 relative) of the exact product
    assert bool(((y.double() - ref).abs() <= ref.abs() * 2.0 ** -7 + 1e-30).all())


def _batch_1_vs_3(lm, linear):
    """The batch-invariance check: TEXT alone (batch 1) and as row 0 of a batch of 3, bfloat16, transformers'
    eager attention, `linear` for every linear op. Returns (the prompt's logits have the same bits, the
    sites (execution order) whose recorded outputs differ in any bit, the number of sites compared)."""
    ids = lm.tokenizer.encode(TEXT)
    recs = {b: Run(lm, parse_run(f"dtype=bfloat16,batch={b},linear={linear},attn=eager"), ids).record()
            for b in (1, 3)}
    (l1, c1), (l3, c3) = recs[1], recs[3]
    run = Run(lm, parse_run("dtype=bfloat16,attn=eager"), ids)
    return torch.equal(_bits(l1), _bits(l3)), [run.opmap.label(s) for s in run.sites if not _same(c1[s], c3[s])], \
        len(run.sites)


SPLIT_ABOVE_ROWS = 64


def _split_k_by_rows(module, x):
    """A planted batch-dependent linear (the negative control of the check): F.linear with K summed whole for
    up to 64 rows, and from 65 rows on in two halves each rounded to the run's dtype before they are added,
    as a library that picks split-K by M does. Products and sums in float64: only the split depends on M."""
    x2, w = x.reshape(-1, x.shape[-1]).double(), module.weight.double()
    if x2.shape[0] <= SPLIT_ABOVE_ROWS:
        y = (x2 @ w.T).to(x.dtype)
    else:
        h = x2.shape[1] // 2
        y = (x2[:, :h] @ w[:, :h].T).to(x.dtype) + (x2[:, h:] @ w[:, h:].T).to(x.dtype)
    y = y.reshape(*x.shape[:-1], w.shape[0])
    return y if module.bias is None else y + module.bias


@pytest.fixture
def planted_linear():
    from llm.runconfig import OP_REPLACEMENTS, register_op
    register_op("linear", "test_split_k_by_rows", _split_k_by_rows)
    yield "test_split_k_by_rows"
    del OP_REPLACEMENTS["linear"]["test_split_k_by_rows"]


def test_batch_invariant_logits_bitwise_equal_across_batch(bf16):
    """With the batch-invariant linear and transformers' eager attention every op of the tiny Mistral is
    batch invariant on the CPU: the prompt's logits (every position) and every op's output are the same bits
    in a batch of 1 and of 3. torch's own CPU ops are not relied on to differ: on an AVX-512 CPU (CI,
    2026-11-29) and on an AVX2 one (2026-12) torch's bf16 linear kept its bits across these batches for these
    shapes, while its CPU SDPA kernel did not on the AVX-512 one (layer 0's attn_core, 2.4e-4 apart), hence
    eager attention here; the CPU BLAS's own batch behaviour is what `python -m probes.gemm --device cpu`
    measures. That the check can fail at all is test_batch_check_catches_a_planted_batch_dependent_linear."""
    same_logits, differ, n = _batch_1_vs_3(bf16, "batch_invariant")
    assert n > 10 and same_logits and differ == []


def test_batch_check_catches_a_planted_batch_dependent_linear(bf16, planted_linear):
    """The negative control: the same check with a linear whose sum depends on the row count (split-K from
    65 rows on; TEXT is 45 tokens, a batch of 3 is >= 135 rows) reports other logit bits, first at layer 0's
    first linear. So the equality above is the batch-invariant kernel's doing, not a check that cannot fail."""
    ids = bf16.tokenizer.encode(TEXT)
    assert len(ids) <= SPLIT_ABOVE_ROWS < 3 * len(ids)
    same_logits, differ, n = _batch_1_vs_3(bf16, planted_linear)
    assert not same_logits and differ and differ[0] == "L0.q_proj", differ[:5]


def test_attribution_batch_invariant_vs_torch(bf16):
    ids = bf16.tokenizer.encode(TEXT)[:24]
    res = attribute(bf16, parse_run("dtype=bfloat16"), bf16, parse_run("dtype=bfloat16,linear=batch_invariant"),
                    ids, gen_steps=1, units=("class",), restore=False)
    assert res["drift"]["rms_dlogit"] > 0
    # local error: only linear ops differ when fed the reference's inputs
    from llm.opmap import OP_CLASS, parse_site
    n = bf16.model.config.num_hidden_layers
    differ = {OP_CLASS[parse_site(r["site"], n)[1]] for r in res["local"] if r["max_ulp"] != 0}
    assert differ == {"linear"}
    classes = [r for r in res["causal"] if r["kind"] == "class"]
    lin = {"*." + op for op, c in OP_CLASS.items() if c == "linear" and op != "lm_head"} | {"*.lm_head"}
    assert classes[0]["unit"] in lin and classes[0]["contribution"] > 0
    # a class with no linear op (norms, rotary, residuals, ...) changes nothing: no own error to take out
    assert all(r["contribution"] == 0 for r in classes if r["unit"] not in lin)


def test_int4_formulas_differ_and_attribute():
    specs = ("int4:sub_mul:float16:g32", "int4:fma:float16:g32")
    a, b = (load("mistral-tiny", "cpu", torch.bfloat16, 0, s) for s in specs)
    native = load("mistral-tiny", "cpu", torch.bfloat16)
    wa = a.model.model.layers[0].mlp.down_proj.weight
    wb = b.model.model.layers[0].mlp.down_proj.weight
    wn = native.model.model.layers[0].mlp.down_proj.weight
    assert not torch.equal(_bits(wa), _bits(wb))             # the formulas round differently somewhere
    assert not torch.equal(_bits(wa), _bits(wn))             # and the weights are quantised
    # int4 with 16 levels per group: within one step (+ rounding) of the native weight
    assert float((wa.float() - wn.float()).abs().max()) <= float(wn.float().abs().max()) * 2 / 15 + 1e-3
    ids = a.tokenizer.encode(TEXT)[:24]
    res = attribute(a, parse_run("dtype=bfloat16,weights=" + specs[0]), b, parse_run("dtype=bfloat16,weights=" + specs[1]),
                    ids, gen_steps=0, units=("class",), restore=False)
    assert res["drift"]["rms_dlogit"] > 0
    assert res["causal"][0]["unit"].split(".")[1] in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                       "up_proj", "down_proj")


def test_int4_matches_numerics_model():
    import numpy as np

    from numerics.dequant import dequant_int4, quantize_int4
    lm = load("mistral-tiny", "cpu", torch.float32, 0, "int4:mul_sub:float32:g32")
    w0 = load("mistral-tiny").model.model.layers[1].self_attn.q_proj.weight.numpy()
    p, s0, z0 = quantize_int4(w0, 32)
    want = dequant_int4(p, s0, z0, group_size=32, formula="mul_sub", compute="float32", out="float32")
    got = lm.model.model.layers[1].self_attn.q_proj.weight.numpy()
    assert np.array_equal(got.view(np.int32), want.view(np.int32))
    assert p.shape == (w0.shape[0], w0.shape[1] // 2) and s0.dtype == np.float16 and z0.dtype == np.float16
    assert np.all((z0 >= 0) & (z0 <= 15))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int4_torch_quantiser_is_the_numerics_one_bit_for_bit(dtype):
    """llm.kernels.quantize_int4_groups (float64 torch on the weights' device) == numerics.dequant.quantize_int4
    on every byte: random groups, an all-zero group, an all-positive and an all-negative group, and half-way
    cases (lo = -1, hi = 14: s = 1, z = 1, w = 0.5, 1.5, ... give q = 1.5, 2.5, ...: half to even)."""
    import numpy as np

    from llm.kernels import quantize_int4_groups
    from numerics.dequant import quantize_int4
    w = torch.randn(6, 128, generator=torch.Generator().manual_seed(3)).to(dtype)
    w[1, :32] = 0
    w[2, 32:64] = w[2, 32:64].abs() + 0.25
    w[3, 64:96] = -w[3, 64:96].abs() - 0.25
    w[4, :32] = torch.tensor([-1.0, 14.0] + [i + 0.5 for i in range(-1, 13)] * 2 + [0.0] * 2).to(dtype)
    packed, s, z = quantize_int4_groups(w, 32)
    p0, s0, z0 = quantize_int4(w.float().numpy(), 32)
    assert packed.dtype == torch.uint8 and s.dtype == torch.float16 and z.dtype == torch.float16
    assert np.array_equal(packed.numpy(), p0)
    assert np.array_equal(s.numpy().view(np.uint16), s0.view(np.uint16))
    assert np.array_equal(z.numpy().view(np.uint16), z0.view(np.uint16))
    assert s0[1, 0] == 1.0 and z0[1, 0] == 0 and not p0[1, :16].any()        # the all-zero group
    assert s0[4, 0] == 1.0 and z0[4, 0] == 1                                  # the half-way group
    lo = (p0[4, 1:15] & 0xF).astype(int)                                      # w = -0.5, 1.5, 3.5, ... -> q = 0, 2, 4, ...
    assert list(lo) == [int(np.rint(v + 1)) for v in w[4, 2:30:2].float().tolist()]


def test_int4_quantiser_bad_input():
    from llm.kernels import quantize_int4_groups
    from numerics.dequant import int4_scales, quantize_int4
    with pytest.raises(UsageError, match="group size 48 does not divide the row length 64"):
        quantize_int4_groups(torch.zeros(2, 64), 48)
    with pytest.raises(UsageError, match="need a 2-D"):
        quantize_int4_groups(torch.zeros(64), 32)
    with pytest.raises(ValueError, match="group_size: 48 does not divide"):
        quantize_int4(torch.zeros(2, 64).numpy(), 48)
    with pytest.raises(ValueError, match="must hold 0"):
        int4_scales([0.5], [1.0])


@pytest.mark.parametrize("spec, match", [
    ("weights=int4:fma", "int4:FORMULA:COMPUTE:gGROUP"),
    ("weights=int4:madd:float16:g128", "formula 'madd' not one of sub_mul, mul_sub, fma"),
    ("weights=int4:fma:bfloat16:g128", "scale math 'bfloat16' not one of float16, float32"),
    ("weights=int4:fma:float16:g100", "group 'g100' not one of g32, g64, g128"),
    ("weights=int4:fma:float16:128", "group '128'"),
    ("weights=int4:fma:float16:g32:cublas", "kernel 'cublas' not one of numerics, cuda_ext, triton, torch, fused, tiles"),
    ("weights=int4:fma:float16:g32:fused,dtype=bfloat16,linear=batch_invariant", "computes the decoder linears"),
    ("weights=int4:fma:float16:g32:torch:x", "int4:FORMULA:COMPUTE:gGROUP\\[:KERNEL\\]"),
    ("weights=int8", "weights=int8 not one of native, fp8"),
    ("linear=batch_invariant", "linear=batch_invariant supports dtype bfloat16 or float16, not float32"),
])
def test_bad_specs(spec, match):
    with pytest.raises(UsageError, match=match):
        parse_run(spec)


@pytest.mark.parametrize("kernel", ["torch", "cuda_ext"])
def test_int4_kernel_choice_gives_the_numerics_bits(kernel, monkeypatch):
    """weights=int4:...:KERNEL dequantises through the dequant probe's kernel (torch; cuda_ext: the C++ reference
    on the CPU) and gives the numerics model's bits, weight for weight; the default names numerics."""
    from probes import ext
    if kernel == "cuda_ext" and not ext.available():
        pytest.fail("probes._C is not built: `pip install -e .` builds the C++ reference on a CPU")
    from llm import kernels
    spec = "int4:mul_sub:float16:g32"
    ref = load("mistral-tiny", "cpu", torch.bfloat16, 0, spec)
    mod, calls = kernels._dequant_module(kernel), []
    real = mod.dequant_int4
    monkeypatch.setattr(mod, "dequant_int4", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = load("mistral-tiny", "cpu", torch.bfloat16, 0, f"{spec}:{kernel}")
    assert len(calls) == 7 * len(got.model.model.layers)          # every decoder linear through the kernel
    assert ref.info["weights"].startswith(spec + ":numerics:") and got.info["weights"].startswith(f"{spec}:{kernel}:")
    for a, b in zip(ref.model.model.layers, got.model.model.layers):
        for name in ("q_proj", "o_proj"):
            assert torch.equal(_bits(getattr(a.self_attn, name).weight), _bits(getattr(b.self_attn, name).weight))
        assert torch.equal(_bits(a.mlp.down_proj.weight), _bits(b.mlp.down_proj.weight))
    native = load("mistral-tiny", "cpu", torch.bfloat16)
    assert not torch.equal(_bits(got.model.model.layers[0].mlp.down_proj.weight),
                           _bits(native.model.model.layers[0].mlp.down_proj.weight))


def test_int4_kernel_the_device_cannot_run_is_an_error(monkeypatch):
    from llm import kernels
    monkeypatch.setattr(kernels, "_kernel_unavailable", lambda k, d: "not here" if k == "triton" else "")
    with pytest.raises(UsageError, match="kernel triton cannot run on device=cpu: not here .available there: "
                                         "numerics, cuda_ext, torch"):
        parse_run("weights=int4:fma:float16:g32:triton")


def test_bad_group_for_model_and_float32_call(bf16):
    with pytest.raises(UsageError, match="group size 128 does not divide the row length 64"):
        load("mistral-tiny", "cpu", torch.bfloat16, 0, "int4:fma:float16:g128")
    from llm.kernels import batch_invariant_linear
    with pytest.raises(UsageError, match="bfloat16 or float16, not float32"):
        batch_invariant_linear(torch.nn.Linear(8, 8), torch.zeros(1, 8))


# ---- fused dequant-GEMM (issue 20): weights=int4:...:fused|tiles, the dequant probe's Triton int4 matmul ------

def test_int4_fused_and_tiles_run_every_decoder_linear_through_the_probe_kernel(monkeypatch):
    """Both kernels see the numerics model's weight bits (the weight is dequantised by the Triton dequant kernel,
    the fused tiles by the same formula), every decoder linear goes through the kernel (a spy counts the calls),
    and in the interpreter, where the dot's K order cannot change with the load path, fused = tiles bit for bit.
    On a GPU the two may differ (the probe's mma kWidth finding): that is the mechanism row int4-fused."""
    from probes.dequant import triton_fused
    spec = "int4:sub_mul:float32:g32"
    ref = load("mistral-tiny", "cpu", torch.bfloat16, 0, spec)            # numerics dequantisation, F.linear
    calls = {"fused": 0, "tiles": 0}
    real_f, real_t = triton_fused.fused_int4_matmul, triton_fused.matmul_bf16
    monkeypatch.setattr(triton_fused, "fused_int4_matmul",
                        lambda *a, **k: calls.__setitem__("fused", calls["fused"] + 1) or real_f(*a, **k))
    monkeypatch.setattr(triton_fused, "matmul_bf16",
                        lambda *a, **k: calls.__setitem__("tiles", calls["tiles"] + 1) or real_t(*a, **k))
    logits = {}
    for kernel in ("fused", "tiles"):
        lm = load("mistral-tiny", "cpu", torch.bfloat16, 0, f"{spec}:{kernel}")
        for a, b in zip(ref.model.model.layers, lm.model.model.layers):
            assert torch.equal(_bits(a.mlp.down_proj.weight), _bits(b.mlp.down_proj.weight))
            assert torch.equal(_bits(a.self_attn.k_proj.weight), _bits(b.self_attn.k_proj.weight))
        logits[kernel] = Run(lm, parse_run(f"dtype=bfloat16,weights={spec}:{kernel}"),
                             lm.tokenizer.encode(TEXT)).forward()
        assert calls[kernel] == 7 * len(lm.model.model.layers)
    assert _same(logits["fused"], logits["tiles"])
    plain = Run(ref, parse_run(f"dtype=bfloat16,weights={spec}"), ref.tokenizer.encode(TEXT)).forward()
    assert (logits["fused"] - plain).abs().max() < 0.05 * plain.abs().max()    # close to F.linear on the same weights


def test_int4_matmul_needs_bfloat16():
    with pytest.raises(UsageError, match="takes bfloat16 activations and weights, this run's weights are torch.float32"):
        load("mistral-tiny", "cpu", torch.float32, 0, "int4:sub_mul:float32:g32:fused")
