"""The FMA probe's printed tables and its plot."""
from collections import defaultdict


def _ok(report):
    return [e for e in report["experiments"] if e["status"] == "ok"]


def format_table(report):
    """Two tables: each build against its predicted model, then how far the variants are apart."""
    fmts = report["config"]["formats"]
    progs = ("dot", "horner", "axpy")
    cols = [f"{p}/{f}" for p in progs for f in fmts]
    head = f"{'backend/variant':<26} {'predicted':<9} " + " ".join(f"{c:>15}" for c in cols)
    lines = ["model_match: fraction of outputs with exactly the predicted model's bits "
             "(NO: the build did not follow its prediction)", head, "-" * len(head)]
    cells = defaultdict(dict)
    predicted = {}
    for e in report["experiments"]:
        p = e["params"]
        if "variant" not in p:
            continue
        row = f"{p['backend']}/{p['variant']}"
        predicted[row] = p["predicted"]
        col = f"{p['program']}/{p['format']}"
        if e["status"] == "ok":
            m = e["metrics"]
            mark = "" if m["model_match"] == 1.0 else " NO"
            cells[row][col] = f"{m['model_match']:.4f}{mark}"
        else:
            cells[row][col] = e["status"]
    for row in cells:
        lines.append(f"{row:<26} {predicted[row]:<9} " + " ".join(f"{cells[row].get(c, '-'):>15}" for c in cols))

    head2 = f"{'pair':<46} {'program/format':<16} {'differ':>8} {'max ulp':>8}  ulp histogram"
    lines += ["", "variant pairs: fraction of outputs whose bits differ, largest distance (ulps)", head2,
              "-" * len(head2)]
    for e in _ok(report):
        p = e["params"]
        if "pair" not in p:
            continue
        m = e["metrics"]
        hist = " ".join(f"{u}:{c}" for u, c in list(m["ulp_histogram"].items())[:8])
        lines.append(f"{p['backend'] + '/' + '~'.join(p['pair']):<46} {p['program'] + '/' + p['format']:<16} "
                     f"{m['differ_fraction']:>8.4f} {m['max_ulp']:>8}  {hist}")
    notes = sorted({f"  {e['params']['backend']}: {e['message']}" for e in report["experiments"]
                    if e["status"] == "skipped"})
    if notes:
        lines += ["", "skipped:"] + notes
    errors = [f"  {e['key']}: {e['message']}" for e in report["experiments"] if e["status"] == "error"]
    if errors:
        lines += ["", "errors:"] + errors
    return "\n".join(lines)


def plot(report, path):
    """Left: fraction of outputs that differ per variant pair; right: ulp histograms of fma vs mul_add."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [e for e in _ok(report) if "pair" in e["params"]]
    groups = sorted({(e["params"]["program"], e["params"]["format"]) for e in pairs},
                    key=lambda g: (("dot", "horner", "axpy").index(g[0]), g[1]))
    names = sorted({f"{e['params']['backend']}/{'~'.join(e['params']['pair'])}" for e in pairs})
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(15, 6), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / max(len(names), 1)
    value = {(f"{e['params']['backend']}/{'~'.join(e['params']['pair'])}", e["params"]["program"],
              e["params"]["format"]): e["metrics"]["differ_fraction"] for e in pairs}
    cmap = plt.get_cmap("tab20")
    for i, name in enumerate(names):
        xs = [g + i * width for g in range(len(groups))]
        ax.bar(xs, [value.get((name, *grp), 0.0) for grp in groups], width, label=name, color=cmap(i % 20))
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
    ax.set_xticklabels([f"{p}\n{f}" for p, f in groups])
    ax.set_ylabel("fraction of outputs that differ (bits)")
    ax.set_title("fused vs unfused: how often the last bits differ")
    ax.legend(fontsize=6, ncol=2)
    for e in pairs:
        p = e["params"]
        if p["backend"] != "model":
            continue
        hist = e["metrics"]["ulp_histogram"]
        us = [int(u) for u in hist]
        ax2.plot(us, [hist[str(u)] for u in us], marker="o", label=f"{p['program']}/{p['format']}")
    ax2.set_yscale("log")
    ax2.set_xscale("symlog", linthresh=4)
    ax2.set_xlabel("ulps between the fma and mul_add models")
    ax2.set_ylabel("outputs")
    ax2.set_title("distance histogram (exact models)")
    ax2.legend(fontsize=7)
    fp = report.get("fingerprint") or {}
    gpu = (fp.get("gpu") or {}).get("name") if isinstance(fp, dict) else None
    fig.suptitle(f"FMA probe on {gpu or report['config']['device']} (seed {report['config']['seed']}, "
                 f"n {report['config']['n']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
