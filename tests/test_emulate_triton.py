"""llm.emulate_triton: the Triton kernel of the block-FMA model, bit for bit numerics (issue 17).

Without a GPU (cpu_modes) the kernel runs in Triton's interpreter on small shapes; with one (gpu) on the
device. Every comparison is of uint32 views of the float32 results, never allclose."""
import dataclasses
import zlib

import numpy as np
import pytest
import torch

from numerics.matmul import MatmulModel, model_matmul
from numerics.matmul_fast import fast_matmul_nt
from probes.errors import UsageError
from probes.profile import linear_plan, load_profile

_RANGE = {"float16": (-26, 6), "bfloat16": (-135, 40)}


def _operands(dtype, M, N, K, seed):
    """x [M, K], w [N, K] of `dtype` with exponents over most of the format (subnormals included), zeros,
    and x's first row cancelling exactly against w's in every block (even block sizes)."""
    rng = np.random.default_rng(seed)
    lo, hi = _RANGE[dtype]

    def draw(r, c):
        v = rng.choice([-1.0, 1.0], (r, c)) * (1 + rng.random((r, c))) * np.exp2(rng.integers(lo, hi, (r, c)))
        v[rng.random((r, c)) < 0.1] = 0.0
        return torch.from_numpy(v.astype(np.float32)).to(getattr(torch, dtype))

    x, w = draw(M, K), draw(N, K)
    x[0, 0:K - 1:2] = w[0, 0:K - 1:2].abs()          # pairs (2j, 2j + 1) in one block: |w| w - |w| w
    x[0, 1:K:2] = w[0, 0:K - 1:2].abs()
    w[0, 1:K:2] = -w[0, 0:K - 1:2]
    x[0, K - 1] = 0
    return x, w


def _bits(a):
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32)).view(np.uint32)


def _check(x, w, model):
    from llm.emulate_triton import emulate_matmul_triton
    got = emulate_matmul_triton(x, w, model).cpu().numpy()
    ref = fast_matmul_nt(x.float().cpu().numpy(), w.float().cpu().numpy(), model).astype(np.float32)
    eq = _bits(got) == _bits(ref)
    assert eq.all(), f"{int((~eq).sum())} of {eq.size} outputs differ in bits ({model})"
    return got


@pytest.mark.cpu_modes
@pytest.mark.parametrize("profile", ["h100", "a100-published", "t4-like"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_profiles_bit_exact_in_the_interpreter(profile, dtype):
    prof = load_profile(profile)
    if dtype not in prof["linear"]:
        pytest.skip(f"{profile} has no {dtype} model")
    M, N, K = 6, 9, 53                       # K: a partial last block for every block size
    model = linear_plan(prof, dtype, N, K, M).model
    x, w = _operands(dtype, M, N, K, seed=zlib.crc32(f"{profile}/{dtype}".encode()) % 1000)
    got = _check(x, w, model)
    assert _bits(got)[0, 0] == 0            # the exact cancellation: +0
    assert len(np.unique(_bits(got))) > M * N // 2


@pytest.mark.cpu_modes
def test_equals_model_matmul_itself():
    model = linear_plan(load_profile("h100"), "float16", 5, 37, 4).model
    x, w = _operands("float16", 4, 5, 37, seed=3)
    from llm.emulate_triton import emulate_matmul_triton
    got = emulate_matmul_triton(x, w, model).numpy()
    ref = model_matmul(x.double().numpy(), w.double().numpy().T, model).astype(np.float32)
    assert (_bits(got) == _bits(ref)).all()


_BASE = MatmulModel(input_format="float16", block_size=8, extra_bits=1, align_to="exponent_sum")


@pytest.mark.cpu_modes
@pytest.mark.parametrize("change", [
    {"align_to": "value"},
    {"rounding": "nearest_even"},
    {"final_rounding": "nearest_even"},
    {"extra_bits": 3, "block_size": 16},
    {"extra_bits": -2, "block_size": 4},
    {"block_size": 5, "promote_every": 10},
    {"promote_every": 16},
    {"split_k": 3, "split_align": 8},
    {"split_k": 2},
    {"input_format": "bfloat16", "align_to": "value", "rounding": "nearest_even", "split_k": 2},
    {"extra_bits": 5, "block_size": 32},                  # the widest int32 path
    {"extra_bits": 8, "block_size": 32},                  # aligned terms above int32: the int64 path
    {"input_format": "bfloat16", "extra_bits": 7, "align_to": "value"},
], ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_model_variants_bit_exact(change):
    model = dataclasses.replace(_BASE, **change)
    x, w = _operands(model.input_format, 5, 6, 67, seed=len(str(change)))
    _check(x, w, model)


@pytest.mark.cpu_modes
@pytest.mark.parametrize("profile,dtype,change", [
    ("h100", "bfloat16", {}), ("h100", "float16", {}), ("t4-like", "float16", {}),
    ("h100", "bfloat16", {"align_to": "value", "extra_bits": 5}),
], ids=["h100-bf16", "h100-fp16", "t4-fp16", "bf16-value-P5"])
def test_int32_and_int64_paths_give_the_same_bits(profile, dtype, change):
    """The kernel's int32 per-product path (narrow, the default where narrow_terms allows it) and its int64 path
    compute the same integers: equal bits, and both the model's; narrow=True where the terms do not fit int32 is
    an error naming extra_bits."""
    from llm.emulate_triton import emulate_matmul_triton, narrow_terms
    model = dataclasses.replace(linear_plan(load_profile(profile), dtype, 7, 70, 5).model, **change)
    assert narrow_terms(model.extra_bits)
    x, w = _operands(dtype, 5, 7, 70, seed=11)
    a = _check(x, w, model)                                       # the default: narrow
    b = emulate_matmul_triton(x, w, model, narrow=False).numpy()
    assert (_bits(a) == _bits(b)).all()
    wide = dataclasses.replace(model, extra_bits=6)
    assert not narrow_terms(6)
    with pytest.raises(UsageError, match="extra_bits=6 puts aligned terms above int32"):
        emulate_matmul_triton(x, w, wide, narrow=True)


@pytest.mark.parametrize("change,missing", [
    ({"input_format": "float32", "block_size": 1, "extra_bits": None, "rounding": "nearest_even",
      "align_to": "value"}, "chain of fp32 FMAs"),
    ({"align_cut": "floor"}, "align_cut=floor"),
    ({"sum_bits": 16}, "sum_bits=16"),
    ({"normalize": False}, "normalize=False"),
    ({"input_format": "tf32"}, "operand format tf32"),
])
def test_models_the_kernel_cannot_express_are_errors(change, missing):
    from llm.emulate_triton import check_kernel_model, emulate_matmul_triton, kernel_support
    model = dataclasses.replace(_BASE, **change)
    assert missing in kernel_support(model)
    with pytest.raises(UsageError, match=f"emulate:my-gpu.*{missing}"):
        check_kernel_model(model, "my-gpu")
    x = torch.zeros(2, 8, dtype=torch.float16)
    with pytest.raises(UsageError, match=missing):
        emulate_matmul_triton(x, x, model)


def test_bad_operands_are_errors():
    from llm.emulate_triton import emulate_matmul_triton
    x = torch.ones(2, 8, dtype=torch.float16)
    with pytest.raises(UsageError, match="float16 operands"):
        emulate_matmul_triton(x.bfloat16(), x.bfloat16(), _BASE)
    with pytest.raises(UsageError, match=r"need x \[M, K\]"):
        emulate_matmul_triton(x, torch.ones(2, 7, dtype=torch.float16), _BASE)
    bad = x.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(UsageError, match="inf or NaN"):
        emulate_matmul_triton(bad, x, _BASE)


def test_backend_choice():
    from llm.emulate import EmulatedLinear, backend_for
    assert backend_for("cuda") == "triton" and backend_for("cuda:1") == "triton"
    assert backend_for("cpu") == "numpy"
    assert backend_for("cpu", "triton") == "triton"
    with pytest.raises(UsageError, match="backend must be"):
        EmulatedLinear("h100", backend="cublas")


@pytest.mark.cpu_modes
@pytest.mark.parametrize("profile,dtype", [("h100", torch.bfloat16), ("a100-published", torch.float16)])
def test_linear_through_the_kernel_equals_the_numpy_path(profile, dtype):
    from llm.emulate import EmulatedLinear
    torch.manual_seed(0)
    lin = torch.nn.Linear(40, 12, bias=True).to(dtype)
    x = torch.randn(2, 3, 40).to(dtype)
    y_np = EmulatedLinear(profile, backend="numpy")(lin, x)
    y_tr = EmulatedLinear(profile, backend="triton")(lin, x)
    assert y_tr.dtype == dtype and y_tr.shape == (2, 3, 12)
    assert torch.equal(y_np.view(torch.int16), y_tr.view(torch.int16))


def test_float32_linear_through_the_kernel_is_an_error():
    from llm.emulate import EmulatedLinear
    lin = torch.nn.Linear(8, 4)
    with pytest.raises(UsageError, match="emulate:h100.*chain of fp32 FMAs"):
        EmulatedLinear("h100", backend="triton")(lin, torch.randn(3, 8))


@pytest.mark.gpu
@pytest.mark.parametrize("profile", ["h100", "a100-published", "t4-like"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_profiles_bit_exact_on_the_gpu(profile, dtype):
    prof = load_profile(profile)
    if dtype not in prof["linear"]:
        pytest.skip(f"{profile} has no {dtype} model")
    M, N, K = 33, 70, 300
    model = linear_plan(prof, dtype, N, K, M).model
    x, w = _operands(dtype, M, N, K, seed=7)
    _check(x.cuda(), w.cuda(), model)


@pytest.mark.gpu
def test_timing_helper_on_the_gpu():
    from llm.emulate_triton import time_emulate_matmul
    model = linear_plan(load_profile("h100"), "bfloat16", 576, 576, 64).model
    t = time_emulate_matmul(64, 576, 576, model, reps=3)
    assert t["emulate_s"] > 0 and t["torch_s"] > 0 and t["M"] == 64


@pytest.mark.cpu_modes
def test_timing_cli_in_the_interpreter(capsys):
    from llm.emulate_triton import main
    assert main(["--profile", "a100-published", "--dtype", "float16", "--shapes", "3x8x16", "--reps", "1",
                 "--device", "cpu", "--paths", "auto,int64"]) == 0
    out = capsys.readouterr().out
    assert "a100-published float16 M=3 N=8 K=16 [auto: int32 terms]: emulated" in out
    assert "a100-published float16 M=3 N=8 K=16 [int64: int64 terms]: emulated" in out
    with pytest.raises(UsageError, match="--paths 'int16': give auto and / or int64"):
        main(["--paths", "int16", "--device", "cpu"])
    with pytest.raises(UsageError, match="not MxNxK"):
        main(["--shapes", "3x8", "--device", "cpu"])
    with pytest.raises(UsageError, match="no bfloat16 model"):
        main(["--profile", "t4-like", "--dtype", "bfloat16", "--device", "cpu"])


@pytest.mark.gpu
@pytest.mark.parametrize("profile,dtype", [("h100", torch.bfloat16), ("a10g-like", torch.float16)])
def test_linear_on_cuda_goes_through_the_kernel_with_the_cpu_bits(profile, dtype):
    from llm.emulate import EmulatedLinear, backend_for
    torch.manual_seed(1)
    lin = torch.nn.Linear(96, 40, bias=True).to(dtype)
    x = torch.randn(5, 96).to(dtype)
    y_cpu = EmulatedLinear(profile)(lin, x)
    assert backend_for(x.device) == "numpy"
    y_gpu = EmulatedLinear(profile)(lin.cuda(), x.cuda())
    assert y_gpu.device.type == "cuda" and backend_for(y_gpu.device) == "triton"
    assert torch.equal(y_cpu.view(torch.int16), y_gpu.cpu().view(torch.int16))
