"""Dequantise inside the matmul versus dequantise, then matmul - and what the formula does to a layer.

`fused_int4_matmul`: Y = X @ W^T with X bf16 (M, K) and W int4 group-wise (N, K) dequantised tile by
tile inside the Triton kernel (the same `dequant_formula` as triton_dequant), cast to bf16, tl.dot with float32
accumulation. `matmul_bf16` is the same kernel reading an already dequantised bf16 W. The dequantised
tiles are the same bits, but not necessarily the same K order: with the decode tiles (BM=16, mma v2)
Triton gives the dot operands kWidth = 8 when W comes from 8-bit loads (kWidth = 2 for bf16 loads),
which permutes K inside each 64-wide tile (mma_k_order.py); the tensor core's block-FMA chain
(numerics.matmul) is order dependent, so fused and unfused outputs differ by a few fp32 ulps. With
BM=64 (wgmma, operands in shared memory, K in order) the two are expected to agree bit for bit.
`fused_experiment` measures both and checks each output against `TC_MODEL` in its own K order.
`layer_experiments`: a Mistral-shaped layer (x: M x 4096, W: 4096 x 4096 and 14336 x 4096): max ulp
between the formulas' outputs, relative error against a float64 reference (X and the exact weights
(q - z) * s in float64), and top-1 / top-5 changes of the logits of a seeded random lm_head
(4096 x 32000) fed with each formula's output."""
import dataclasses

import numpy as np
import torch
import triton
import triton.language as tl

from numerics import dequant as dq
from numerics.formats import cast
from numerics.matmul import MatmulModel, model_matmul
from numerics.metrics import bitwise_equal, count_differing, max_relative_difference, max_ulp

from probes.convert import to_numpy, to_torch
from probes.report import TIMINGS, compares_all_metrics
from .inputs import int4_inputs
from .mma_k_order import dot_k_widths, k_order, mma_kind
from .triton_dequant import FORMULA_CODES, INTERPRETED, dequant_formula, round_bf16


@triton.jit
def fused_int4_matmul_kernel(x_ptr, w_ptr, s_ptr, z_ptr, y_ptr, t_ptr, M, N, K, GROUP,
                             FORMULA: tl.constexpr, COMPUTE16: tl.constexpr, SYMMETRIC: tl.constexpr,
                             FUSED: tl.constexpr, INTERP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                             BK: tl.constexpr, TILE_OUT: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    k0 = 0
    while k0 < K:  # K and GROUP are run-time arguments (a while loop: the interpreter's range() needs constants)
        rk = k0 + tl.arange(0, BK)
        x = tl.load(x_ptr + rm[:, None] * K + rk[None, :], mask=rm[:, None] < M, other=0.0)
        if FUSED:
            rkh = k0 // 2 + tl.arange(0, BK // 2)
            b = tl.load(w_ptr + rn[:, None] * (K // 2) + rkh[None, :], mask=rn[:, None] < N, other=0).to(tl.int32)
            gi = rn * (K // GROUP) + k0 // GROUP
            s = tl.broadcast_to(tl.load(s_ptr + gi, mask=rn < N, other=1.0).to(tl.float32)[:, None], (BN, BK // 2))
            lo = b & 0xF
            hi = (b >> 4) & 0xF
            if SYMMETRIC:
                lo = (lo ^ 8) - 8
                hi = (hi ^ 8) - 8
                z = tl.zeros_like(s)
            else:
                z = tl.broadcast_to(tl.load(z_ptr + gi, mask=rn < N, other=0.0).to(tl.float32)[:, None], (BN, BK // 2))
            wl = dequant_formula(lo.to(tl.float32), s, z, FORMULA, COMPUTE16, INTERP)
            wh = dequant_formula(hi.to(tl.float32), s, z, FORMULA, COMPUTE16, INTERP)
            w = round_bf16(tl.reshape(tl.join(wl, wh), (BN, BK)), INTERP)
            if TILE_OUT:  # the dequantised bf16 tile the dot gets, for the tests (program row 0 writes it)
                if pid_m == 0:
                    tl.store(t_ptr + rn[:, None] * K + rk[None, :], w, mask=rn[:, None] < N)
        else:
            w = tl.load(w_ptr + rn[:, None] * K + rk[None, :], mask=rn[:, None] < N, other=0.0)
        if INTERP:  # the interpreter's dot misreads bfloat16 operands: feed it their (exact) float32 values
            acc = tl.dot(x.to(tl.float32), tl.trans(w.to(tl.float32)), acc)
        else:
            acc = tl.dot(x, tl.trans(w), acc)
        k0 += BK
    tl.store(y_ptr + rm[:, None] * N + rn[None, :], acc, mask=(rm[:, None] < M) & (rn[None, :] < N))


def _launch(x, w, scales, zeros, n, fused, group_size=128, formula="sub_mul", compute="float32",
            bm=16, bn=64, bk=64, tile_out=None, info=None):
    """tile_out: an (N, K) bf16 tensor that receives the fused kernel's dequantised tiles. info: a dict
    that receives the compiled kernel's dot: 'mma' (mma_v2 | wgmma), 'k_widths', 'k_order' (GPU only)."""
    m, k = x.shape
    if k % bk or group_size % bk:
        raise ValueError(f"K ({k}) and group_size ({group_size}) must be multiples of BK={bk}")
    y = torch.empty((m, n), dtype=torch.float32, device=x.device)
    grid = (triton.cdiv(m, bm), triton.cdiv(n, bn))
    compiled = fused_int4_matmul_kernel[grid](
        x, w, scales if scales is not None else w, zeros if zeros is not None else w, y,
        tile_out if tile_out is not None else y, m, n, k, group_size, FORMULA=FORMULA_CODES[formula],
        COMPUTE16=compute == "float16", SYMMETRIC=zeros is None, FUSED=fused, INTERP=INTERPRETED, BM=bm, BN=bn,
        BK=bk, TILE_OUT=tile_out is not None, num_warps=4)
    if info is not None and not INTERPRETED:
        info.update(dot_info(compiled.asm["ttgir"], k, bk))
    return y


def dot_info(ttgir, k, bk):
    """What a compiled kernel's dot does with K: instruction kind, operand kWidths, the K order."""
    kind = mma_kind(ttgir)
    widths = dot_k_widths(ttgir)
    order = None
    if kind == "wgmma":
        order = np.arange(k)  # shared-memory operands, K in order (k16 per instruction)
    elif kind == "mma_v2" and widths and len(set(widths)) == 1:
        order = k_order(k, bk, widths[0])
    return {"mma": kind, "k_widths": widths, "k_order": order}


# The H100 tensor core's bf16 dot as probes.accumulator measured it for Triton's tl.dot (wgmma): exact
# products, blocks of 16 added with the fp32 accumulator, aligned with 2 extra bits, truncated.
TC_MODEL = MatmulModel(input_format="bfloat16", block_size=16, extra_bits=2, rounding="toward_zero",
                       align_to="exponent_sum")


def model_output(x, w, order, model=TC_MODEL):
    """x (M, K), w (N, K) bf16 values (NumPy) -> (M, N) float32: each output's K products through
    `model` in the given K order (the kernel's acc = dot(x, w, acc) chain)."""
    xo = np.asarray(x, np.float64)[:, order]
    wo = np.asarray(w, np.float64)[:, order]
    return model_matmul(xo, wo.T, model).astype(np.float32)


def fused_int4_matmul(x, packed, scales, zeros, *, group_size=128, formula="sub_mul", compute="float32", **kw):
    """x (M, K) bf16, packed (N, K/2) uint8, fp16 scales/zeros -> (M, N) float32, dequantised in the tile."""
    return _launch(x, packed, scales, zeros, packed.shape[0], True, group_size, formula, compute, **kw)


def matmul_bf16(x, w, **kw):
    """x (M, K) bf16 @ w (N, K) bf16 ^T with the same tiles as the fused kernel -> float32."""
    return _launch(x, w, None, None, w.shape[0], False, **kw)


# ---- the layer experiment ------------------------------------------------------------------------
def _top(logits, k):
    return torch.topk(logits, k, dim=-1).indices


MODEL_COLS = 32  # outputs per row checked against the model on a GPU run (the model is exact, slow)


def fused_experiment(device, seed, add, log):
    """Fused dequant-in-matmul vs the model's dequant then the same matmul kernel, for the decode tiles
    (BM=16: mma v2) and BM=64 (wgmma): are they bitwise equal, which K order did the compiler give each,
    and does each output equal TC_MODEL in its own K order (GPU; first MODEL_COLS columns)?"""
    m, n, k = (4, 128, 256) if device == "cpu" else (16, 4096, 4096)
    packed, scales, z = int4_inputs(n, k, 128, "int", seed + 40)
    xn = cast(np.random.default_rng(seed + 41).standard_normal((m, k)), "bfloat16")
    x = to_torch(xn, device)
    P, S, Z = (to_torch(a, device) for a in (packed, scales, z))
    cases = [(16, c, f) for c in dq.COMPUTE for f in dq.FORMULAS] + [(64, "float32", "sub_mul"), (64, "float16", "fma")]
    for bm, compute, f in cases:
        wn = dq.dequant_int4(packed, scales, z, group_size=128, formula=f, compute=compute, out="bfloat16")
        fi, ui = {}, {}
        a = to_numpy(fused_int4_matmul(x, P, S, Z, formula=f, compute=compute, bm=bm, info=fi))
        b = to_numpy(matmul_bf16(x, to_torch(wn, device), bm=bm, info=ui))
        nd = count_differing(a, b)
        metrics = {"fused_equals_unfused": nd == 0, "frac_differing": nd / a.size, "max_ulp": int(max_ulp(a, b)),
                   "fused/mma": fi.get("mma"), "fused/k_widths": fi.get("k_widths"),
                   "unfused/mma": ui.get("mma"), "unfused/k_widths": ui.get("k_widths")}
        ok = True
        if fi.get("k_order") is not None and ui.get("k_order") is not None:
            xs, ws, cols = xn, wn[:MODEL_COLS], slice(0, MODEL_COLS)
            for name, out, order in (("fused", a, fi["k_order"]), ("unfused", b, ui["k_order"])):
                metrics[f"{name}/matches_model_own_order"] = bool(bitwise_equal(out[:, cols],
                                                                                model_output(xs, ws, order)))
                ok &= metrics[f"{name}/matches_model_own_order"]
                if not metrics[f"{name}/matches_model_own_order"]:  # diagnosis: blocks of 8 (mma.sync)?
                    nb8 = dataclasses.replace(TC_MODEL, block_size=8)
                    metrics[f"{name}/matches_model_nb8_own_order"] = bool(bitwise_equal(
                        out[:, cols], model_output(xs, ws, order, nb8)))
            if not np.array_equal(fi["k_order"], ui["k_order"]):
                metrics["fused/matches_model_natural_order"] = bool(bitwise_equal(
                    a[:, cols], model_output(xs, ws, np.arange(k))))
        msg = ("" if nd == 0 else "fused differs from dequant-then-matmul: a different K order "
               f"(kWidth {fi.get('k_widths')} vs {ui.get('k_widths')})") if ok else \
            "an output differs from the tensor-core model in its own K order"
        add(key=f"fused/{m}x{n}x{k}/bm{bm}/{compute}/{f}", inputs={"seed": seed + 40, "x_seed": seed + 41},
            params={"kind": "fused", "formula": f, "compute": compute, "tiles": [bm, 64, 64], "num_warps": 4,
                    "model": TC_MODEL.describe(), "model_cols": MODEL_COLS},
            metrics=metrics, status="ok" if ok else "error", message=msg, compares=compares_all_metrics(metrics))
        log(f"fused bm={bm} {compute} {f}: equal={nd == 0} ({metrics['frac_differing']:.3f} differ, "
            f"max ulp {metrics['max_ulp']}), fused {fi.get('mma')} kWidth {fi.get('k_widths')}, unfused "
            f"{ui.get('mma')} kWidth {ui.get('k_widths')}, model own order: "
            f"{metrics.get('fused/matches_model_own_order')}/{metrics.get('unfused/matches_model_own_order')}")
    if device != "cpu":
        _fused_timing(device, x, P, S, Z, m, n, k, seed, add, log)


def _fused_timing(device, x, P, S, Z, m, n, k, seed, add, log):
    """Median time of the fused kernel vs dequantise (Triton) + the same Triton matmul vs dequantise
    (CUDA kernel) + torch/cuBLAS bf16 matmul; decode-sized M, so the weights' bytes dominate."""
    from probes.timing import median, time_runs

    from . import kernels
    from . import triton_dequant as td

    kw = dict(group_size=128, formula="sub_mul", compute="float32")
    runs = {
        "fused": lambda i: fused_int4_matmul(x, P, S, Z, **kw),
        "triton_dequant+triton_matmul": lambda i: matmul_bf16(x, td.dequant_int4(P, S, Z, out="bfloat16", **kw)),
        "cuda_dequant+torch_matmul": lambda i: torch.matmul(
            x, kernels.dequant_int4(P, S, Z, out="bfloat16", check_scales=False, **kw).T),
    }
    ms = {name: median(time_runs(f, 30, device=device)) for name, f in runs.items()}
    add(key=f"fused/{m}x{n}x{k}/timing", inputs={"seed": seed + 40}, params={"kind": "fused_timing", **kw},
        metrics={f"{name}/ms": v for name, v in ms.items()}, compares=TIMINGS)
    log("fused timing: " + ", ".join(f"{name} {v:.3f} ms" for name, v in ms.items()))


def layer_experiments(device, seed, add, log, m=None, shapes=None):
    """Formulas' effect on a Mistral-shaped layer (smaller on a CPU)."""
    fused_experiment(device, seed, add, log)
    cpu = device == "cpu"
    m = m or (4 if cpu else 16)
    shapes = shapes or ([(512, 512)] if cpu else [(4096, 4096), (14336, 4096)])
    vocab = 4000 if cpu else 32000
    from . import torch_dequant
    for n, k in shapes:
        for zeros in ("int", "float"):
            s_ = seed + 30
            packed, scales, z = int4_inputs(n, k, 128, zeros, s_)
            rng = np.random.default_rng(s_ + 1)
            x = to_torch(cast(rng.standard_normal((m, k)), "bfloat16"), device)
            P, S, Z = (to_torch(a, device) for a in (packed, scales, z))
            q = torch_dequant.unpack_int4(P, False).double()
            exact_w = (q - Z.double().repeat_interleave(128, 1)) * S.double().repeat_interleave(128, 1)
            ref = (x.double() @ exact_w.T).cpu().numpy()
            del q, exact_w
            head = None
            if n == k:
                g = torch.Generator(device="cpu").manual_seed(s_ + 2)
                head = (torch.randn((vocab, k), generator=g) / np.sqrt(k)).to(torch.bfloat16).to(device)
                ref_logits = torch.from_numpy(ref).to(device) @ head.double().T
            for compute in dq.COMPUTE:
                ys, tops = {}, {}
                for f in dq.FORMULAS:
                    # torch_dequant: bit for bit the numerics model (tests), and fast at 14336 x 4096
                    wt = torch_dequant.dequant_int4(P, S, Z, group_size=128, formula=f, compute=compute,
                                                    out="bfloat16")
                    ys[f] = (x.float() @ wt.float().T)
                    if head is not None:
                        logits = ys[f].to(torch.bfloat16).float() @ head.float().T
                        tops[f] = (_top(logits, 1).cpu(), _top(logits, 5).cpu())
                metrics = {}
                for f in dq.FORMULAS:
                    y = to_numpy(ys[f]).astype(np.float64)
                    metrics[f"{f}/rel_error_vs_float64"] = float(np.linalg.norm(y - ref) / np.linalg.norm(ref))
                for a, c in (("sub_mul", "mul_sub"), ("sub_mul", "fma"), ("mul_sub", "fma")):
                    ya, yc = to_numpy(ys[a]), to_numpy(ys[c])
                    metrics[f"{a}~{c}/frac_differing"] = count_differing(ya, yc) / ya.size
                    metrics[f"{a}~{c}/max_ulp_f32"] = int(max_ulp(ya, yc))  # huge where outputs are near 0
                    metrics[f"{a}~{c}/max_rel_diff"] = float(max_relative_difference(ya, yc))
                    if head is not None:
                        metrics[f"{a}~{c}/top1_changed"] = int((tops[a][0] != tops[c][0]).sum())
                        metrics[f"{a}~{c}/top5_set_changed"] = int(sum(
                            set(r1.tolist()) != set(r2.tolist()) for r1, r2 in zip(tops[a][1], tops[c][1])))
                if head is not None:
                    rt = _top(ref_logits, 1).cpu()
                    for f in dq.FORMULAS:
                        metrics[f"{f}/top1_vs_float64"] = int((tops[f][0] != rt).sum())
                key = f"layer/{n}x{k}/{zeros}/{compute}"
                add(key=key, inputs={"seed": s_, "x_seed": s_ + 1, "lm_head_seed": s_ + 2, "m": m, "shape": [n, k],
                                     "vocab": vocab if head is not None else None},
                    params={"kind": "layer", "group_size": 128, "matmul": "torch float32 of bf16 weights"},
                    metrics=metrics, compares=compares_all_metrics(metrics))
                log(f"{key}: " + ", ".join(f"{kk}={v:.3g}" if isinstance(v, float) else f"{kk}={v}"
                                           for kk, v in metrics.items() if "top1" in kk or "max_ulp" in kk))
