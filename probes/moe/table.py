"""The MoE probe's printed table (the two effects side by side per batch size) and its plot."""
from __future__ import annotations


def _ok(report):
    return {e["key"]: e for e in report["experiments"] if e["status"] == "ok"}


def _div(m):
    if "greedy_first_divergence" not in m:
        return "-"
    return "none" if m["greedy_first_divergence"] is None else str(m["greedy_first_divergence"])


def _row(label, m, extra=""):
    per_layer = "/".join(f"{x['fraction_changed']:.2f}" for x in m["layers"])
    return (f"{label:<38} {per_layer:<22} {m['rms_dlogit']:>10.3g} {m['max_dlogit']:>10.3g} "
            f"{m['top1_flips']:>3}/{m['prompt_tokens']:<4} {_div(m):>8}  {extra}")


def format_table(report):
    ok = _ok(report)
    cfg = report["config"]
    head = (f"{'effect (probe vs baseline)':<38} {'set changed per layer':<22} {'rms dlogit':>10} {'max dlogit':>10} "
            f"{'flips':>8} {'greedy@':>8}  dropped slots (probe / batch)")
    lines = [f"{cfg.get('model')} {cfg.get('dtype')}: the probe request (row {cfg.get('probe_row')}) batched with "
             "N - 1 others", "set changed: fraction of the probe's tokens whose expert set differs, per layer; "
             "greedy@: first divergent greedy token", head, "-" * len(head)]
    tie = ok.get("moe/near_tie")
    prec = ok.get("moe/router_precision")
    if prec:
        lines.append(_row("arithmetic: router fp32 vs dtype, N=1", prec["metrics"]))
    for n in cfg.get("batch_sizes", cfg.get("batch", [])) or []:
        ar = ok.get(f"moe/arithmetic/batch={n}")
        if ar:
            lines.append(_row(f"arithmetic: top-k N={n} vs alone", ar["metrics"]))
            if "router_gemm" in ar["metrics"]:
                lines.append(_row("  router GEMM alone: batch vs own rows",
                                  {**ar["metrics"]["router_gemm"], "prompt_tokens": ar["metrics"]["prompt_tokens"]}))
        for router in cfg.get("routers", []):
            e = ok.get(f"moe/routing/{router}/batch={n}")
            if not e:
                continue
            m = e["metrics"]
            drop = f"{m['probe_slots_dropped']} / {m['batch_slots_dropped']}" + \
                (f" (rerouted {m['batch_slots_rerouted']})" if m["batch_slots_rerouted"] else "")
            lines.append(_row(f"routing: {router} N={n}", m, drop))
            lines.append(_row("  both: vs top-k alone", {**m["both"], "prompt_tokens": m["prompt_tokens"]}))
            lines.append(_row("  neighbours: vs the same rule alone", {**m["neighbours"],
                                                                       "prompt_tokens": m["prompt_tokens"]}))
    if tie:
        t = tie["metrics"]
        lines += ["", f"near ties (the probe alone): tokens x layers whose k-th and (k+1)-th router logits are "
                      f"tied exactly: {t['exact_ties']}, within 1 ulp: {t['tokens_within_1_ulp']}, within 4 ulps: "
                      f"{t['tokens_within_4_ulp']} (of {sum(x['tokens'] for x in t['layers'])})"]
        flips = t.get("arithmetic_flips", [])
        if flips:
            gaps = sorted(f["gap_ulps"] for f in flips)
            lines.append(f"  expert sets the arithmetic changed: {len(flips)}, at gaps of {gaps[0]:.3g} .. "
                         f"{gaps[-1]:.3g} ulps (median {gaps[len(gaps) // 2]:.3g})")
    lines += ["", dominance(report)]
    errors = [f"  {e['key']}: {e['message']}" for e in report["experiments"] if e["status"] == "error"]
    if errors:
        lines += ["errors:"] + errors
    return "\n".join(lines)


def dominance(report):
    """Per batch size: which effect moved the probe's logits more (rms), arithmetic or each capacity rule."""
    ok = _ok(report)
    cfg = report["config"]
    lines = ["which effect dominates the probe's dependence on its batch (rms dlogit; arithmetic: top-k in the "
             "batch vs alone; RULE: the rule in the batch vs the rule alone, [the rule vs top-k in the batch]):"]
    for n in cfg.get("batch_sizes", []) or []:
        ar = ok.get(f"moe/arithmetic/batch={n}")
        a = ar["metrics"]["rms_dlogit"] if ar else 0.0
        cells = []
        for router in cfg.get("routers", []):
            e = ok.get(f"moe/routing/{router}/batch={n}")
            if e:
                r, v = e["metrics"]["neighbours"]["rms_dlogit"], e["metrics"]["rms_dlogit"]
                cells.append(f"{router} {r:.3g} [{v:.3g}] -> "
                             f"{'routing' if r > a else 'arithmetic' if a > r else 'neither'}")
        if cells or ar:
            lines.append(f"  N={n:<3} arithmetic {a:.3g}" + "".join(f"; {c}" for c in cells))
    return "\n".join(lines)


def plot(report, path):
    """Left: fraction of the probe's tokens whose expert set changed (mean over layers) per batch size, per
    effect; right: rms logit difference per batch size."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ok = _ok(report)
    cfg = report["config"]
    ns = [n for n in cfg.get("batch_sizes", []) or []]
    series = [("arithmetic: top-k N vs alone", [ok.get(f"moe/arithmetic/batch={n}") for n in ns], None, "-")]
    for router in cfg.get("routers", []):
        es = [ok.get(f"moe/routing/{router}/batch={n}") for n in ns]
        series.append((f"{router}: N vs alone", es, "neighbours", "-"))
        series.append((f"{router} vs top-k, in N", es, None, "--"))
    if not any(e for _, es, _, _ in series for e in es):
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, es, sub, style) in enumerate(series):
        pts = [(n, e["metrics"][sub] if sub else e["metrics"]) for n, e in zip(ns, es) if e]
        if not pts:
            continue
        line, = axes[0].plot([n for n, _ in pts], [m["fraction_changed_mean"] for _, m in pts], "." + style,
                             label=name, color=colors[((i + 1) // 2) % len(colors)])
        axes[1].plot([n for n, _ in pts], [max(m["rms_dlogit"], 1e-8) for _, m in pts], "." + style,
                     color=line.get_color())
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size (probe + others)")
    axes[0].set_ylabel("probe tokens, expert set changed\n(mean over layers)")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("rms logit difference (1e-8: none)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{cfg.get('model')} {cfg.get('dtype')}: routing vs arithmetic under batching", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
