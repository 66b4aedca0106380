"""CPU tests of the C++ extension probes._C (build it first: pip install --no-build-isolation --no-deps -e .).

The CPU reference must give the bits of docs/reduction-orders.md; it is compared with the numerics
emulation (numerics.orders) when importable, and always with the small emulation below.
"""
import shutil
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

from probes import ext
from probes.errors import DriftscopeError, NoGPUError

if not ext.available():
    pytest.skip(f"probes._C is not built: {ext.BUILD_HINT}", allow_module_level=True)

C = ext.load()

try:
    from numerics import orders as numerics_orders
    numerics_orders.two_pass_tree_sum, numerics_orders.sequential_sum  # noqa: B018
except (ImportError, AttributeError):
    numerics_orders = None

BF16 = np.dtype(ml_dtypes.bfloat16)
NP_DTYPES = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16), "bfloat16": BF16}
COMBOS = [("float32", "float32"), ("float16", "float32"), ("float16", "input"),
          ("bfloat16", "float32"), ("bfloat16", "input")]
UINT = {4: np.uint32, 2: np.uint16}


# ---- a small emulation of the page, independent of numerics/ --------------------------------------

def _halving(v):
    """Halving tree along the last axis (power-of-two length): v[i] = v[i] + v[i + h]."""
    while v.shape[-1] > 1:
        h = v.shape[-1] // 2
        v = v[..., :h] + v[..., h:]
    return v[..., 0]


def _block_tree(v):
    """Rows of B values: warp trees of 32, warp sums padded with +0 to 32, one more halving tree."""
    rows, B = v.shape
    warps = _halving(v.reshape(rows, B // 32, 32))
    pad = np.zeros((rows, 32), dtype=v.dtype)
    pad[:, :B // 32] = warps
    return _halving(pad)


def _thread_sums(xa, T, chunk):
    n = xa.size
    C_ = n // chunk
    s = np.zeros(T, dtype=xa.dtype)
    for r in range(-(-C_ // T)):                   # round r: thread t takes chunk r*T + t
        m = min(T, C_ - r * T)
        base = (r * T + np.arange(m)) * chunk
        for e in range(chunk):                     # the chunk's elements in index order
            s[:m] = s[:m] + xa[base + e]
    tail = n - C_ * chunk
    s[:tail] = s[:tail] + xa[C_ * chunk:]          # tail element j -> thread j (tail < chunk <= T)
    return s


def emu_partials(x, acc, grid, block):
    xa = x.astype(acc)
    chunk = 16 // x.dtype.itemsize
    return _block_tree(_thread_sums(xa, grid * block, chunk).reshape(grid, block))


def emu_fixed(x, acc, grid, block, final_block):
    p = emu_partials(x, acc, grid, block)
    return _block_tree(_thread_sums(p, final_block, 1).reshape(1, final_block))[0]


def emu_sequential(x, acc):
    s = acc.type(0)
    for v in x.astype(acc):
        s = acc.type(s + v)
    return s


def acc_of(dtype, accumulate):
    return NP_DTYPES["float32"] if accumulate == "float32" else NP_DTYPES[dtype]


def bits(v):
    a = np.asarray(v).reshape(-1)
    return a.view(UINT[a.dtype.itemsize])


def assert_same_bits(got, want, what=""):
    g, w = np.asarray(got).reshape(-1), np.asarray(want).reshape(-1)
    assert g.dtype == w.dtype, (what, g.dtype, w.dtype)
    gb, wb = bits(g), bits(w)
    same = (gb == wb) | (np.isnan(g.astype(np.float64)) & np.isnan(w.astype(np.float64)))
    assert same.all(), f"{what}: got {g[~same][:4]} ({gb[~same][:4]}), want {w[~same][:4]} ({wb[~same][:4]})"


def make_x(n, dtype, seed=0):
    rng = np.random.default_rng(seed + n)
    v = rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 1, n)
    return v.astype(np.float32).astype(NP_DTYPES[dtype])


def to_torch(x):
    torch = pytest.importorskip("torch")
    if x.dtype == BF16:
        return torch.from_numpy(x.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(x.copy())


def torch_to_numpy(t, dtype):
    torch = pytest.importorskip("torch")
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(BF16)
    return t.numpy().astype(dtype, copy=False)


SIZES = [1, 3, 7, 8, 9, 31, 1000, 4097, 65541]
CONFIGS = [(1024, 256, 256), (3, 64, 32), (7, 32, 64), (1, 1024, 1024), (5, 96, 96)]


# ---- sums equal the page ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,accumulate", COMBOS)
@pytest.mark.parametrize("n", SIZES)
def test_fixed_order_sum_cpu_matches_emulation(dtype, accumulate, n):
    x = make_x(n, dtype)
    acc = acc_of(dtype, accumulate)
    for grid, block, final_block in CONFIGS:
        ws = np.full(grid, 7, dtype=acc)
        out = ext.fixed_order_sum(x, grid=grid, block=block, final_block=final_block,
                                  accumulate=accumulate, workspace=ws)
        assert out.shape == (1,) and out.dtype == acc
        want = emu_fixed(x, acc, grid, block, final_block)
        assert_same_bits(out, want, f"fixed n={n} {dtype}/{accumulate} {grid}x{block}/{final_block}")
        assert_same_bits(ws, emu_partials(x, acc, grid, block), "partials in workspace")
        if numerics_orders is not None:
            ref = numerics_orders.two_pass_tree_sum(x, acc=acc.name, grid=grid, block=block,
                                                    final_block=final_block, chunk=16 // x.itemsize, warp=32)
            assert_same_bits(out, np.asarray(ref, dtype=acc), "fixed vs numerics.orders")


@pytest.mark.parametrize("dtype,accumulate", COMBOS)
def test_fixed_order_sum_cpu_large(dtype, accumulate):
    n = 2**20 + 3
    x = make_x(n, dtype, seed=1)
    acc = acc_of(dtype, accumulate)
    out = ext.fixed_order_sum(x, accumulate=accumulate)
    assert_same_bits(out, emu_fixed(x, acc, 1024, 256, 256), "fixed 2**20+3")


@pytest.mark.parametrize("dtype,accumulate", COMBOS)
@pytest.mark.parametrize("n", [1, 7, 1000, 4097])
def test_sequential_sum_cpu_matches_emulation(dtype, accumulate, n):
    x = make_x(n, dtype)
    acc = acc_of(dtype, accumulate)
    out = ext.sequential_sum(x, accumulate=accumulate)
    assert_same_bits(out, np.asarray([emu_sequential(x, acc)], dtype=acc), f"sequential n={n}")
    if numerics_orders is not None:
        ref = numerics_orders.sequential_sum(x, acc.name)
        assert_same_bits(out, np.asarray(ref, dtype=acc), "sequential vs numerics.orders")


@pytest.mark.parametrize("dtype,accumulate", COMBOS)
def test_torch_cpu_tensors(dtype, accumulate):
    torch = pytest.importorskip("torch")
    acc = acc_of(dtype, accumulate)
    for n in (5, 4097):
        x = make_x(n, dtype, seed=2)
        t = to_torch(x)
        out = ext.fixed_order_sum(t, grid=4, block=64, final_block=32, accumulate=accumulate)
        assert isinstance(out, torch.Tensor) and out.shape == (1,)
        assert_same_bits(torch_to_numpy(out, acc), emu_fixed(x, acc, 4, 64, 32), "torch fixed")
        out = ext.sequential_sum(t, accumulate=accumulate)
        assert_same_bits(torch_to_numpy(out, acc), np.asarray([emu_sequential(x, acc)], acc), "torch seq")
        out = ext.atomic_sum(t, grid=1, block=64, accumulate=accumulate)
        assert_same_bits(torch_to_numpy(out, acc), emu_fixed(x, acc, 1, 64, 32), "torch atomic grid=1")


def test_raw_module_with_preallocated_torch_outputs():
    torch = pytest.importorskip("torch")
    x = torch.linspace(-3, 5, 1001, dtype=torch.float16)
    out = torch.empty(1, dtype=torch.float32)
    ws = torch.empty(16, dtype=torch.float32)
    C.fixed_order_sum(x, out, ws, 16, 32, 32, "float32", 0)
    xn = x.numpy()
    assert_same_bits(out.numpy(), emu_fixed(xn, np.dtype(np.float32), 16, 32, 32), "raw torch")


# ---- atomic sum on CPU -----------------------------------------------------------------------------

def _in_order(p, order):
    """The partials p added one by one in `order`, in p's dtype (an atomic sum with that arrival)."""
    s = p.dtype.type(0)
    for b in order:
        s = p.dtype.type(s + p[b])
    return s


@pytest.mark.parametrize("dtype,accumulate", COMBOS)
def test_atomic_sum_cpu_is_an_arrival_order(dtype, accumulate):
    x = make_x(20011, dtype, seed=3)
    acc = acc_of(dtype, accumulate)
    grid, block = 37, 64
    want_partials = emu_partials(x, acc, grid, block)
    for _ in range(5):
        out = np.empty(1, acc)
        partials = np.empty(grid, acc)
        arrival = C._atomic_sum_cpu_trace(x, out, partials, grid, block, accumulate)
        assert sorted(arrival) == list(range(grid))
        assert_same_bits(partials, want_partials, "atomic partials")
        s = _in_order(want_partials, arrival)
        assert_same_bits(out, np.asarray([s], acc), "atomic result = sum in arrival order")
        if numerics_orders is not None and hasattr(numerics_orders, "atomic_tree_sum"):
            ref = numerics_orders.atomic_tree_sum(x, arrival, acc=acc.name, grid=grid, block=block,
                                                  chunk=16 // x.itemsize)
            assert_same_bits(out, np.asarray(ref, acc), "atomic vs numerics.orders")


@pytest.mark.parametrize("dtype,accumulate", COMBOS)
def test_atomic_sum_cpu_grid_1_equals_fixed(dtype, accumulate):
    x = make_x(4097, dtype, seed=4)
    acc = acc_of(dtype, accumulate)
    out = ext.atomic_sum(x, grid=1, block=256, accumulate=accumulate)
    assert_same_bits(out, emu_fixed(x, acc, 1, 256, 256), "atomic grid=1")


def test_atomic_sum_cpu_results_over_runs(capsys):
    """Cancellation-heavy input: every result is a permutation sum; report how many distinct ones.
    How many there are depends on the threads' timing (on 2 cores often 1), so it is reported, not
    asserted; what is asserted is that the input does tell orders apart (the count means something)."""
    rng = np.random.default_rng(5)
    big = rng.standard_normal(4096).astype(np.float32) * np.float32(1e6)
    x = np.concatenate([big, -big, rng.standard_normal(4096).astype(np.float32)])
    rng.shuffle(x)
    grid, block = 64, 32
    p = emu_partials(x, np.dtype(np.float32), grid, block)
    forward, backward = _in_order(p, range(grid)), _in_order(p, reversed(range(grid)))
    assert bits(forward)[0] != bits(backward)[0]
    results = set()
    for _ in range(50):
        out = ext.atomic_sum(x, grid=grid, block=block)
        results.add(int(bits(out)[0]))
    lo = np.float32(np.sum(np.abs(p.astype(np.float64))))
    for r in results:
        v = np.array([r], np.uint32).view(np.float32)[0]
        assert abs(float(v) - float(p.astype(np.float64).sum())) <= 1e-6 * float(lo) + 1e-3
    with capsys.disabled():
        print(f"\n[atomic_sum CPU] {len(results)} distinct float32 results over 50 runs "
              f"(grid={grid}): {sorted(np.array(sorted(results), np.uint32).view(np.float32).tolist())[:8]}")


# ---- argument checks -------------------------------------------------------------------------------

F32 = np.zeros(64, np.float32)


def _raises(match, fn, *args, exc=ext.KernelInputError, **kw):
    with pytest.raises(exc, match=match) as info:
        fn(*args, **kw)
    assert isinstance(info.value, DriftscopeError)
    return info


@pytest.mark.parametrize("bad,match", [
    (np.zeros(8, np.float64), r"x: dtype float64 is not supported \(allowed: float32, float16, bfloat16\)"),
    (np.zeros(8, np.int32), r"x: dtype int32 is not supported"),
    (np.zeros(16, np.float32)[::2], r"x: array is not contiguous"),
    (np.zeros((2, 8), np.float32), r"x: expected a 1-D array, got 2-D"),
    (np.zeros((), np.float32), r"x: expected a 1-D array, got 0-D"),
    (np.zeros(0, np.float32), r"x: empty input"),
    ([1.0, 2.0], r"x: expected an array"),
])
def test_bad_x(bad, match):
    for fn in (ext.fixed_order_sum, ext.atomic_sum, ext.sequential_sum):
        _raises(match, fn, bad)


def test_empty_input_is_a_value_error():
    with pytest.raises(ValueError, match="empty input"):
        ext.fixed_order_sum(np.zeros(0, np.float16))


def test_bad_out_and_workspace():
    _raises(r"out: dtype float16 does not match the accumulator dtype float32", ext.fixed_order_sum, F32,
            out=np.zeros(1, np.float16))
    _raises(r"out: must have exactly 1 element, has 2", ext.sequential_sum, F32, out=np.zeros(2, np.float32))
    _raises(r"workspace: too small: 3 elements, needs at least 4", ext.fixed_order_sum, F32, grid=4,
            workspace=np.zeros(3, np.float32))
    _raises(r"workspace: dtype float32 does not match the accumulator dtype float16", ext.fixed_order_sum,
            F32.astype(np.float16), accumulate="input", workspace=np.zeros(1024, np.float32))
    ro = np.zeros(1, np.float32)
    ro.setflags(write=False)
    _raises(r"out: array is read-only", ext.atomic_sum, F32, out=ro)
    with pytest.raises(TypeError, match="out: expected an array"):
        C.sequential_sum(F32, 3.0, "float32", 0)


@pytest.mark.parametrize("kw,match", [
    (dict(grid=0), r"grid: must be in \[1, 2\*\*31 - 1\], got 0"),
    (dict(block=48), r"block: must be a multiple of 32 in \[32, 1024\], got 48"),
    (dict(block=2048), r"block: must be a multiple of 32 in \[32, 1024\], got 2048"),
    (dict(block=0), r"block: must be a multiple of 32"),
    (dict(final_block=16), r"final_block: must be a multiple of 32 in \[32, 1024\], got 16"),
    (dict(final_block=1056), r"final_block: must be a multiple of 32"),
    (dict(accumulate="float64"), r"accumulate: must be 'float32' or 'input'"),
])
def test_bad_launch_parameters(kw, match):
    _raises(match, ext.fixed_order_sum, F32, **kw)


def test_raw_module_raises_plain_python_errors():
    out, ws = np.zeros(1, np.float32), np.zeros(8, np.float32)
    with pytest.raises(TypeError, match="x: dtype float64"):
        C.fixed_order_sum(np.zeros(4), out, ws, 8, 32, 32, "float32", 0)
    with pytest.raises(ValueError, match="block: must be a multiple of 32"):
        C.fixed_order_sum(F32, out, ws, 8, 33, 32, "float32", 0)
    with pytest.raises(ValueError, match="stream: must be"):
        C.sequential_sum(F32, out, "float32", -5)


class FakeCudaArray:
    """Looks like a CUDA array (no GPU behind it): for device checks without a GPU."""

    def __init__(self, n=64, typestr="<f4", ptr=0x10000):
        self.__cuda_array_interface__ = {"shape": (n,), "typestr": typestr, "data": (ptr, False),
                                         "strides": None, "version": 3}


def test_mixed_devices():
    fake = FakeCudaArray(1)
    _raises(r"out: is a cuda array but x is a cpu array; all arrays must be on the same device",
            ext.sequential_sum, F32, out=fake)
    _raises(r"workspace: is a cuda array but x is a cpu array", ext.fixed_order_sum, F32,
            workspace=FakeCudaArray(1024))


@pytest.mark.skipif(C.cuda_device_count() > 0, reason="a GPU is usable here")
def test_gpu_functions_without_gpu_raise_no_gpu_error():
    for fn in (ext.fixed_order_sum, ext.atomic_sum, ext.sequential_sum):
        with pytest.raises(NoGPUError, match="CUDA"):
            fn(FakeCudaArray())
    with pytest.raises(NoGPUError):
        ext.device_properties(0)
    # the raw module: its own NoGPUError (a RuntimeError), never a crash
    with pytest.raises(C.NoGPUError):
        C.sequential_sum(FakeCudaArray(), FakeCudaArray(1), "float32", 0)
    with pytest.raises(RuntimeError):
        C.fixed_order_sum(FakeCudaArray(), FakeCudaArray(1), FakeCudaArray(1024), 1024, 256, 256, "float32", 0)


def test_build_info():
    info = ext.build_info()
    for k in ("built_with_cuda", "cuda_archs", "cuda_runtime_version", "cuda_driver_version", "cublas_version",
              "cublaslt_version", "gpu_count"):
        assert k in info
    assert isinstance(info["gpu_count"], int) and info["gpu_count"] >= 0
    if info["built_with_cuda"]:
        assert info["cuda_archs"] and info["cuda_runtime_version"] >= 11000
    else:
        assert info["cuda_archs"] == ""


def test_call_translates_the_extension_errors():
    out = np.zeros(1, np.float32)
    ext.call("sequential_sum", F32, out, "float32", 0)           # the raw function, by name
    assert out[0] == 0.0
    _raises(r"x: dtype float64", ext.call, "sequential_sum", np.zeros(4), out, "float32", 0)   # TypeError
    _raises(r"stream: must be", ext.call, "sequential_sum", F32, out, "float32", -5)          # ValueError
    _raises(r"variant: must be one of fma, mul_add, plain_contract, plain_nocontract, got 'fused'",
            ext.call, "fma_dot", F32, F32, out, "fused")
    with pytest.raises(ext.ExtensionUnavailable, match="no 'no_such_kernel'.*rebuild"):
        ext.call("no_such_kernel")
    if C.cuda_device_count() == 0:
        with pytest.raises(NoGPUError):
            ext.call("sequential_sum", FakeCudaArray(), FakeCudaArray(1), "float32", 0)


def test_stream_of_cpu_arrays_is_the_default_stream():
    import torch

    assert ext.stream_of(F32) == 0
    assert ext.stream_of(torch.zeros(4)) == 0


def test_extension_unavailable_message(monkeypatch):
    monkeypatch.setattr(ext, "_module", None)
    monkeypatch.setitem(sys.modules, "probes._C", None)   # makes the import fail
    assert not ext.available()
    with pytest.raises(ext.ExtensionUnavailable, match="pip install --no-build-isolation --no-deps -e ."):
        ext.load()


# ---- float16 / bfloat16 conversions of the CPU reference (all 65536 patterns) ----------------------

@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("name", ["float16", "bfloat16"])
def test_small_float_to_double_exhaustive(name):
    patterns = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    want = patterns.view(NP_DTYPES[name]).astype(np.float64)
    got = np.asarray(C._small_to_double_all(name))
    nan = np.isnan(want)
    assert (np.isnan(got) == nan).all()
    assert (got[~nan].view(np.uint64) == want[~nan].view(np.uint64)).all()   # signed zeros too
    back = np.asarray(C._double_to_small_many(name, got.tolist()), np.uint16)
    assert (back[~nan] == patterns[~nan]).all()                               # round trip
    assert np.isnan(back.view(NP_DTYPES[name])[nan].astype(np.float32)).all()  # NaN stays NaN


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("name", ["float16", "bfloat16"])
def test_small_float_rounding(name):
    dt = NP_DTYPES[name]
    patterns = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    v = patterns.view(dt).astype(np.float64)
    ok = np.isfinite(v[:-1]) & np.isfinite(v[1:]) & (patterns[:-1] != 0x8000) & (patterns[:-1] != 0x7fff)
    lo, hi = v[:-1][ok], v[1:][ok]
    mids = (lo + hi) / 2                                   # exact ties: must go to the even neighbour
    rng = np.random.default_rng(6)
    inside = lo + (hi - lo) * rng.uniform(0.01, 0.99, lo.size)
    extra = np.array([0.0, -0.0, np.inf, -np.inf, 65504.0, 65519.99, 65520.0, 1e6, -1e6, 2.0**-24, 2.0**-25,
                      2.0**-25 * 1.0000001, 3.0 * 2.0**-26, 1e-30, 3.4e38, 3.3961776e38, 1e39])
    values = np.concatenate([mids, inside, extra, rng.standard_normal(20000) * 10.0 ** rng.uniform(-30, 30, 20000)])
    if name == "bfloat16":
        values = values.astype(np.float32).astype(np.float64)   # ml_dtypes rounds float32 -> bf16 once
        want = values.astype(np.float32).astype(dt).view(np.uint16)
    else:
        want = values.astype(np.float16).view(np.uint16)        # NumPy rounds float64 -> float16 once
    got = np.asarray(C._double_to_small_many(name, values.tolist()), np.uint16)
    bad = got != want
    assert not bad.any(), f"{values[bad][:5]}: got {got[bad][:5]}, want {want[bad][:5]}"


# ---- kernel source ---------------------------------------------------------------------------------

def test_kernel_source_names():
    src = ext.kernel_source("reduction")
    for d, a in [("f32", "f32"), ("f16", "f32"), ("f16", "f16"), ("bf16", "f32"), ("bf16", "bf16")]:
        for kind in ("fixed_order_sum_pass1", "atomic_sum", "sequential_sum"):
            assert f"{kind}_{d}_{a}" in src
    for a in ("f32", "f16", "bf16"):
        assert f"fixed_order_sum_pass2_{a}" in src
    assert '#include "' not in src                      # self-contained for NVRTC
    includes = {line.split()[1] for line in src.splitlines() if line.startswith("#include")}
    assert includes <= {"<cuda_fp16.h>", "<cuda_bf16.h>"}
    assert ext.kernel_name("fixed_order_sum_pass1", "float16", "float32") == "fixed_order_sum_pass1_f16_f32"
    assert ext.kernel_name("fixed_order_sum_pass2", "bfloat16", "input") == "fixed_order_sum_pass2_bf16"
    for name in ("common", "fixed_order_sum", "atomic_sum", "sequential_sum"):
        assert "namespace driftscope_red" in ext.kernel_source(name)
    with pytest.raises(ext.KernelInputError, match="unknown kernel source"):
        ext.kernel_source("nope")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
def test_kernel_source_compiles_standalone(tmp_path):
    """The embedded text alone (no include path of ours) compiles with nvcc, as NVRTC will compile it."""
    src = tmp_path / "reduction.cu"
    src.write_text(ext.kernel_source("reduction"))
    r = subprocess.run(["nvcc", "-std=c++17", "-arch=sm_90", "-ptx", str(src), "-o", str(tmp_path / "r.ptx")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ptx = (tmp_path / "r.ptx").read_text()
    assert ".entry fixed_order_sum_pass1_f32_f32" in ptx and ".entry atomic_sum_bf16_bf16" in ptx
