"""GPU: the mechanism variants of issue 20 on CUDA tensors (tiny Mistral; scripts/gpu/mechanisms.sh runs these)."""
import numpy as np
import pytest
import torch

from llm import mechkernels as mk
from llm.models import load
from llm.runconfig import parse_run
from llm.runs import Run
from numerics import orders
from probes.errors import UsageError

pytestmark = pytest.mark.gpu

TEXT = "The quick brown fox jumps over the lazy dog."
U = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}


def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.contiguous().view(U[a.dtype]),
                                                                      b.contiguous().view(U[b.dtype]))


def _logits(lm, spec):
    return Run(lm, parse_run(spec), lm.tokenizer.encode(TEXT)).forward()


@pytest.fixture(scope="module")
def tiny():
    return {dt: load("mistral-tiny", "cuda:0", dt) for dt in (torch.float32, torch.bfloat16)}


def test_row_sums_fixed_on_gpu_equal_model():
    x = torch.randn(4, 1000, device="cuda:0")
    got = mk.row_sums(x, "fixed").cpu()
    for r in range(4):
        want = orders.two_pass_tree_sum(x[r].cpu().numpy(), acc="float32", grid=8, block=32, final_block=32, chunk=4)
        assert np.float32(got[r]).view(np.uint32) == np.float32(want).view(np.uint32)
    a = mk.row_sums(x, "atomic").cpu()                     # real atomics: close to the fixed order
    assert torch.allclose(a, got, rtol=1e-5)


def test_default_choices_on_gpu(tiny):
    for dt, name in ((torch.float32, "float32"), (torch.bfloat16, "bfloat16")):
        lm = tiny[dt]
        base = _logits(lm, f"device=cuda:0,dtype={name},attn=eager")
        assert same(_logits(lm, f"device=cuda:0,dtype={name},attn=eager,fma=off"), base)   # torch's unfused kernels
        for spec in ("norm=fixed", "norm=atomic", "softmax=fixed", "softmax=atomic", "fma=on"):
            v = _logits(lm, f"device=cuda:0,dtype={name},attn=eager,{spec}")
            assert torch.isfinite(v).all() and (v - base).abs().max() < 0.1, spec
    base = _logits(tiny[torch.float32], "device=cuda:0,dtype=float32")
    assert same(_logits(tiny[torch.float32], "device=cuda:0,dtype=float32,tf32=off"), base)
    assert torch.isfinite(_logits(tiny[torch.float32], "device=cuda:0,dtype=float32,tf32=on")).all()


def test_cublaslt_linear(tiny):
    from probes import ext
    if not ext.gemm_build_info()["available"]:
        pytest.skip("probes._C built without the GEMM module: " + ext.gemm_build_info()["reason"])
    lm = tiny[torch.bfloat16]
    lin = lm.model.model.layers[0].mlp.down_proj
    x = torch.randn(1, 9, 160, device="cuda:0").to(torch.bfloat16)
    y0 = mk.CublasLtLinear("cublaslt:0", 0)(lin, x)
    ref = torch.nn.functional.linear(x.double(), lin.weight.double())
    assert (y0.double() - ref).abs().max() <= 0.02 * ref.abs().max()
    assert same(mk.CublasLtLinear("cublaslt:0", 0)(lin, x), y0)                 # the same pick, the same bits
    with pytest.raises(UsageError, match="cublaslt:999.*heuristic returned"):
        mk.CublasLtLinear("cublaslt:999", 999)(lin, x)
    v = _logits(lm, "device=cuda:0,dtype=bfloat16,linear=cublaslt:0")
    v8 = _logits(lm, "device=cuda:0,dtype=bfloat16,linear=cublaslt:0:m400")
    assert torch.isfinite(v).all() and torch.isfinite(v8).all()


def test_int4_gpu_dequant_equals_numerics():
    spec = "int4:fma:float16:g32"
    gpu = load("mistral-tiny", "cuda:0", torch.bfloat16, 0, spec)
    cpu = load("mistral-tiny", "cpu", torch.bfloat16, 0, spec)
    a = gpu.model.model.layers[1].mlp.up_proj.weight.cpu()
    b = cpu.model.model.layers[1].mlp.up_proj.weight
    assert same(a, b)


def test_int4_quantiser_on_the_gpu_is_the_numerics_one():
    """The 7B int4 rows quantise on the GPU (llm.kernels.quantize_int4_groups): every byte equals
    numerics.dequant.quantize_int4's on a 1024 x 4096 bfloat16 block of seeded weights, g128."""
    from llm.kernels import quantize_int4_groups
    from numerics.dequant import quantize_int4
    w = torch.randn(1024, 4096, generator=torch.Generator().manual_seed(5)).to(torch.bfloat16)
    p, s, z = (t.cpu().numpy() for t in quantize_int4_groups(w.to("cuda:0"), 128))
    p0, s0, z0 = quantize_int4(w.float().numpy(), 128)
    assert np.array_equal(p, p0) and np.array_equal(s.view(np.uint16), s0.view(np.uint16))
    assert np.array_equal(z.view(np.uint16), z0.view(np.uint16))


@pytest.mark.parametrize("kernel", ["cuda_ext", "triton", "torch"])
@pytest.mark.parametrize("form", ["q4_0", "q4_1", "fp8:tensor", "fp8:block", "fp8:channel:e5m2:bfloat16"])
def test_dequant_weight_on_the_gpu_equals_the_numerics_model(form, kernel):
    # not yet run on a GPU (written 2026-12-05 on a CPU-only session): the CPU twin is
    # tests/test_llm_mechanisms.py::test_dequant_weight_equals_the_numerics_model
    from llm.kernels import dequant_weight
    w = torch.from_numpy((np.random.default_rng(7).standard_normal((144, 160)) *
                          np.logspace(-3, 0, 160)).astype(np.float32))
    got = dequant_weight(w.to("cuda:0"), f"{form}:{kernel}")
    want = dequant_weight(w, f"{form}:numerics")
    assert got.is_cuda and same(got.cpu(), want)


def test_fma_norm_and_mlp_off_give_default_logits_on_the_gpu(tiny):
    # not yet run on a GPU: torch's CUDA mean vs sum / n (hidden 64: 1/n exact) and the program's products
    for dt, lm in tiny.items():
        name = str(dt).replace("torch.", "")
        base = _logits(lm, f"device=cuda:0,dtype={name},attn=eager")
        for spec in ("fma=off:norm", "fma=on:mlp", "fma=off:mlp"):
            assert same(_logits(lm, f"device=cuda:0,dtype={name},attn=eager,{spec}"), base), spec


def test_fp8mm_linear_is_the_scaled_mm_of_the_numerics_quantised_operands(tiny):
    lm = tiny[torch.bfloat16]
    mod = lm.model.model.layers[0].mlp.up_proj
    x = torch.randn(1, 37, mod.in_features, device="cuda:0", dtype=torch.bfloat16)
    acc = mk.Fp8Linear("fp8mm:accurate", False)
    y = acc(mod, x)
    wq, ws = mk.quantize_fp8_tensor(mod.weight)
    xq, xs = mk.quantize_fp8_tensor(x.reshape(-1, x.shape[-1]))
    want = torch._scaled_mm(xq, wq.t(), scale_a=xs, scale_b=ws, out_dtype=torch.bfloat16, use_fast_accum=False)
    assert same(y.reshape(-1, y.shape[-1]), want)
    ref = torch.nn.functional.linear(x, mod.weight).float()
    assert (y.float() - ref).norm() / ref.norm() < 0.1            # FP8 quantisation error, not garbage
    with pytest.raises(UsageError, match="N=257"):      # tiny Mistral's lm_head: no FP8 GEMM, and no fallback
        _logits(lm, "device=cuda:0,dtype=bfloat16,linear=fp8mm:accurate")
    with pytest.raises(UsageError, match="multiples of 16"):
        acc(torch.nn.Linear(24, 32, device="cuda:0", dtype=torch.bfloat16), torch.randn(2, 24, device="cuda:0",
                                                                                        dtype=torch.bfloat16))


def test_fp8_fast_accumulation_changes_a_long_dot_product():
    """At K = 4,096 (Mistral's hidden size) Hopper's fast FP8 accumulation keeps fewer bits than the accurate
    path (which promotes to float32 along K): the two GEMMs differ in some outputs."""
    g = torch.Generator(device="cuda:0").manual_seed(0)
    lin = torch.nn.Linear(4096, 1024, bias=False, device="cuda:0", dtype=torch.bfloat16)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(1024, 4096, device="cuda:0", generator=g, dtype=torch.bfloat16) * 0.02)
    x = torch.randn(64, 4096, device="cuda:0", generator=g, dtype=torch.bfloat16)
    ya = mk.Fp8Linear("fp8mm:accurate", False)(lin, x)
    yf = mk.Fp8Linear("fp8mm:fast", True)(lin, x)
    diff = (ya.view(torch.int16) != yf.view(torch.int16)).sum().item()
    print(f"fp8 fast vs accurate accumulation, M=64 N=1024 K=4096: {diff} of {ya.numel()} outputs differ")
    assert diff > 0


def test_int4_fused_and_tiles_on_the_gpu():
    """weights=int4:...:fused|tiles on CUDA: every decoder linear through the dequant probe's Triton int4 matmul,
    the weights the numerics model's bits, logits close to the F.linear run on the same weights. Whether fused and
    tiles differ on this GPU (the K order of the fused load path) is printed: the mechanism row int4-fused."""
    spec = "int4:sub_mul:float32:g32"
    plain = load("mistral-tiny", "cuda:0", torch.bfloat16, 0, f"{spec}:numerics")
    ref = _logits(plain, f"device=cuda:0,dtype=bfloat16,weights={spec}:numerics")
    out = {}
    for kernel in ("fused", "tiles"):
        lm = load("mistral-tiny", "cuda:0", torch.bfloat16, 0, f"{spec}:{kernel}")
        for a, b in zip(plain.model.model.layers, lm.model.model.layers):
            assert same(a.mlp.down_proj.weight, b.mlp.down_proj.weight)
        out[kernel] = _logits(lm, f"device=cuda:0,dtype=bfloat16,weights={spec}:{kernel}")
        assert torch.isfinite(out[kernel]).all()
        assert (out[kernel] - ref).abs().max() < 0.05 * ref.abs().max()
    diff = (out["fused"].view(torch.int32) != out["tiles"].view(torch.int32)).sum().item()
    print(f"int4 fused vs tiles logits on the GPU: {diff} of {out['fused'].numel()} differ")
