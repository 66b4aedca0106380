"""A batch-invariant matmul in Triton: Y = X @ W^T (F.linear) whose rows never depend on M.

Why cuBLAS is not: its heuristic picks a kernel (tile, split-K, reduction) from the shape, so the same row
of X @ W^T is summed in another order once X gains rows. Here the whole kernel configuration is a
function of the shape class (N, K) only (`config_for`), never of M:
  * one output tile per program iteration, the full K range summed by that program (no split-K),
  * a fixed K loop: k-tiles 0, 1, 2 ... in order, each a tl.dot of the same BLOCK_M x BLOCK_K x BLOCK_N
    shape, accumulated in float32, cast once to the output dtype,
  * M and the program count are run-time arguments that Triton must not specialise on
    (do_not_specialize), so one compiled kernel serves every M.
Rows of a tile beyond M read zeros (TMA fills out-of-bounds with zeros, the pointer kernel masks them):
they never enter another row's sum. The grid is persistent (min(SMs, tiles) programs walking the tiles in
grouped order); which program computes a tile does not change how.

Two kernels: `bi_matmul_tma_kernel` (Hopper: TMA tensor descriptors, wgmma through tl.dot) and
`bi_matmul_ptr_kernel` (pointer loads; any GPU and Triton's interpreter). `CANDIDATES` holds a few configs
per shape class; `benchmark` times them against cuBLAS (torch F.linear) in one run and `choose` records
the best per class (the choice is a function of (N, K, dtype) and of measurements, never of M).
"""
from __future__ import annotations

import json
import os

import numpy as np

from probes.ext import KernelInputError

import triton
import triton.language as tl

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

if INTERPRETED:
    # Triton 3.6's interpreter turns a scalar tensor into an int through int(1-element array), which
    # NumPy >= 2.4 refuses (run-time loop bounds fail). Same conversion, through .reshape(-1)[0].
    import triton.runtime.interpreter as _interp

    if not getattr(_interp, "_driftscope_index_shim", False):
        _original_patch = _interp._patch_lang_tensor

        def _patch_lang_tensor(tensor, scope):
            _original_patch(tensor, scope)
            scope.set_attr(tensor, "__index__", lambda self: int(np.asarray(self.handle.data).reshape(-1)[0]))

        _interp._patch_lang_tensor = _patch_lang_tensor
        _interp._driftscope_index_shim = True

try:
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # older Triton: the pointer kernel only
    TensorDescriptor = None


# ---- the kernels -------------------------------------------------------------------------------------

@triton.jit
def _tile_coords(tile_id, num_pid_in_group, num_pid_m, GROUP_M: tl.constexpr):
    """Grouped ordering: GROUP_M row-tiles share each column of W while it is in L2."""
    group_id = tile_id // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + (tile_id % group_size_m)
    pid_n = (tile_id % num_pid_in_group) // group_size_m
    return pid_m, pid_n


@triton.jit(do_not_specialize=["M", "num_programs"])
def bi_matmul_tma_kernel(x_desc, w_desc, y_desc, M, N, K, num_programs,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                         GROUP_M: tl.constexpr, FLATTEN: tl.constexpr):
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    num_tiles = num_pid_m * num_pid_n
    num_pid_in_group = GROUP_M * num_pid_n
    for tile_id in tl.range(pid, num_tiles, num_programs, flatten=FLATTEN):
        pid_m, pid_n = _tile_coords(tile_id, num_pid_in_group, num_pid_m, GROUP_M)
        offs_m = pid_m * BLOCK_M
        offs_n = pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for ki in range(k_tiles):  # fixed order: k-tile 0, 1, 2, ...
            a = x_desc.load([offs_m, ki * BLOCK_K])
            b = w_desc.load([offs_n, ki * BLOCK_K])
            acc = tl.dot(a, b.T, acc)
        y_desc.store([offs_m, offs_n], acc.to(y_desc.dtype))


@triton.jit(do_not_specialize=["M", "num_programs"])
def bi_matmul_ptr_kernel(x_ptr, w_ptr, y_ptr, M, N, K, num_programs, stride_xm, stride_wn, stride_ym,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                         GROUP_M: tl.constexpr, FLATTEN: tl.constexpr):
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    num_tiles = num_pid_m * num_pid_n
    num_pid_in_group = GROUP_M * num_pid_n
    for tile_id in tl.range(pid, num_tiles, num_programs, flatten=FLATTEN):
        pid_m, pid_n = _tile_coords(tile_id, num_pid_in_group, num_pid_m, GROUP_M)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for ki in range(k_tiles):  # fixed order: k-tile 0, 1, 2, ...
            k = ki * BLOCK_K + rk
            a = tl.load(x_ptr + rm[:, None] * stride_xm + k[None, :], mask=(rm[:, None] < M) & (k[None, :] < K),
                        other=0.0)
            b = tl.load(w_ptr + rn[:, None] * stride_wn + k[None, :], mask=(rn[:, None] < N) & (k[None, :] < K),
                        other=0.0)
            acc = tl.dot(a, b.T, acc)
        tl.store(y_ptr + rm[:, None] * stride_ym + rn[None, :], acc.to(y_ptr.dtype.element_ty),
                 mask=(rm[:, None] < M) & (rn[None, :] < N))


# ---- configurations: a function of (N, K), never of M -----------------------------------------------

def cfg(impl, bm, bn, bk, group_m=8, stages=3, warps=8, flatten=True):
    return {"impl": impl, "BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group_m,
            "num_stages": stages, "num_warps": warps, "FLATTEN": flatten}


def config_name(c):
    return (f"{c['impl']}-{c['BLOCK_M']}x{c['BLOCK_N']}x{c['BLOCK_K']}-g{c['GROUP_M']}-s{c['num_stages']}"
            f"-w{c['num_warps']}{'' if c['FLATTEN'] else '-nf'}")


#: Mistral-7B's linear layers: name -> (N, K) of F.linear(x [M, K], W [N, K]).
MISTRAL_SHAPES = {
    "q_o": (4096, 4096),
    "k_v": (1024, 4096),
    "gate_up": (14336, 4096),
    "down": (4096, 14336),
    "lm_head": (32000, 4096),
}

# (128x256x64 with 4 stages would need ~256 KB of shared memory with its epilogue: not a candidate.)
_BIG = [cfg("tma", 128, 256, 64, stages=3), cfg("tma", 128, 128, 64, stages=4),
        cfg("tma", 128, 256, 64, stages=3, group_m=16), cfg("tma", 128, 128, 64, stages=4, flatten=False),
        cfg("ptr", 128, 128, 64, stages=3)]
_NARROW = [cfg("tma", 128, 128, 64, stages=4), cfg("tma", 64, 128, 64, stages=4, warps=4),
           cfg("tma", 128, 64, 64, stages=4, warps=4), cfg("tma", 64, 64, 128, stages=4, warps=4),
           cfg("ptr", 64, 128, 64, stages=4, warps=4)]
#: Candidate configs per shape class (N, K); the first is the default until `choose` picks from measurements.
CANDIDATES = {
    (4096, 4096): [cfg("tma", 128, 128, 64, stages=4), cfg("tma", 128, 256, 64, stages=3),
                   cfg("tma", 64, 128, 64, stages=4, warps=4), cfg("tma", 64, 64, 128, stages=4, warps=4),
                   cfg("ptr", 128, 128, 64, stages=3)],
    (1024, 4096): _NARROW,
    (14336, 4096): _BIG,
    (4096, 14336): [cfg("tma", 128, 128, 64, stages=4), cfg("tma", 128, 256, 64, stages=3),
                    cfg("tma", 64, 128, 64, stages=4, warps=4), cfg("ptr", 128, 128, 64, stages=3)],
    (32000, 4096): _BIG,
}
GENERIC = cfg("tma", 128, 128, 64, stages=3)
#: Small tiles for the interpreter (CPU); also fixed per class.
INTERPRETER_CONFIG = cfg("ptr", 16, 16, 16, group_m=2, stages=1, warps=1)

#: Chosen config per (N, K, dtype) once measured (`choose`), loaded from GEMM_TRITON_CHOICES if set.
CHOICES: dict = {}


def load_choices(path):
    """Read a choices file written by `save_choices` (JSON list of {N, K, dtype, config})."""
    with open(path) as f:
        for row in json.load(f):
            CHOICES[(int(row["N"]), int(row["K"]), row["dtype"])] = row["config"]


def save_choices(path):
    rows = [{"N": n, "K": k, "dtype": d, "config": c, "name": config_name(c)} for (n, k, d), c in CHOICES.items()]
    with open(path, "w") as f:
        json.dump(rows, f, indent=1)


if os.environ.get("GEMM_TRITON_CHOICES"):
    load_choices(os.environ["GEMM_TRITON_CHOICES"])


def config_by_name(name):
    for c in [GENERIC, INTERPRETER_CONFIG] + [c for cs in CANDIDATES.values() for c in cs]:
        if config_name(c) == name:
            return c
    raise KeyError(f"no Triton matmul config named {name!r}")


def config_for(n, k, dtype, device_type="cuda"):
    """The kernel config of shape class (N, K): measured choice, else the class's first candidate."""
    if device_type == "cpu" or INTERPRETED:
        return INTERPRETER_CONFIG
    key = (int(n), int(k), str(dtype).replace("torch.", ""))
    if key in CHOICES:
        return CHOICES[key]
    return CANDIDATES.get((int(n), int(k)), [GENERIC])[0]


# ---- the wrapper ---------------------------------------------------------------------------------------

_SM_COUNT = {}


def _programs(device, tiles):
    if device.type != "cuda":
        return max(1, min(tiles, 4))
    if device.index not in _SM_COUNT:
        import torch
        _SM_COUNT[device.index] = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(tiles, _SM_COUNT[device.index]))


def check_inputs(x, w):
    import torch

    for name, t in (("x", x), ("w", w)):
        if not isinstance(t, torch.Tensor):
            raise KernelInputError(f"{name}: must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 2:
            raise KernelInputError(f"{name}: must be 2-D, got shape {tuple(t.shape)}")
        if t.dtype not in (torch.bfloat16, torch.float16):
            raise KernelInputError(f"{name}: dtype must be bfloat16 or float16, got {t.dtype}")
        if not t.is_contiguous():
            raise KernelInputError(f"{name}: must be contiguous (row-major), got strides {t.stride()}")
        if t.numel() == 0:
            raise KernelInputError(f"{name}: empty tensor of shape {tuple(t.shape)}")
    if x.dtype != w.dtype:
        raise KernelInputError(f"dtype mismatch: x is {x.dtype}, w is {w.dtype}")
    if x.shape[1] != w.shape[1]:
        raise KernelInputError(f"shape mismatch: x is {tuple(x.shape)} [M, K], w is {tuple(w.shape)} [N, K]; "
                               f"K differs ({x.shape[1]} vs {w.shape[1]})")
    if x.device != w.device:
        raise KernelInputError(f"device mismatch: x on {x.device}, w on {w.device}")
    if x.device.type == "cuda" and INTERPRETED:
        raise KernelInputError("x is a CUDA tensor but TRITON_INTERPRET=1 (the interpreter runs on CPU tensors)")
    if x.device.type == "cpu" and not INTERPRETED:
        from probes.errors import NoGPUError
        raise NoGPUError("batch_invariant_matmul on CPU tensors needs TRITON_INTERPRET=1 set before triton is "
                         "imported (python -m probes.gemm --device cpu does it)")


def batch_invariant_matmul(x, w, *, config=None, out=None):
    """F.linear(x, w) = x @ w.T with x [M, K], w [N, K] (bf16/fp16), float32 accumulation. Row i of the
    result depends on x[i] and w only: never on M or on the other rows."""
    import torch

    check_inputs(x, w)
    M, K = x.shape
    N = w.shape[0]
    if config is None:
        c = dict(config_for(N, K, x.dtype, x.device.type))
        try:
            return _launch(x, w, c, out)
        except (KernelInputError, NotImplementedError):
            raise
        except Exception as exc:
            if c["impl"] != "tma":
                raise
            # A TMA config that does not compile here: the pointer kernel with the same tiles, recorded as
            # the class's choice so that every later M uses it too (the choice stays independent of M).
            fallback = dict(c, impl="ptr")
            CHOICES[(int(N), int(K), str(x.dtype).replace("torch.", ""))] = fallback
            FALLBACKS.append({"N": N, "K": K, "dtype": str(x.dtype), "from": config_name(c),
                              "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
            return _launch(x, w, fallback, out)
    return _launch(x, w, dict(config), out)


#: TMA configs that failed to compile and were replaced by the pointer kernel (reported by the probe).
FALLBACKS: list = []


def _launch(x, w, c, out):
    import torch

    M, K = x.shape
    N = w.shape[0]
    if out is None:
        out = torch.empty((M, N), dtype=x.dtype, device=x.device)
    elif out.shape != (M, N) or out.dtype != x.dtype or out.device != x.device or not out.is_contiguous():
        raise KernelInputError(f"out: must be a contiguous {x.dtype} tensor of shape ({M}, {N}) on {x.device}, got "
                               f"{out.dtype} {tuple(out.shape)} on {out.device}")
    tiles = triton.cdiv(M, c["BLOCK_M"]) * triton.cdiv(N, c["BLOCK_N"])
    programs = _programs(x.device, tiles)
    meta = dict(BLOCK_M=c["BLOCK_M"], BLOCK_N=c["BLOCK_N"], BLOCK_K=c["BLOCK_K"], GROUP_M=c["GROUP_M"],
                FLATTEN=c["FLATTEN"], num_warps=c["num_warps"], num_stages=c["num_stages"])
    # TMA needs 16-byte aligned row strides (K and N multiples of 8 for 2-byte types): a (N, K) property.
    use_tma = c["impl"] == "tma" and TensorDescriptor is not None and K % 8 == 0 and N % 8 == 0
    if use_tma:
        x_desc = TensorDescriptor.from_tensor(x, [c["BLOCK_M"], c["BLOCK_K"]])
        w_desc = TensorDescriptor.from_tensor(w, [c["BLOCK_N"], c["BLOCK_K"]])
        y_desc = TensorDescriptor.from_tensor(out, [c["BLOCK_M"], c["BLOCK_N"]])
        bi_matmul_tma_kernel[(programs,)](x_desc, w_desc, y_desc, M, N, K, programs, **meta)
    else:
        bi_matmul_ptr_kernel[(programs,)](x, w, out, M, N, K, programs, x.stride(0), w.stride(0), out.stride(0),
                                          **meta)
    return out


def reference(x, w):
    """float64 product of the same inputs rounded once to float32 (the 'close' reference of the tests)."""
    return (x.double() @ w.double().T).float()


# ---- measurement against cuBLAS ------------------------------------------------------------------------

#: Speed targets vs cuBLAS (torch F.linear) from the task: >= 0.9x for M >= 256, >= 0.8x below.
def target_ratio(m):
    return 0.9 if m >= 256 else 0.8


def benchmark(shapes=None, ms=(64, 256, 1400, 4096), dtype="bfloat16", candidates=None, *, seed=0, warmup=10,
              rep=40, log=None):
    """Time every candidate of each shape class and cuBLAS (F.linear) at each M, in one run.
    Returns rows {shape, N, K, M, config, triton_ms, cublas_ms, tflops, cublas_tflops, ratio, target, error}."""
    import torch
    import torch.nn.functional as F

    shapes = shapes or MISTRAL_SHAPES
    tdt = getattr(torch, dtype)
    gen = torch.Generator(device="cuda").manual_seed(seed)
    rows = []
    for name, (n, k) in shapes.items():
        w = (torch.randn((n, k), device="cuda", generator=gen) * k ** -0.5).to(tdt)
        xs = torch.randn((max(ms), k), device="cuda", generator=gen).to(tdt)
        for m in ms:
            x = xs[:m]
            cublas_ms = triton.testing.do_bench(lambda: F.linear(x, w), warmup=warmup, rep=rep, return_mode="median")
            flop = 2.0 * m * n * k
            for c in (candidates or CANDIDATES.get((n, k), [GENERIC])):
                row = {"shape": name, "N": n, "K": k, "M": m, "dtype": dtype, "config": config_name(c),
                       "cublas_ms": cublas_ms, "cublas_tflops": flop / cublas_ms * 1e-9, "target": target_ratio(m)}
                try:
                    out = torch.empty((m, n), dtype=tdt, device="cuda")
                    batch_invariant_matmul(x, w, config=c, out=out)
                    torch.cuda.synchronize()
                    ms_ = triton.testing.do_bench(lambda: batch_invariant_matmul(x, w, config=c, out=out),
                                                  warmup=warmup, rep=rep, return_mode="median")
                    row.update(triton_ms=ms_, tflops=flop / ms_ * 1e-9, ratio=cublas_ms / ms_)
                    ref = F.linear(x, w)
                    row["max_abs_diff_vs_cublas"] = float((out.float() - ref.float()).abs().max())
                except Exception as exc:  # a config that does not compile is a row, not the end
                    row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                rows.append(row)
                if log:
                    log(_row_text(row))
    return rows


def _row_text(r):
    if "error" in r:
        return f"{r['shape']:8s} M={r['M']:5d} {r['config']:34s} ERROR {r['error']}"
    return (f"{r['shape']:8s} M={r['M']:5d} {r['config']:34s} triton {r['tflops']:6.1f} TFLOP/s  cublas "
            f"{r['cublas_tflops']:6.1f}  ratio {r['ratio']:.3f} (target {r['target']})")


def choose(rows):
    """Per (shape class, dtype) the candidate with the best worst-case ratio/target over the measured M;
    stores it in CHOICES and returns {shape: {config, score, ratios}}."""
    by = {}
    for r in rows:
        by.setdefault((r["N"], r["K"], r["dtype"], r["shape"]), {}).setdefault(r["config"], []).append(r)
    picked = {}
    for (n, k, dtype, shape), per in by.items():
        best = None
        for name, rs in per.items():
            if any("error" in r for r in rs):
                continue
            score = min(r["ratio"] / r["target"] for r in rs)
            if best is None or score > best[0]:
                best = (score, name, rs)
        if best is None:
            continue
        score, name, rs = best
        config = config_by_name(name)
        CHOICES[(n, k, dtype)] = config
        picked[shape] = {"config": name, "score": score, "meets_targets": score >= 1.0,
                         "ratios": {r["M"]: round(r["ratio"], 3) for r in rs}}
    return picked
