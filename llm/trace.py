"""Record each op's inputs and outputs on machine A, bounded, into a compressed .npz file.

    python -m llm.trace --model mistral-7b-random --run "device=cuda,dtype=bfloat16" \
        --layers 0,15,31 --positions -1 --out trace-A.npz

Then `python -m llm.replay trace-A.npz` on machine B recomputes every recorded op from A's inputs
with B's kernels: the per-op cross-machine local error, free of any error carried from earlier ops.
Bounded: only the chosen layers (`final` for final_norm/lm_head) and the chosen prompt positions are
stored (attn_core keeps its queries at those positions and all keys and values, which it needs).
Tensors are stored bit for bit (bfloat16 as its uint16 view); `meta` (JSON) names model, run config,
prompt token ids and tokenizer so the replay can rebuild the same model.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from llm.opmap import plain_tap
from llm.runs import Run, RunTap
from probes.errors import UsageError

__all__ = ["record_trace", "write_trace", "read_trace", "to_numpy", "from_numpy", "main"]

TRACE_FORMAT = "driftscope-llm-trace-1"


def to_numpy(t: torch.Tensor):
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16), "bfloat16"
    return t.numpy(), str(t.dtype).replace("torch.", "")


def from_numpy(a, dtype: str, device="cpu"):
    if dtype == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(torch.bfloat16).to(device)
    return torch.from_numpy(np.ascontiguousarray(a)).to(device)


class TraceTap(RunTap):
    def __init__(self, run, layers, positions, store):
        super().__init__(run)
        self.layers, self.positions, self.store = layers, positions, store

    def __call__(self, layer, op, fn, *inputs):
        out = super().__call__(layer, op, fn, *inputs)
        if layer in self.layers:
            run, pos = self.run, self.positions
            row, a, b = run.region

            def tok(t):             # [B, T, ...] -> [P, ...]
                return t[row, a:b][pos]

            if op == "attn_core":   # q, k, v are [B, H, T, D]
                q, k, v = (x.transpose(1, 2) for x in inputs)
                ins = (tok(q), k[row, a:b], v[row, a:b])
            else:
                ins = tuple(tok(x) for x in inputs)
            outs = out if isinstance(out, tuple) else (out,)
            self.store[(layer, op)] = ([x.clone() for x in ins], [tok(x).clone() for x in outs])
        return out


def record_trace(lm, cfg, prompt_ids, layers, positions):
    """{site: ([inputs], [outputs])} at the chosen layers and positions, plus the run."""
    run = Run(lm, cfg, prompt_ids)
    T = len(prompt_ids)
    pos = sorted({p % T for p in positions}) if positions else list(range(T))
    for p in positions or []:
        if not -T <= p < T:
            raise UsageError(f"position {p} is outside the prompt ({T} tokens)")
    store = {}
    run.forward(TraceTap(run, set(layers), torch.tensor(pos, device=run.device), store))
    return run, pos, store


def _machine(device):
    """One line naming the machine the trace was recorded on (probes.device's fingerprint summary): a
    machine-change row replayed elsewhere says which GPU or CPU the other side was."""
    from probes.device import fingerprint, fingerprint_summary
    try:
        return fingerprint_summary(fingerprint(str(device)))
    except Exception as exc:  # noqa: BLE001 - a trace is still worth writing; the reason is kept instead
        return f"unknown machine ({type(exc).__name__}: {exc})"


def write_trace(path, lm, cfg, prompt_ids, pos, store, n_layers):
    from llm.opmap import site_label
    arrays, dtypes = {}, {}
    for site, (ins, outs) in store.items():
        label = site_label(site, n_layers)
        for kind, ts in (("in", ins), ("out", outs)):
            for i, t in enumerate(ts):
                a, dt = to_numpy(t)
                arrays[f"{label}|{kind}{i}"] = a
                dtypes[f"{label}|{kind}{i}"] = dt
    meta = {"format": TRACE_FORMAT, "model": lm.name, "model_info": lm.info, "run": cfg.as_dict(),
            "prompt_ids": list(prompt_ids), "positions": pos, "tokenizer": lm.tokenizer.fingerprint,
            "n_layers": n_layers, "sites": [site_label(s, n_layers) for s in store], "dtypes": dtypes,
            "attn_impl": cfg.attn, "machine": _machine(cfg.device)}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez_compressed(path, **arrays)


def read_trace(path):
    try:
        z = np.load(path, allow_pickle=False)
        meta = json.loads(bytes(z["meta"]).decode())
    except FileNotFoundError:
        raise UsageError(f"trace file {path} does not exist") from None
    except Exception as exc:
        raise UsageError(f"{path} is not a readable llm trace ({type(exc).__name__}: {exc})") from None
    if meta.get("format") != TRACE_FORMAT:
        raise UsageError(f"{path}: trace format {meta.get('format')!r}, expected {TRACE_FORMAT}")
    ops = {}
    for key in z.files:
        if key == "meta":
            continue
        label, _, slot = key.partition("|")
        kind, idx = ("in", int(slot[2:])) if slot.startswith("in") else ("out", int(slot[3:]))
        ops.setdefault(label, {"in": {}, "out": {}})[kind][idx] = (z[key], meta["dtypes"][key])
    return meta, ops


def parse_layers(spec, n_layers):
    out = set()
    for part in filter(None, spec.split(",")):
        if part == "final":
            out.add(n_layers)
        elif part == "all":
            out |= set(range(n_layers + 1))
        else:
            try:
                i = int(part)
            except ValueError:
                raise UsageError(f"--layers: {part!r} is not a layer number, 'final' or 'all'") from None
            if not -n_layers <= i < n_layers:
                raise UsageError(f"--layers: layer {i} does not exist ({n_layers} layers)")
            out.add(i % n_layers)
    return sorted(out)


def main(argv=None):
    from llm.attribute import load_prompt
    from llm.models import default_model, load
    from llm.runconfig import parse_run
    from probes.cli import resolve_device
    ap = argparse.ArgumentParser(prog="python -m llm.trace", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=None)
    ap.add_argument("--run", default="", help="run config (llm.runconfig)")
    ap.add_argument("--prompt", default=None)
    ap.add_argument("--prompt-file", default=None)
    ap.add_argument("--builtin", default=None, choices=("seed", "retrieval"))
    ap.add_argument("--layers", default="0,-1,final", help="layers to record: numbers, 'final', 'all'")
    ap.add_argument("--positions", default="-1", help="prompt positions to record (negative from the end), "
                    "or 'all'")
    ap.add_argument("--out", required=True, help="the .npz trace file to write")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    cfg = parse_run(args.run, default_device=device)
    lm = load(args.model or default_model(device), cfg.device, cfg.torch_dtype, args.seed, cfg.weights)
    name, text, ids = load_prompt(args, lm.tokenizer)
    n = len(lm.model.model.layers)
    layers = parse_layers(args.layers, n)
    if args.positions == "all":
        positions = None
    else:
        try:
            positions = [int(p) for p in args.positions.split(",") if p]
        except ValueError:
            raise UsageError(f"--positions: {args.positions!r} is not a list of integers or 'all'") from None
    run, pos, store = record_trace(lm, cfg, ids, layers, positions)
    write_trace(args.out, lm, cfg, ids, pos, store, n)
    print(f"trace: {len(store)} ops of layers {layers} at {len(pos)} positions of {len(ids)} -> {args.out}")
    return 0


if __name__ == "__main__":
    from probes.cli import guarded_main
    sys.exit(guarded_main(main))
