"""`linear=emulate:PROFILE`: every linear of a run computed with a GPU profile's arithmetic (issue 17).

Each linear op (the 7 per decoder layer and lm_head) becomes, for x [..., K] and W [N, K] in the run's
dtype: the profile's plan for (dtype, N, K, M = rows of x) (probes.profile.linear_plan: the
numerics.matmul model of the GPU's matrix unit, with the K split cuBLAS's heuristic picked for that
shape and M where the profile measured it), evaluated exactly: on the CPU by numerics.matmul_fast (bit
for bit numerics.matmul.model_matmul; a model it cannot take goes through model_matmul itself), on a
CUDA device by llm.emulate_triton's kernel (the same bits; a model the kernel cannot express is a
UsageError naming the profile and what is missing, never a CPU or native computation instead), then
the bias added in fp32 (nearest even) and the fp32 result rounded once to the run dtype (nearest even),
as cuBLAS's epilogue does. The run computes everything else as it would (attention, norms: the
machine's own kernels).

Bad input is an error naming what is missing, never the native linear in its place: an unknown
profile, a profile of another schema version, a profile without a linear model for the run's dtype
(probes.profile.ProfileError, a UsageError), a weight of another dtype than the input.

Every plan used is counted (`EmulatedLinear.plans`: per (dtype, N, K, M) how K was ordered and on what
basis: measured or assumed), so a run can say which of its linears rest on assumptions.
"""
from __future__ import annotations

import functools
import weakref

import numpy as np
import torch

from probes.errors import UsageError

__all__ = ["EmulatedLinear", "emulated_linear", "check_profile_for", "emulate_matmul", "backend_for"]

_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def check_profile_for(spec: str, dtype: str) -> dict:
    """The profile `spec` (a shipped name or a file), refusing one without a linear model for `dtype`."""
    from probes.profile import ProfileError, load_profile
    prof = load_profile(spec)
    if dtype not in prof["linear"]:
        have = ", ".join(sorted(prof["linear"])) or "none"
        raise ProfileError(f"linear=emulate:{spec}: profile {prof['name']!r} has no linear model for dtype "
                           f"{dtype} (it has: {have})")
    return prof


def emulate_matmul(x2d: np.ndarray, w: np.ndarray, model, *, kw=None) -> np.ndarray:
    """x2d [M, K] @ w[N, K]^T through `model` (float32 arrays holding the operand format's values):
    float64 [M, N] holding the fp32 accumulator's values."""
    from numerics.matmul import model_matmul
    from numerics.matmul_fast import fast_matmul_nt, fast_supported
    if fast_supported(model) is None:
        return fast_matmul_nt(x2d, w, model, kb=kw)
    return model_matmul(x2d.astype(np.float64), w.astype(np.float64).T, model)


class EmulatedLinear:
    """The replacement of every linear op (llm.runconfig's `linear` kind) for one profile."""

    def __init__(self, spec: str, *, backend: str | None = None):
        from probes.profile import load_profile
        if backend not in (None, "numpy", "triton"):
            raise UsageError(f"linear=emulate:{spec}: backend must be numpy or triton, not {backend!r}")
        self.spec = spec
        self.backend = backend
        self.profile = load_profile(spec)
        self.plans: dict = {}
        self._weights: dict = {}

    def _weight(self, w: torch.Tensor, fmt: str):
        """W as float32 numpy with its alignment keys, cached while the same tensor lives unchanged."""
        ref, version, data = self._weights.get(id(w), (None, None, None))
        if ref is None or ref() is not w or version != w._version or data[2] != fmt:
            from numerics.matmul import operand_formats
            from numerics.matmul_fast import operand_keys
            w32 = np.ascontiguousarray(w.detach().float().cpu().numpy())
            data = (w32, operand_keys(w32, operand_formats(fmt)[1]), fmt)
            self._weights = {k: v for k, v in self._weights.items() if v[0]() is not None}
            self._weights[id(w)] = (weakref.ref(w), w._version, data)
        return data[0], data[1]

    def __call__(self, module, x):
        from numerics.matmul import add_fp32
        from probes.profile import linear_plan
        w = module.weight
        dtype = _NAMES.get(x.dtype)
        if dtype is None:
            raise UsageError(f"linear=emulate:{self.spec}: input dtype {x.dtype} not one of float32, bfloat16, float16")
        if w.dtype != x.dtype:
            raise UsageError(f"linear=emulate:{self.spec}: weight is {w.dtype}, input is {x.dtype}")
        N, K = w.shape
        x2 = x.reshape(-1, K)
        M = x2.shape[0]
        plan = linear_plan(self.profile, dtype, N, K, M)
        key = (dtype, N, K, M)
        if key not in self.plans:
            self.plans[key] = plan.as_dict()
        if backend_for(x.device, self.backend) == "triton":
            from llm.emulate_triton import check_kernel_model, emulate_matmul_triton
            check_kernel_model(plan.model, self.spec)           # an error naming what is missing, no fallback
            acc = emulate_matmul_triton(x2.contiguous(), w.detach(), plan.model, profile=self.spec)
            if module.bias is not None:
                acc = acc + module.bias.detach().float()        # float32, nearest even: add_fp32
            return acc.to(x.dtype).reshape(*x.shape[:-1], N)
        w32, kw = self._weight(w, plan.model.input_format)
        xa = np.ascontiguousarray(x2.detach().float().cpu().numpy())
        acc = emulate_matmul(xa, w32, plan.model, kw=kw if plan.model.align_to == "exponent_sum" else None)
        if module.bias is not None:
            acc = add_fp32(acc, module.bias.detach().float().cpu().numpy().astype(np.float64)[None, :])
        y = torch.from_numpy(acc.astype(np.float32)).to(device=x.device).to(x.dtype)
        return y.reshape(*x.shape[:-1], N)

    def summary(self) -> dict:
        """Which plans the run used, and how many of them rest on an assumed K order or model."""
        plans = list(self.plans.values())
        return {"profile": self.profile["name"], "profile_source": self.profile["source"]["kind"],
                "linear_shapes": len(plans),
                "k_order_assumed": sum(p["k_order_basis"] == "assumed" for p in plans),
                "model_basis": sorted({p["model_basis"] for p in plans}), "plans": plans,
                "assumptions": self.profile["assumptions"]}


def backend_for(device, backend: str | None = None) -> str:
    """Where the emulation runs: "triton" (llm.emulate_triton's kernel) for tensors on a CUDA device,
    "numpy" (numerics.matmul_fast, exact on the CPU) otherwise; `backend` forces one (the Triton kernel
    then runs in Triton's interpreter on the CPU when TRITON_INTERPRET=1)."""
    if backend is not None:
        return backend
    return "triton" if torch.device(device).type == "cuda" else "numpy"


@functools.lru_cache(maxsize=None)
def emulated_linear(spec: str) -> EmulatedLinear:
    """The one EmulatedLinear of profile `spec` in this process (its weight cache is shared by runs)."""
    return EmulatedLinear(spec)


# ---- on a GPU: every linear of a real forward, emulated from the GPU's own inputs ----------------------

class _CheckTap:
    """A tap that runs every op as the machine does and, for the linear ops, also emulates them from the
    same inputs: per op, the fraction of output elements with equal bits."""

    def __init__(self, run, em):
        self.run, self.em, self.rows = run, em, []

    def __call__(self, layer, op, fn, *inputs):
        from llm.opmap import OP_CLASS
        out = fn(*inputs)
        if OP_CLASS[op] == "linear":
            emu = self.em(fn, *inputs).to(out.device)
            iv = {torch.float32: torch.int32}.get(out.dtype, torch.int16)
            eq = out.contiguous().view(iv) == emu.contiguous().view(iv)
            self.rows.append({"op": self.run.opmap.label((layer, op)), "shape": list(out.shape),
                              "equal_fraction": float(eq.float().mean()), "bit_exact": bool(eq.all())})
        return out


@torch.inference_mode()
def check_forward(lm, cfg, profile: str, ids) -> dict:
    """One forward of `lm` under run config `cfg` (the machine's own kernels), every linear op also
    emulated with `profile` from the op's actual inputs: how many linear ops are bit exact."""
    from llm.runs import Run
    run = Run(lm, cfg, ids)
    em = EmulatedLinear(profile)
    tap = _CheckTap(run, em)
    run.forward(tap)
    rows = tap.rows
    return {"profile": em.profile["name"], "run": cfg.text, "tokens": len(ids), "linear_ops": len(rows),
            "bit_exact_ops": sum(r["bit_exact"] for r in rows),
            "equal_fraction_all": float(np.mean([r["equal_fraction"] for r in rows])) if rows else 0.0,
            "ops": rows, "emulation": em.summary()}


def main(argv=None):
    """python -m llm.emulate --model M --profile P --device cuda: check_forward on the seed prompt."""
    import argparse

    from llm.attribute import SEED_PROMPT
    from llm.models import load
    from llm.runconfig import parse_run
    from probes.cli import resolve_device
    ap = argparse.ArgumentParser(prog="python -m llm.emulate", description="Every linear op of a real forward "
                                 "(this machine's kernels) emulated from its own inputs with a GPU profile: how "
                                 "many are bit exact.")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--profile", required=True)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--attn", default="sdpa")
    ap.add_argument("--prompt", default=SEED_PROMPT)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    cfg = parse_run(f"device={device},dtype={args.dtype},attn={args.attn}")
    check_profile_for(args.profile, cfg.dtype)
    lm = load(args.model, device, cfg.torch_dtype, 0)
    res = check_forward(lm, cfg, args.profile, lm.tokenizer.encode(args.prompt))
    for r in res["ops"]:
        if not r["bit_exact"]:
            print(f"  {r['op']:<18} {r['equal_fraction']:.6f} equal")
    print(f"{res['bit_exact_ops']}/{res['linear_ops']} linear ops bit exact ({res['equal_fraction_all']:.6f} of "
          f"elements equal, mean over ops) with profile {res['profile']} on {device} [{cfg.text}]")
    if args.json:
        from probes.device import fingerprint
        from probes.report import add_experiment, new_report, write_report
        rep = new_report("llm-emulate-check", command=None, fingerprint=fingerprint(device),
                         config={"model": args.model, "profile": args.profile, "run": cfg.as_dict()})
        add_experiment(rep, key=f"emulate-check/{res['profile']}", inputs={"prompt": args.prompt, "weights_seed": 0},
                       params={"profile": res["profile"]}, metrics=res,
                       compares={"metrics": ["bit_exact_ops", "equal_fraction_all"]})
        write_report(rep, args.json)
        print(f"report: {args.json}")
    return 0 if res["bit_exact_ops"] == res["linear_ops"] or device == "cpu" else 1


if __name__ == "__main__":
    import sys

    from probes.cli import guarded_main
    sys.exit(guarded_main(main))
