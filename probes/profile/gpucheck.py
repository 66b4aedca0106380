"""python -m probes.profile.gpucheck: does a profile's emulated F.linear equal cuBLAS's, bit for bit? (issue 17)

On a GPU: for every Mistral-7B linear shape (q_o, k_v, gate_up, down, lm_head) and every M the profile
covers (the M values its GEMM-probe listing measured; more with --ms), X [M, K] and W [N, K] (seeded
torch.randn on the device, W scaled by K**-0.5, in the dtype) go through torch's F.linear (cuBLAS), and a
sample of the outputs (``--rows`` rows spread over M, ``--cols`` columns spread over N) is recomputed on
the CPU with the profile's plan for (dtype, N, K, M) (probes.profile.linear_plan: the matrix unit's model
and the split-K measured for that M) through numerics.matmul_fast. The report (probes.report) gives, per
case, the fraction of sampled outputs whose bits (uint16 views) are equal, the plan and its basis; the
target is 1.0 everywhere. Each output element depends only on its row of X, its row of W and the plan,
so a sample checks the plan as the whole output would.

On a CPU the same code runs against torch's CPU matmul (a smoke test of the tool: the fractions then say
nothing about any GPU).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from probes import cli
from probes.errors import UsageError

__all__ = ["SHAPES", "check_linear", "main"]

#: Mistral-7B's linear shapes, (N, K), as probes.gemm's sweep names them.
SHAPES = {"q_o": (4096, 4096), "k_v": (1024, 4096), "gate_up": (14336, 4096), "down": (4096, 14336),
          "lm_head": (32000, 4096)}


def _spread(n, k):
    return np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(int))


def check_linear(prof, shape, N, K, M, dtype, device, *, rows=16, cols=256, seed=0):
    """One case: the sampled outputs of F.linear vs the profile's emulation. A dict for the report."""
    import torch
    from numerics.matmul_fast import fast_matmul_nt, fast_supported
    from numerics.matmul import model_matmul
    from probes.profile import linear_plan
    tdt = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(M, K, generator=g, device=device).to(tdt)
    w = (torch.randn(N, K, generator=g, device=device) * K ** -0.5).to(tdt)
    t0 = time.perf_counter()
    y = torch.nn.functional.linear(x, w)
    if device != "cpu":
        torch.cuda.synchronize()
    t_gpu = time.perf_counter() - t0
    ri, ci = _spread(M, rows), _spread(N, cols)
    plan = linear_plan(prof, dtype, N, K, M)
    xs = x[ri].float().cpu().numpy()
    ws = w[ci].float().cpu().numpy()
    t0 = time.perf_counter()
    acc = fast_matmul_nt(xs, ws, plan.model) if fast_supported(plan.model) is None else \
        model_matmul(xs.astype(np.float64), ws.astype(np.float64).T, plan.model)
    emu = torch.from_numpy(acc.astype(np.float32)).to(tdt)
    t_cpu = time.perf_counter() - t0
    got = y[ri][:, ci].cpu()
    iv = torch.int32 if tdt == torch.float32 else torch.int16
    eq = (got.view(iv) == emu.view(iv))
    return {"shape": shape, "N": N, "K": K, "M": M, "dtype": dtype, "rows": ri.tolist(), "cols": len(ci),
            "equal_fraction": float(eq.float().mean()), "equal": int(eq.sum()), "compared": int(eq.numel()),
            "rows_all_equal": int(eq.all(dim=1).sum()), "plan": plan.as_dict(),
            "seconds": {"gpu": t_gpu, "cpu_emulation": t_cpu}}


def main(argv=None):
    from probes.device import fingerprint
    from probes.profile import load_profile
    from probes.report import add_experiment, new_report, write_report
    ap = argparse.ArgumentParser(prog="python -m probes.profile.gpucheck", description=__doc__.split("\n\n")[0])
    cli.add_common_args(ap)
    ap.add_argument("--profile", required=True, help="a shipped profile name or file (e.g. h200 on an H200)")
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    ap.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated of {','.join(SHAPES)} or NxK")
    ap.add_argument("--ms", default="", help="extra M values (comma-separated) besides those the profile measured")
    ap.add_argument("--rows", type=int, default=16, help="rows of each output compared (spread over M)")
    ap.add_argument("--cols", type=int, default=256, help="columns of each output compared (spread over N)")
    args = ap.parse_args(argv)
    device = cli.resolve_device(args.device)
    prof = load_profile(args.profile)
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    sizes = {}
    for s in shapes:
        n, x, k = s.partition("x")
        if s in SHAPES:
            sizes[s] = SHAPES[s]
        elif x and n.isdigit() and k.isdigit() and int(n) > 0 and int(k) > 0:
            sizes[s] = (int(n), int(k))
        else:
            raise UsageError(f"--shapes: unknown {s!r} (known: {', '.join(SHAPES)}, or NxK)")
    try:
        extra = [int(m) for m in args.ms.split(",") if m.strip()]
    except ValueError:
        raise UsageError(f"--ms: not integers: {args.ms!r}") from None
    if args.rows < 1 or args.cols < 1 or any(m < 1 for m in extra):
        raise UsageError("--rows, --cols and --ms must be >= 1")
    fp = fingerprint(device)
    rep = new_report("profile-gpucheck", command=None, fingerprint=fp,
                     config={"profile": prof["name"], "profile_source": prof["source"]["kind"], "dtype": args.dtype,
                             "rows": args.rows, "cols": args.cols, "seed": args.seed,
                             "gpu_of_profile": prof["gpu"]["name"]})
    gname = (fp.get("gpu") or {}).get("name")
    if gname and gname != prof["gpu"]["name"]:
        print(f"note: this GPU is {gname}, the profile is of {prof['gpu']['name']}", file=sys.stderr)
    total = [0, 0]
    for shape in shapes:
        N, K = sizes[shape]
        ms = sorted({e["M"] for e in prof["k_order"]["entries"] if e["N"] == N and e["K"] == K
                     and e["dtype"] == args.dtype} | set(extra))
        for M in ms or [1]:
            r = check_linear(prof, shape, N, K, M, args.dtype, device, rows=args.rows, cols=args.cols, seed=args.seed)
            total[0] += r["equal"]
            total[1] += r["compared"]
            add_experiment(rep, key=f"gpucheck/{args.dtype}/{shape}/M={M}",
                           inputs={"generator": "torch.Generator(device).manual_seed(seed); torch.randn, W * K**-0.5",
                                   "seed": args.seed, "M": M, "N": N, "K": K, "dtype": args.dtype},
                           params={"profile": prof["name"], "rows": r["rows"], "cols": r["cols"]},
                           metrics=r, compares={"metrics": ["equal_fraction"]})
            print(f"{shape:<8} M={M:<5} {r['equal_fraction']:.6f} equal ({r['equal']}/{r['compared']}), "
                  f"K order {r['plan']['k_order_basis']}: {r['plan']['model']}", flush=True)
    frac = total[0] / max(total[1], 1)
    rep["config"]["equal_fraction_all"] = frac
    print(f"all: {frac:.6f} of {total[1]} sampled outputs equal to F.linear's bits on {device} (target 1.0 on the profile's GPU)")
    if args.json:
        write_report(rep, args.json)
        print(f"report: {args.json}")
    return 0 if frac == 1.0 or device == "cpu" else 1


if __name__ == "__main__":
    sys.exit(cli.guarded_main(main))
