"""The printed summary of an attribution and its layer x op heatmap."""
from __future__ import annotations

import math

from llm.opmap import FINAL_OPS, LAYER_OPS

__all__ = ["format_result", "plot_heatmap", "heatmap_matrix"]


def _f(x, spec=".3g"):
    return "-" if x is None else format(x, spec)


def format_result(res, ref_cfg, var_cfg, *, top=15, title=""):
    d = res["drift"]
    lines = [f"== {title}", f"reference: {ref_cfg.text or 'defaults'}   variant: {var_cfg.text or 'defaults'}",
             f"final-logit drift: rms {d['rms_dlogit']:.3g}  max |dlogit| {d['max_dlogit']:.3g}  "
             f"KL mean {d['kl_mean']:.3g} max {d['kl_max']:.3g}  top-1 flips {int(d['top1_flips'])}/"
             f"{res['prompt_tokens']} (first at position {res['first_top1_flip_position']})"]
    g = res.get("generation")
    if g:
        lines.append(f"greedy first token: reference {g['ref_first']['piece']!r} p={g['ref_first']['p']:.4f}   "
                     f"variant {g['var_first']['piece']!r} p={g['var_first']['p']:.4f}")
        if g["diverged"]:
            a = g["at_divergence"]
            lines.append(f"greedy diverges at step {g['first_divergence']}: reference {a['ref_piece']!r} "
                         f"(p {a['ref_run_p_ref_token']:.4f} vs {a['ref_run_p_var_token']:.4f}) / variant "
                         f"{a['var_piece']!r} (p {a['var_run_p_var_token']:.4f} vs {a['var_run_p_ref_token']:.4f})")
            lines.append(f"  reference after: {a['ref_text_after']!r}")
            lines.append(f"  variant   after: {a['var_text_after']!r}")
        else:
            lines.append(f"greedy identical for {g['steps']} steps: {g['ref_text']!r}")
    causal = res.get("causal")
    local = {r["site"]: r for r in res.get("local", [])}
    if causal:
        default = res.get("causal_default", "correct")
        modes = res.get("causal_modes", [default])
        lines.append(f"causal default: {res.get('causal_default_why', default)}")
        for mode in modes:
            rows = res.get("causal_" + mode, causal)
            sfx = "_injected" if mode == "inject" else "_after"
            what = ("fraction of rms drift made by the unit's own error put into the reference" if mode == "inject"
                    else "fraction of rms drift removed by taking the unit's own error out of the variant")
            col = "rms inj" if mode == "inject" else "rms after"
            fcol = "flips inj" if mode == "inject" else "flips after"
            lines.append(f"causal [{mode}{' (default)' if mode == default else ''}] ({what}), top {top}:")
            lines.append(f"  {'rank':>4} {'unit':<22} {'kind':<6} {'contrib':>8} {col:>10} {fcol:>11} "
                         f"{'local ulp':>9} {'local rel':>9}")
            for i, r in enumerate(rows[:top]):
                lo = local.get(r["unit"], {})
                lines.append(f"  {i + 1:>4} {r['unit']:<22} {r['kind']:<6} {r['contribution']:>8.3f} "
                             f"{r['rms_dlogit' + sfx]:>10.3g} {int(r['top1_flips' + sfx]):>11} "
                             f"{_f(lo.get('max_ulp'), 'd'):>9} {_f(lo.get('rel_err')):>9}")
    elif local:
        worst = sorted(local.values(), key=lambda r: -r["rel_err"])[:top]
        lines.append("largest local errors:")
        lines += [f"  {r['site']:<22} ulp {r['max_ulp']}  rel {r['rel_err']:.3g}  cos {r['cosine']:.6f}"
                  for r in worst]
    t = res.get("timings", {})
    lines.append("timings: " + "  ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                         for k, v in t.items()))
    return "\n".join(lines)


def heatmap_matrix(res, key="contribution", mode=None):
    """[layer rows (+ final)] x [op columns] of causal op contributions (of `mode`, default the
    default mode's) or local 'rel_err'."""
    n = res["n_layers"]
    ops = list(res.get("layer_ops", LAYER_OPS)) + list(FINAL_OPS)
    m = [[math.nan] * len(ops) for _ in range(n + 1)]
    causal = res.get("causal_" + mode, []) if mode else res.get("causal", [])
    rows = [r for r in causal if r["kind"] == "op"] if key == "contribution" else res.get("local", [])
    for r in rows:
        label = r["unit"] if key == "contribution" else r["site"]
        head, _, op = label.partition(".")
        layer = n if head == "final" else int(head[1:])
        m[layer][ops.index(op)] = r[key]
    return m, ops


def plot_heatmap(res, path, title=""):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    default = res.get("causal_default")
    modes = res.get("causal_modes", [default] if res.get("causal") else [])
    panels = [("contribution", f"causal contribution [{m}{' (default)' if m == default else ''}]", m)
              for m in modes if any(r["kind"] == "op" for r in res.get("causal_" + m, res.get("causal", [])))]
    if res.get("local"):
        panels.append(("rel_err", "local relative error (log10)", None))
    if not panels:
        return None
    n = res["n_layers"]
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 2 + 0.22 * (n + 1)), squeeze=False)
    for ax, (key, name, mode) in zip(axes[0], panels):
        m, ops = heatmap_matrix(res, key, mode)
        a = np.array(m, dtype=float)
        if key == "rel_err":
            a = np.log10(np.where(a > 0, a, np.nan))
        if key == "contribution":     # signed: centred at 0
            lim = float(np.nanmax(np.abs(a))) if np.isfinite(a).any() else 1.0
            im = ax.imshow(a, aspect="auto", cmap="RdBu_r", vmin=-lim or -1, vmax=lim or 1,
                           interpolation="nearest")
        else:
            im = ax.imshow(a, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_xticks(range(len(ops)), ops, rotation=70, fontsize=7)
        ax.set_yticks(range(n + 1), [f"L{i}" for i in range(n)] + ["final"], fontsize=6)
        ax.set_title(name, fontsize=9)
        fig.colorbar(im, ax=ax)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
