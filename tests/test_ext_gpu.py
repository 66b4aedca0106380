"""GPU tests of probes._C: the CUDA kernels give the bits of docs/reduction-orders.md (numerics emulation),
the same bits as the CPU reference, and the same bits when CuPy compiles kernel_source() itself."""
import importlib.util
import os

import ml_dtypes
import numpy as np
import pytest

pytestmark = pytest.mark.gpu

torch = pytest.importorskip("torch")

from probes import ext  # noqa: E402
from probes.errors import NoGPUError  # noqa: E402

if not ext.available():
    pytest.skip(f"probes._C is not built: {ext.BUILD_HINT}", allow_module_level=True)
C = ext.load()

try:
    from numerics import orders as numerics_orders
except ImportError:
    numerics_orders = None

BF16 = np.dtype(ml_dtypes.bfloat16)
NP = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16), "bfloat16": BF16}
TORCH = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
COMBOS = [("float32", "float32"), ("float16", "float32"), ("float16", "input"),
          ("bfloat16", "float32"), ("bfloat16", "input")]
SIZES = [1, 7, 1000, 4097, 2**20 + 3, 2**24]


@pytest.fixture(autouse=True)
def _needs_cuda_build():
    if not C.built_with_cuda():
        pytest.skip("probes._C was built without CUDA")
    if C.cuda_device_count() == 0:
        pytest.skip("probes._C sees no CUDA GPU")


def acc_name(dtype, accumulate):
    return "float32" if accumulate == "float32" else dtype


def make_x(n, dtype, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed + n)
    v = torch.randn(n, generator=g, dtype=torch.float64) * 10.0 ** (torch.rand(n, generator=g, dtype=torch.float64) * 4 - 3)
    return v.to(torch.float32).to(TORCH[dtype]).cuda()


def to_np(t):
    """Tensor (any device) -> NumPy array of the same dtype (bf16 through ml_dtypes)."""
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(BF16)
    return t.numpy()


def bits(a):
    a = np.asarray(a).reshape(-1)
    return a.view({4: np.uint32, 2: np.uint16}[a.dtype.itemsize])


def assert_same_bits(got, want, what=""):
    g, w = np.asarray(got).reshape(-1), np.asarray(want).reshape(-1)
    assert g.dtype == w.dtype, (what, g.dtype, w.dtype)
    assert (bits(g) == bits(w)).all(), f"{what}: got {g[:4]} ({bits(g)[:4]}), want {w[:4]} ({bits(w)[:4]})"


def emulate_fixed(xn, acc, grid=1024, block=256, final_block=256):
    if numerics_orders is not None:
        r = numerics_orders.two_pass_tree_sum(xn, acc=acc, grid=grid, block=block, final_block=final_block,
                                              chunk=16 // xn.itemsize, warp=32)
        return np.asarray(r, dtype=NP[acc]).reshape(1)
    import test_ext  # the small emulation of the CPU tests (tests/ is on sys.path)
    return np.asarray(test_ext.emu_fixed(xn, NP[acc], grid, block, final_block), NP[acc]).reshape(1)


def emulate_sequential(xn, acc):
    if numerics_orders is not None:
        return np.asarray(numerics_orders.sequential_sum(xn, acc), dtype=NP[acc]).reshape(1)
    import test_ext
    return np.asarray([test_ext.emu_sequential(xn, NP[acc])], NP[acc])


# ---- sums equal the page, and the CPU reference ----------------------------------------------------

@pytest.mark.parametrize("dtype,accumulate", COMBOS)
@pytest.mark.parametrize("n", SIZES)
def test_fixed_order_sum_torch_cuda(dtype, accumulate, n):
    x = make_x(n, dtype)
    acc = acc_name(dtype, accumulate)
    ws = torch.empty(1024, dtype=TORCH[acc], device="cuda")
    out = ext.fixed_order_sum(x, accumulate=accumulate, workspace=ws)
    assert out.is_cuda and out.dtype == TORCH[acc] and out.shape == (1,)
    xn = to_np(x)
    assert_same_bits(to_np(out), emulate_fixed(xn, acc), f"fixed n={n} {dtype}/{accumulate}")
    cpu_ws = np.empty(1024, NP[acc])
    cpu = ext.fixed_order_sum(xn, accumulate=accumulate, workspace=cpu_ws)
    assert_same_bits(to_np(out), cpu, "GPU vs CPU reference")
    assert_same_bits(to_np(ws), cpu_ws, "GPU vs CPU partials")


@pytest.mark.parametrize("dtype,accumulate", COMBOS)
@pytest.mark.parametrize("grid,block,final_block", [(1, 32, 32), (3, 64, 32), (7, 1024, 1024), (130, 96, 64)])
def test_fixed_order_sum_launch_shapes(dtype, accumulate, grid, block, final_block):
    x = make_x(100003, dtype, seed=1)
    acc = acc_name(dtype, accumulate)
    out = ext.fixed_order_sum(x, grid=grid, block=block, final_block=final_block, accumulate=accumulate)
    assert_same_bits(to_np(out), emulate_fixed(to_np(x), acc, grid, block, final_block), "fixed shapes")


@pytest.mark.parametrize("dtype,accumulate", COMBOS)
@pytest.mark.parametrize("n", SIZES)
def test_sequential_sum_torch_cuda(dtype, accumulate, n):
    x = make_x(n, dtype, seed=2)
    acc = acc_name(dtype, accumulate)
    out = ext.sequential_sum(x, accumulate=accumulate)
    assert_same_bits(to_np(out), emulate_sequential(to_np(x), acc), f"sequential n={n} {dtype}/{accumulate}")


def test_fixed_order_sum_is_deterministic():
    x = make_x(2**24, "float32", seed=3)
    patterns = {int(bits(to_np(ext.fixed_order_sum(x)))[0]) for _ in range(20)}
    assert len(patterns) == 1


def test_runs_on_the_current_torch_stream():
    x = make_x(2**20 + 3, "float32", seed=4)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        out = ext.fixed_order_sum(x)
    s.synchronize()
    assert_same_bits(to_np(out), emulate_fixed(to_np(x), "float32"), "on a side stream")


# ---- atomic ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,accumulate", COMBOS)
def test_atomic_sum_torch_cuda(dtype, accumulate):
    acc = acc_name(dtype, accumulate)
    x = make_x(2**20 + 3, dtype, seed=5)
    one = ext.atomic_sum(x, grid=1, block=256, accumulate=accumulate)
    assert_same_bits(to_np(one), to_np(ext.fixed_order_sum(x, grid=1, block=256, accumulate=accumulate)),
                     "atomic grid=1 == fixed grid=1")
    ws = torch.empty(1024, dtype=TORCH[acc], device="cuda")
    fixed = ext.fixed_order_sum(x, accumulate=accumulate, workspace=ws)
    p = to_np(ws).astype(np.float64)
    eps = {"float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}[acc]
    bound = 2 * 1024 * eps * np.abs(p).sum() + 1e-30       # any order of adding the 1024 partials
    results = set()
    for _ in range(20):
        a = float(to_np(ext.atomic_sum(x, accumulate=accumulate)).astype(np.float64)[0])
        assert abs(a - float(to_np(fixed).astype(np.float64)[0])) <= bound
        results.add(a)
    print(f"[atomic_sum GPU {dtype}/{accumulate}] {len(results)} distinct results over 20 runs")


# ---- CuPy: arrays, and the same source compiled by NVRTC -------------------------------------------

cupy_missing = importlib.util.find_spec("cupy") is None


@pytest.mark.skipif(cupy_missing, reason="cupy not installed")
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("n", [7, 4097, 2**20 + 3])
def test_cupy_arrays(dtype, n):
    import cupy
    x = cupy.asarray(to_np(make_x(n, dtype, seed=6)))
    for accumulate in ("float32", "input"):
        acc = acc_name(dtype, accumulate)
        out = ext.fixed_order_sum(x, accumulate=accumulate)
        assert isinstance(out, cupy.ndarray)
        assert_same_bits(cupy.asnumpy(out), emulate_fixed(cupy.asnumpy(x), acc), "cupy fixed")
        out = ext.sequential_sum(x, accumulate=accumulate)
        assert_same_bits(cupy.asnumpy(out), emulate_sequential(cupy.asnumpy(x), acc), "cupy sequential")


@pytest.mark.skipif(cupy_missing, reason="cupy not installed")
@pytest.mark.parametrize("dtype,accumulate", COMBOS)
@pytest.mark.parametrize("n", [1, 4097, 2**20 + 3])
def test_cupy_rawmodule_same_source_same_bits(dtype, accumulate, n):
    import cupy
    acc = acc_name(dtype, accumulate)
    x = make_x(n, dtype, seed=7)
    mod = cupy.RawModule(code=ext.kernel_source("reduction"), options=("--std=c++17",))
    # f16/bf16 travel as uint16 views (CuPy has no bfloat16); the kernels only see pointers.
    view = {"float32": torch.int32, "float16": torch.int16, "bfloat16": torch.int16}
    xc = cupy.asarray(x.view(view[dtype]))
    acc_np = np.int32 if acc == "float32" else np.int16
    grid, block, final_block = 1024, 256, 256
    ws = cupy.empty(grid, acc_np)
    out = cupy.empty(1, acc_np)
    pass1 = mod.get_function(ext.kernel_name("fixed_order_sum_pass1", dtype, accumulate))
    pass2 = mod.get_function(ext.kernel_name("fixed_order_sum_pass2", dtype, accumulate))
    pass1((grid,), (block,), (xc, np.int64(n), ws))
    pass2((1,), (final_block,), (ws, np.int64(grid), out))
    seq = cupy.empty(1, acc_np)
    mod.get_function(ext.kernel_name("sequential_sum", dtype, accumulate))((1,), (1,), (xc, np.int64(n), seq))
    cupy.cuda.Device().synchronize()
    got = ext.fixed_order_sum(x, accumulate=accumulate)
    assert_same_bits(cupy.asnumpy(out).view(bits(to_np(got)).dtype), bits(to_np(got)), "RawModule fixed")
    seq_ext = ext.sequential_sum(x, accumulate=accumulate)
    assert_same_bits(cupy.asnumpy(seq).view(bits(to_np(seq_ext)).dtype), bits(to_np(seq_ext)), "RawModule seq")


# ---- Numba device arrays ---------------------------------------------------------------------------

@pytest.mark.skipif(importlib.util.find_spec("numba") is None or os.environ.get("NUMBA_ENABLE_CUDASIM") == "1",
                    reason="numba-cuda not usable")
def test_numba_device_arrays():
    from numba import cuda
    xn = to_np(make_x(4097, "float32", seed=8))
    x = cuda.to_device(xn)
    out = ext.fixed_order_sum(x)
    assert_same_bits(out.copy_to_host(), emulate_fixed(xn, "float32"), "numba fixed")
    out = ext.sequential_sum(x)
    assert_same_bits(out.copy_to_host(), emulate_sequential(xn, "float32"), "numba sequential")


# ---- validation on the GPU -------------------------------------------------------------------------

def test_misaligned_pointer():
    base = make_x(4098, "float32", seed=9)
    x = base[1:]                                   # 4-byte offset: not 16-byte aligned
    assert x.data_ptr() % 16 != 0
    out = ext.fixed_order_sum(x)                   # the wrapper copies to an aligned buffer
    assert_same_bits(to_np(out), emulate_fixed(to_np(x), "float32"), "misaligned via copy")
    assert_same_bits(to_np(ext.sequential_sum(x)), emulate_sequential(to_np(x), "float32"), "misaligned seq")
    with pytest.raises(ValueError, match="not 16-byte aligned"):
        C.fixed_order_sum(x, torch.empty(1, device="cuda"), torch.empty(1024, device="cuda"), 1024, 256, 256,
                          "float32", 0)


def test_mixed_devices_gpu():
    x = make_x(100, "float32")
    with pytest.raises(ext.KernelInputError, match="out: is a cpu array but x is a cuda array"):
        ext.fixed_order_sum(x, out=torch.empty(1))
    with pytest.raises(ext.KernelInputError, match="workspace: is a cpu array but x is a cuda array"):
        ext.fixed_order_sum(x, workspace=torch.empty(1024))
    with pytest.raises(ext.KernelInputError, match="out: is a cuda array but x is a cpu array"):
        ext.sequential_sum(x.cpu(), out=torch.empty(1, device="cuda"))
    if torch.cuda.device_count() > 1:
        with pytest.raises(ext.KernelInputError, match="out: is on cuda:1 but x is on cuda:0"):
            ext.sequential_sum(x, out=torch.empty(1, device="cuda:1"))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_second_gpu():
    x = make_x(4097, "float16").to("cuda:1")
    out = ext.fixed_order_sum(x)
    assert out.device == x.device
    assert_same_bits(to_np(out), emulate_fixed(to_np(x), "float32"), "cuda:1")


def test_bad_launch_parameters_gpu():
    x = make_x(100, "float32")
    with pytest.raises(ext.KernelInputError, match="block: must be a multiple of 32"):
        ext.fixed_order_sum(x, block=100)
    with pytest.raises(ext.KernelInputError, match="x: empty input"):
        ext.fixed_order_sum(torch.empty(0, device="cuda"))
    with pytest.raises(ext.KernelInputError, match="x: dtype float64 is not supported"):
        ext.sequential_sum(torch.zeros(8, dtype=torch.float64, device="cuda"))


def test_info_functions():
    info = ext.build_info()
    assert info["built_with_cuda"] and info["gpu_count"] >= 1
    assert info["cuda_driver_version"] and info["cuda_runtime_version"]
    print("[build_info]", info)
    props = ext.device_properties(0)
    for k in ("name", "major", "minor", "multiprocessor_count", "l2_cache_size", "total_memory",
              "memory_bus_width", "max_threads_per_multiprocessor", "shared_memory_per_block",
              "shared_memory_per_multiprocessor", "uuid"):
        assert k in props
    assert props["uuid"].startswith("GPU-") and len(props["uuid"]) == 40
    assert (props["major"], props["minor"]) == torch.cuda.get_device_capability(0)
    with pytest.raises(ext.KernelInputError, match="out of range"):
        ext.device_properties(C.cuda_device_count())
    with pytest.raises((NoGPUError, ext.KernelInputError)):
        ext.device_properties(-1)


# ---- bandwidth -------------------------------------------------------------------------------------

def test_pass1_bandwidth_report():
    """2^28 float32, grid=1024, block=256: the sum reads 1 GiB; compare with a device-to-device copy
    (reads + writes). Target: ~95% of the memory bandwidth on an H100/H200."""
    n = 2**28
    x = torch.ones(n, dtype=torch.float32, device="cuda")
    out = torch.empty(1, device="cuda")
    ws = torch.empty(1024, device="cuda")
    for _ in range(3):
        ext.fixed_order_sum(x, out=out, workspace=ws)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        ext.fixed_order_sum(x, out=out, workspace=ws)
    end.record()
    end.synchronize()
    sum_gbs = 10 * n * 4 / (start.elapsed_time(end) * 1e-3) / 1e9
    y = torch.empty_like(x)
    y.copy_(x)
    start.record()
    for _ in range(10):
        y.copy_(x)
    end.record()
    end.synchronize()
    copy_gbs = 10 * 2 * n * 4 / (start.elapsed_time(end) * 1e-3) / 1e9
    assert float(to_np(out)[0]) == float(n)
    print(f"\n[bandwidth] fixed_order_sum {sum_gbs:.0f} GB/s, copy {copy_gbs:.0f} GB/s "
          f"({sum_gbs / copy_gbs:.1%} of copy) on {torch.cuda.get_device_name()}")
    assert sum_gbs >= 0.8 * copy_gbs
