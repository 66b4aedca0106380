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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweeps = [e for e in _ok(report, "sweep/linear/") if e["status"] == "ok"]
    bench = [e for e in _ok(report, "bench/") if e["status"] == "ok"]
    panels = 1 + bool(bench)
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 4.5), squeeze=False)
    ax = axes[0][0]
    for e in sweeps:
        ms, groups = e["params"]["ms"], e["metrics"]["groups"]
        ax.step(ms, groups, where="post", label=e["key"][13:], lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("M (rows of X)")
    ax.set_ylabel("row-0 bit group (0 = first M's bits)")
    ax.set_title("F.linear row 0 vs M: a new group = the library changed kernel")
    if sweeps:
        ax.legend(fontsize=6, ncol=2)
    if bench:
        ax = axes[0][1]
        chosen = report["config"].get("triton_choices", {})
        for e in bench:
            _, dtype, shape, _, config = e["key"].split("/", 4)
            if _chosen_at(chosen, dtype, shape, e["metrics"]["M"]) != config:
                continue
            m = e["metrics"]
            ax.scatter(m["M"], m["ratio"], label=f"{dtype} {shape}", s=18)
        ax.axhline(0.9, ls="--", c="gray", lw=0.8)
        ax.axhline(0.8, ls=":", c="gray", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("M")
        ax.set_ylabel("cuBLAS time / Triton time (chosen config)")
        ax.set_title("batch-invariant Triton matmul speed vs cuBLAS")
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles))
        ax.legend(uniq.values(), uniq.keys(), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
