"""Replay a trace recorded on machine A (llm.trace) on this machine: every recorded op recomputed
from A's inputs with this machine's kernels and compared with A's output (max ulp, relative error,
bitwise equal): the per-op cross-machine local error.

    python -m llm.replay trace-A.npz [--device cuda] [--run "attn=eager"] [--json replay.json]

The model is rebuilt from the trace's meta (the same seeded weights on every device, or the same file);
the run config is the trace's, with --run's keys overriding (e.g. another attention implementation).
"""
from __future__ import annotations

import argparse
import fnmatch
import sys

import torch

from llm.opmap import ActMul, MoEExperts, RouterLinear, residual_add, rotary
from llm.runconfig import RunConfig, round_tensor
from llm.runs import local_metrics
from llm.trace import from_numpy, read_trace
from probes.errors import UsageError

__all__ = ["op_function", "replay", "main"]


def op_function(model, cfg: RunConfig, label: str, n_layers: int, n_positions: int, positions, T):
    """The callable that computes op `label` of `model` from the traced inputs (as [P, ...] tensors)."""
    head, _, op = label.partition(".")
    if head == "final":
        mod = model.model.norm if op == "final_norm" else model.lm_head
        return lambda x: type(mod).forward(mod, x[None])[0]
    layer = model.model.layers[int(head[1:])]
    attn, mlp = layer.self_attn, layer.mlp
    if op == "router":
        r = RouterLinear(mlp.gate)
        return lambda x: r(x[None])[0]
    if op == "experts":            # the routing over the traced positions only (a capacity sees those tokens)
        import types
        e = MoEExperts(mlp, int(head[1:]), types.SimpleNamespace(router=cfg.router_spec(), token_mask=None,
                                                                 routing_log=None))
        return lambda h, logits: e(h[None], logits[None])[0]
    mods = {"input_norm": layer.input_layernorm, "post_attn_norm": layer.post_attention_layernorm,
            "q_proj": attn.q_proj, "k_proj": attn.k_proj, "v_proj": attn.v_proj, "o_proj": attn.o_proj}
    if hasattr(mlp, "gate_proj"):              # a dense MLP (a mixture of experts has router and experts)
        mods.update(gate_proj=mlp.gate_proj, up_proj=mlp.up_proj, down_proj=mlp.down_proj)
    if op in mods:
        m = mods[op]
        return lambda x: m(x[None])[0]
    if op in ("attn_residual", "mlp_residual"):
        return lambda a, b: residual_add(a[None], b[None])[0]
    if op == "act_mul":
        f = ActMul(mlp.act_fn)
        return lambda g, u: f(g[None], u[None])[0]
    if op == "rotary":
        return lambda q, k, c, s: tuple(t[0] for t in rotary(q[None], k[None], c[None], s[None]))
    if op == "attn_core":
        def core(q, k, v):
            from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
            from transformers.models.llama.modeling_llama import eager_attention_forward
            iface = ALL_ATTENTION_FUNCTIONS.get_interface(cfg.attn, eager_attention_forward)
            qh, kh, vh = q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None]
            mask = None
            if cfg.attn != "sdpa" or len(positions) != T:
                qp = torch.tensor(positions, device=q.device)[:, None]
                kp = torch.arange(T, device=q.device)[None, :]
                mask = torch.where(kp <= qp, 0.0, torch.finfo(q.dtype).min).to(q.dtype)[None, None]
            out, _ = iface(attn, qh, kh, vh, mask, dropout=0.0, scaling=attn.scaling,
                           sliding_window=getattr(attn.config, "sliding_window", None))
            return out[0]
        return core
    raise UsageError(f"trace names an unknown op {label!r}")


@torch.inference_mode()
def replay(lm, cfg: RunConfig, meta, ops):
    rows = []
    n_layers, pos, T = meta["n_layers"], meta["positions"], len(meta["prompt_ids"])
    model = lm.model
    model.config._attn_implementation = cfg.attn
    check_replayable(cfg, meta["sites"])
    for label in meta["sites"]:
        rec = ops[label]
        ins = [from_numpy(*rec["in"][i], device=cfg.device) for i in sorted(rec["in"])]
        outs = [from_numpy(*rec["out"][i], device=cfg.device) for i in sorted(rec["out"])]
        if ins and ins[0].is_floating_point() and ins[0].dtype != cfg.torch_dtype and label.split(".")[1] not in ("rotary",):
            raise UsageError(f"trace inputs are {ins[0].dtype}, the replay run computes in {cfg.dtype}")
        fn = op_function(model, cfg, label, n_layers, len(pos), pos, T)
        got = fn(*ins)
        got = got if isinstance(got, tuple) else (got,)
        fmt = cfg.rounding_for(label)
        if fmt is not None:
            got = tuple(round_tensor(g, fmt) for g in got)
        ulp, rel, cos = local_metrics(tuple(got), tuple(outs))
        bitwise = all(torch.equal(g.contiguous().view(torch.uint8) if g.dtype != torch.bool else g,
                                  o.to(g.dtype).contiguous().view(torch.uint8)) for g, o in zip(got, outs))
        rows.append({"site": label, "max_ulp": int(ulp), "rel_err": float(rel), "cosine": float(cos),
                     "bitwise_equal": bool(bitwise)})
    return rows


def check_replayable(cfg: RunConfig, labels):
    """A UsageError for faults the replay cannot put in (it recomputes each traced op as the model
    does, then applies round=) and for a round= pattern that matches no traced op."""
    unmapped = [k for k in ("inner", "spread", "embed", "rope") if getattr(cfg, k)]
    if unmapped:
        raise UsageError(f"llm.replay applies round= faults only, not {', '.join(k + '=' for k in unmapped)} "
                         "(faults inside ops or outside the op map)")
    mech = [f"{k}={getattr(cfg, k)}" for k, default in (("softmax", "torch"), ("fma", "default"), ("tf32", "default"))
            if getattr(cfg, k) != default]
    mech += [f"norm={cfg.norm}" for _ in [0] if cfg.norm.split(":")[0] in ("fixed", "atomic")]
    mech += [f"linear={cfg.linear}" for _ in [0] if cfg.linear.startswith(("cublaslt", "fp8mm"))]
    if mech:                                   # issue 20's mechanisms: not put into the replayed ops
        raise UsageError(f"llm.replay recomputes each traced op as the model does: not with {', '.join(mech)}")
    for pat, fmt in cfg.rounds:
        if not any(fnmatch.fnmatchcase(label, pat) for label in labels):
            raise UsageError(f"round={pat}:{fmt} selects nothing: pattern {pat!r} matches no traced op "
                             f"(traced: {', '.join(labels)})")


def main(argv=None):
    import dataclasses

    from llm.models import load
    from llm.runconfig import parse_run
    from probes.cli import resolve_device
    ap = argparse.ArgumentParser(prog="python -m llm.replay", description=__doc__.split("\n\n")[0])
    ap.add_argument("trace")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--run", default="", help="run-config keys overriding the trace's (e.g. attn=eager)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    meta, ops = read_trace(args.trace)
    device = resolve_device(args.device)
    over = parse_run(args.run, default_device=device) if args.run else None
    fields = {"device": device}
    if over is not None:
        given = {p.split("=")[0].strip() for p in args.run.split(",") if p.strip()}
        for k in given:
            k2 = "rounds" if k == "round" else k
            fields[k2] = getattr(over, k2)
    cfg = dataclasses.replace(RunConfig.from_dict(meta["run"]), **fields,
                              text=f"trace {meta['run']['text']} + {args.run}")
    lm = load(meta["model"], cfg.device, cfg.torch_dtype, meta["model_info"].get("seed", 0), cfg.weights)
    if lm.tokenizer.fingerprint != meta["tokenizer"]:
        raise UsageError(f"the trace was tokenised by {meta['tokenizer']}, this model's is {lm.tokenizer.fingerprint}")
    rows = replay(lm, cfg, meta, ops)
    print(f"replay of {args.trace} (recorded: {meta['run']['text'] or 'defaults'} on {meta['run']['device']}; "
          f"here: {cfg.device} {cfg.dtype} attn={cfg.attn}), {len(meta['positions'])} positions")
    print(f"  {'op':<22} {'bitwise':>7} {'max ulp':>10} {'rel err':>10} {'cosine':>10}")
    for r in rows:
        print(f"  {r['site']:<22} {str(r['bitwise_equal']):>7} {r['max_ulp']:>10} {r['rel_err']:>10.3g} {r['cosine']:>10.6f}")
    if args.json:
        from probes.device import fingerprint
        from probes.report import add_experiment, compares_all_metrics, new_report, write_report
        rep = new_report("llm-replay", command=None, fingerprint=fingerprint(device),
                         config={"trace": str(args.trace), "trace_meta_run": meta["run"], "replay_run": cfg.as_dict(),
                                 "model": meta["model"]})
        inputs = {"weights_seed": meta["model_info"].get("seed"), "prompt_ids_head": meta["prompt_ids"][:32],
                  "positions": meta["positions"]}
        for r in rows:
            add_experiment(rep, key=f"llm-replay/{r['site']}", inputs=inputs, params={}, metrics=r,
                           compares=compares_all_metrics(r))
        write_report(rep, args.json)
        print(f"report: {args.json}")
    return 0


if __name__ == "__main__":
    from probes.cli import guarded_main
    sys.exit(guarded_main(main))
