"""Greedy decoding under one run, and where two runs' greedy continuations part.

Each step recomputes the whole (batched) prompt + continuation without a KV cache, so every step uses
the run's prefill kernels at the run's batch shape (decode-phase kernels are not exercised)."""
from __future__ import annotations

import torch

__all__ = ["greedy", "divergence", "drift_metrics"]


@torch.inference_mode()
def greedy(run, prompt_ids, n_new: int):
    """Greedy continuation: list of steps {token, p_top1, top2, p_top2} (probabilities in float32)."""
    steps, ids = [], list(prompt_ids)
    try:
        for _ in range(n_new):
            run.set_prompt(ids)
            logits = run.forward(last_only=True)
            p = torch.softmax(logits, -1)
            top = torch.topk(p, 2)
            tok, tok2 = int(top.indices[0]), int(top.indices[1])
            steps.append({"token": tok, "p": float(top.values[0]), "runner_up": tok2,
                          "p_runner_up": float(top.values[1]), "probs": p})
            ids.append(tok)
    finally:
        run.set_prompt(prompt_ids)
    return steps


def divergence(ref_steps, var_steps, tokenizer):
    """First step where the greedy tokens differ, with both runs' probabilities of both tokens there."""
    n = min(len(ref_steps), len(var_steps))
    out = {"steps": n, "ref_text": tokenizer.decode([s["token"] for s in ref_steps]),
           "var_text": tokenizer.decode([s["token"] for s in var_steps]), "diverged": False,
           "first_divergence": None}
    for i in range(n):
        a, b = ref_steps[i], var_steps[i]
        if a["token"] != b["token"]:
            ta, tb = a["token"], b["token"]
            out.update(diverged=True, first_divergence=i)
            out["at_divergence"] = {
                "ref_token": ta, "var_token": tb,
                "ref_piece": tokenizer.piece(ta), "var_piece": tokenizer.piece(tb),
                "ref_run_p_ref_token": float(a["probs"][ta]), "ref_run_p_var_token": float(a["probs"][tb]),
                "var_run_p_ref_token": float(b["probs"][ta]), "var_run_p_var_token": float(b["probs"][tb]),
                "ref_text_after": tokenizer.decode([s["token"] for s in ref_steps[i:]]),
                "var_text_after": tokenizer.decode([s["token"] for s in var_steps[i:]]),
            }
            break
    return out


def drift_metrics(ref_logits, var_logits, tokens_next=None):
    """How far the prompt's final logits moved (0-d tensors; .item() them once at the end).
    rms/max |dlogit|, KL(ref||var) mean and max over positions, top-1 flips, and the reference's
    top-1/top-2 margin at the flips' smallest-margin position."""
    d = var_logits - ref_logits
    lp_r = torch.log_softmax(ref_logits, -1)
    lp_v = torch.log_softmax(var_logits, -1)
    kl = (lp_r.exp() * (lp_r - lp_v)).sum(-1).clamp_min(0)
    t_r, t_v = ref_logits.argmax(-1), var_logits.argmax(-1)
    top2 = torch.topk(ref_logits, 2, dim=-1).values
    margin = top2[:, 0] - top2[:, 1]
    return {"rms_dlogit": d.pow(2).mean().sqrt(), "max_dlogit": d.abs().max(), "kl_mean": kl.mean(),
            "kl_max": kl.max(), "top1_flips": (t_r != t_v).sum(), "min_ref_margin": margin.min()}
