"""The GEMM probe's printed tables and its plot."""
from __future__ import annotations


def _f(v, spec):
    return "-" if v is None else format(v, spec)


def _ok(report, prefix):
    return [e for e in report["experiments"] if e["key"].startswith(prefix) and e["status"] != "skipped"]


def format_algos(report):
    exps = _ok(report, "algos/")
    if not exps:
        return ""
    head = (f"{'cuBLASLt algorithms':<34} {'ran/cfg':>8} {'groups':>6} {'torch=def':>9} {'default':<40} "
            f"{'def ms':>8} {'best ms':>8} {'max ulp':>7} {'stopped by':>11}")
    lines = [head, "-" * len(head)]
    for e in exps:
        if e["status"] != "ok":
            lines.append(f"{e['key'][6:]:<34} {e['status'].upper()}: {e['message'][:150]}")
            continue
        m = e["metrics"]
        d, f = m.get("default") or {}, m.get("fastest") or {}
        ulps = [g["max_ulp"] for g in m["groups"]]
        lines.append(f"{e['key'][6:]:<34} {str(m['ran']) + '/' + str(m['configs']):>8} {m['distinct']:>6} "
                     f"{str(m['torch_matches_default']):>9} {d.get('desc', '-'):<40} {_f(d.get('median_ms'), '.4f'):>8} "
                     f"{_f(f.get('median_ms'), '.4f'):>8} {max(ulps) if ulps else '-':>7} "
                     f"{str(m['enumeration'].get('stopped_by')):>11}")
    return "\n".join(lines)


def format_sweep(report):
    exps = _ok(report, "sweep/")
    if not exps:
        return ""
    head = f"{'batch invariance of row 0':<52} {'#M':>4} {'distinct':>8} {'first change':>12} {'max ulp':>8} {'rel diff':>9} {'s':>6}"
    lines = [head, "-" * len(head)]
    for e in exps:
        if e["status"] != "ok":
            lines.append(f"{e['key'][6:]:<52} {e['status'].upper()}: {e['message'][:150]}")
            continue
        m = e["metrics"]
        lines.append(f"{e['key'][6:]:<52} {len(e['params']['ms']):>4} {m['distinct']:>8} "
                     f"{_f(m['first_change_m'], 'd'):>12} {m['max_ulp_vs_first']:>8} "
                     f"{_f(m.get('max_normwise_rel_diff_vs_first'), '.1e'):>9} {m['wall_seconds']:>6.1f}")
    lines.append("(#M: sizes swept; first change: smallest M whose row 0 differs from the first M's; max ulp is "
                 "element-wise (large near zero), rel diff is max|row0 - first| / max|first|; sdpa_seq sweeps the "
                 "sequence length)")
    return "\n".join(lines)


def _chosen_at(chosen, dtype, shape, m):
    return ((chosen.get(dtype, {}).get(shape) or {}).get("by_m") or {}).get(str(m)) or \
        ((chosen.get(dtype, {}).get(shape) or {}).get("by_m") or {}).get(m)


def format_bench(report):
    exps = _ok(report, "bench/")
    if not exps:
        return ""
    chosen = report["config"].get("triton_choices", {})
    head = (f"{'Triton vs cuBLAS':<10} {'M':>5} {'config':<40} {'Triton TF/s':>11} {'cuBLAS TF/s':>11} "
            f"{'ratio':>6} {'target':>6} {'bits':>5} {'chosen':>6} {'host us/call T/C':>16}")
    lines = [head, "-" * len(head)]
    for e in exps:
        if e["key"].count("/") < 4:  # the record of a shape whose bench failed as a whole
            lines.append(f"{e['key'].split('/')[-1]:<10} {'':>5} {'(every config)':<40} ERROR {e['message'][:120]}")
            continue
        _, dtype, shape, mpart, config = e["key"].split("/", 4)
        if e["status"] != "ok":
            lines.append(f"{shape:<10} {mpart[2:]:>5} {config:<40} ERROR {e['message'][:120]}")
            continue
        m = e["metrics"]
        pick = _chosen_at(chosen, dtype, shape, m["M"]) == config
        bits = "same" if m.get("bit_identical_to_anchor") else "DIFF"
        lines.append(f"{shape:<10} {m['M']:>5} {config:<40} {m['tflops']:>11.1f} {m['cublas_tflops']:>11.1f} "
                     f"{m['ratio']:>6.3f} {m['target']:>6} {bits:>5} {'*' if pick else '':>6} "
                     f"{_host(m):>16}")
    for dtype, per in chosen.items():
        for shape, c in per.items():
            classes = c.get("classes") or {}
            lines.append(f"chosen {dtype} {shape}: worst ratio/target {c['score']:.3f} "
                         f"({'meets' if c['meets_targets'] else 'MISSES'} targets)"
                         + (f"; split {c['split_k']} of classes {classes}" if len(classes) > 1 else "")
                         + (f"; bits differ from the anchor: {c['not_identical']}" if c.get("not_identical") else ""))
            for b in c["buckets"]:
                graph = f" graph {b['graph_ratio']:.3f}" if b.get("graph_ratio") else ""
                lines.append(f"    M {b['bucket']:>10}: {b['config']:<40} ratio {b['ratio']:.3f}{graph} at "
                             f"M={b['measured_at_m']} (target {b['target']}{'' if b['meets'] else ', missed'})")
    return "\n".join(lines)


def _host(m):
    if "triton_host_us" not in m:
        return "-"
    return f"{m['triton_host_us']:.0f}/{m['cublas_host_us']:.0f}"


def format_tables(report):
    skipped = "\n".join(f"skipped {e['key'].split('/')[0]}: {e['message']}" for e in report["experiments"]
                        if e["status"] == "skipped")
    return "\n\n".join(t for t in (format_algos(report), format_sweep(report), format_bench(report), skipped) if t)


def plot(report, path):
    """The sweep's row-0 groups over M, the chosen Triton configs' speed, the cuBLASLt algorithms' results:
    a panel for each part that has results. Nothing to plot (every part skipped or failed): no file, False."""
    sweeps = [e for e in _ok(report, "sweep/linear/") if e["status"] == "ok"]
    bench = [e for e in _ok(report, "bench/") if e["status"] == "ok"]
    algos = [e for e in _ok(report, "algos/") if e["status"] == "ok"]
    panels = [(f, exps) for f, exps in ((_plot_sweep, sweeps), (_plot_bench, bench), (_plot_algos, algos)) if exps]
    if not panels:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    widths = [max(7, 0.45 * len(exps)) if f is _plot_algos else 7 for f, exps in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(sum(widths), 4.8), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    for ax, (draw, exps) in zip(axes[0], panels):
        draw(ax, exps, report)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _plot_sweep(ax, sweeps, report):
    for e in sweeps:
        ms, groups = e["params"]["ms"], e["metrics"]["groups"]
        ax.step(ms, groups, where="post", label=e["key"][13:], lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("M (rows of X)")
    ax.set_ylabel("row-0 bit group (0 = first M's bits)")
    ax.set_title("F.linear row 0 vs M: a new group = the library changed kernel")
    ax.legend(fontsize=6, ncol=2)


def _plot_bench(ax, bench, report):
    chosen = report["config"].get("triton_choices", {})
    colors = {}  # one colour per dtype and shape, in the legend as on the points
    for e in bench:
        _, dtype, shape, _, config = e["key"].split("/", 4)
        if _chosen_at(chosen, dtype, shape, e["metrics"]["M"]) != config:
            continue
        m = e["metrics"]
        label = f"{dtype} {shape}"
        colors.setdefault(label, f"C{len(colors) % 10}")
        ax.scatter(m["M"], m["ratio"], label=label, s=18, c=colors[label])
    ax.axhline(0.9, ls="--", c="gray", lw=0.8)
    ax.axhline(0.8, ls=":", c="gray", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("M")
    ax.set_ylabel("cuBLAS time / Triton time (chosen config)")
    ax.set_title("batch-invariant Triton matmul speed vs cuBLAS")
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    ax.legend(uniq.values(), uniq.keys(), fontsize=7)


def _plot_algos(ax, algos, report):
    """Per product, each bit-distinct group of configurations: its relative error against float64 (area: how
    many configurations give it; red: the heuristic default's group); above, the number of groups."""
    floor = 1e-12  # log axis: an exact result would sit at 0
    for i, e in enumerate(algos):
        groups = e["metrics"]["groups"]
        for g in groups:
            ax.scatter(i, max(g["rel_error"], floor), s=8 + 6 * g["size"], alpha=1 if g["has_default"] else 0.5,
                       c="tab:red" if g["has_default"] else "tab:gray", edgecolors="none",
                       zorder=3 if g["has_default"] else 2)
        top = max(max(g["rel_error"], floor) for g in groups) if groups else floor
        ax.annotate(str(len(groups)), (i, top), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    ax.set_yscale("log")
    ax.set_xticks(range(len(algos)), [e["key"].removeprefix("algos/") for e in algos], rotation=60, ha="right",
                  fontsize=7)
    ax.set_ylabel("relative error vs float64 of each bit-distinct group")
    ax.set_title("cuBLASLt algorithms: the results they give (number = groups; red = the default's)", fontsize=10)
