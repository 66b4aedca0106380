"""The reduction probe's printed tables and its plot."""
from collections import defaultdict


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def format_table(report):
    head = (f"{'backend/strategy':<22} {'dtype->acc':<18} {'n':>10} {'runs':>4} {'distinct':>8} "
            f"{'spread':>6} {'rel.err':>9} {'model':>5} {'ms':>9} {'GB/s':>8} {'%copy':>6} {'fix/atom':>8}")
    lines = [head, "-" * len(head)]
    skipped = defaultdict(set)
    errors = []
    for e in report["experiments"]:
        p, m = e["params"], e.get("metrics") or {}
        if e["status"] == "skipped":
            skipped[f"{p['backend']}/{p['strategy']}"].add(e["message"])
            continue
        if e["status"] == "error":
            errors.append(f"  {e['key']}: {e['message']}")
            continue
        if "special" in e["inputs"]:
            continue
        model = {True: "yes", False: "NO", None: "-"}[m.get("matches_model")]
        frac = m.get("copy_fraction")
        lines.append(
            f"{p['backend'] + '/' + p['strategy']:<22} {e['inputs']['dtype'] + '->' + p['accumulate']:<18} "
            f"{e['inputs']['n']:>10} {m['runs']:>4} {m['distinct']:>8} {_fmt(m.get('spread_ulp'), 'd'):>6} "
            f"{_fmt(m.get('rel_error'), '.2e'):>9} {model:>5} {_fmt(m.get('median_ms'), '.4f'):>9} "
            f"{_fmt(m.get('gbps'), '.1f'):>8} {_fmt(frac and 100 * frac, '.1f'):>6} "
            f"{_fmt(m.get('fixed_over_atomic'), '.3f'):>8}")
    specials = [e for e in report["experiments"] if "special" in e["inputs"] and e["status"] == "ok"]
    if specials:
        unexpected = [e for e in specials if not e["metrics"]["as_expected"]]
        lines += ["", f"NaN / Inf in the input (accumulating in float32): {len(specials)} experiments, "
                      f"{len(specials) - len(unexpected)} gave the IEEE result (nan -> NaN, +inf -> +Inf, "
                      "+inf and -inf -> NaN)" + (":" if unexpected else ".")]
        for e in unexpected:
            lines.append(f"  UNEXPECTED {e['key']}: {e['inputs']['special']} -> {','.join(e['metrics']['classes'])}"
                         f" (expected {e['metrics']['expected']})")
    if skipped:
        lines += ["", "skipped:"]
        lines += [f"  {name}: {'; '.join(sorted(reasons))}" for name, reasons in sorted(skipped.items())]
    if errors:
        lines += ["", "errors:"] + errors
    return "\n".join(lines)


def speed_summary(report):
    """The benchmark figures: at the largest float32 size, the fixed-order extension kernel against
    torch.sum, the copy rate and the atomic kernel, all measured in this run."""
    exps = {e["key"]: e for e in report["experiments"] if e["status"] == "ok"}
    sizes = [e["inputs"]["n"] for e in exps.values() if e["inputs"]["dtype"] == "float32"
             and "special" not in e["inputs"]]
    if not sizes:
        return ""
    n = max(sizes)

    def metric(key, name):
        e = exps.get(f"{key}/float32->float32/n={n}")
        return e and e["metrics"].get(name)

    fixed, torch_sum, atomic = (metric(k, "gbps") for k in ("cuda_ext/fixed", "torch/sum", "cuda_ext/atomic"))
    copy = metric("cuda_ext/fixed", "copy_gbps")
    lines = [f"speed at n={n} float32 (median of the runs, this session):"]
    if copy:
        lines.append(f"  device-to-device copy      {copy:8.1f} GB/s (read + write)")
    for label, rate in (("torch.sum", torch_sum), ("cuda_ext fixed-order", fixed), ("cuda_ext atomic", atomic)):
        if rate:
            lines.append(f"  {label:<26} {rate:8.1f} GB/s" + (f"  {100 * rate / copy:5.1f}% of copy" if copy else ""))
    if fixed and torch_sum:
        lines.append(f"  fixed-order / torch.sum rate: {fixed / torch_sum:.3f}")
    ratio = metric("cuda_ext/fixed", "fixed_over_atomic")
    if ratio:
        lines.append(f"  fixed / atomic time:          {ratio:.3f}")
    return "\n".join(lines)


def plot(report, path):
    """Distinct results and relative error against size, one line per backend/strategy/accumulation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dtypes = report["config"]["dtypes"]
    fig, axes = plt.subplots(2, len(dtypes), figsize=(5 * len(dtypes) + 3, 8), squeeze=False)
    # Colour = backend, line style = strategy, marker = accumulation dtype.
    backends = sorted({e["params"]["backend"] for e in report["experiments"]})
    colours = {b: f"C{i}" for i, b in enumerate(backends)}
    styles = {"fixed": "-", "sequential": "-.", "sum": "-", "atomic": "--", "index_add": ":", "scatter_add": ":"}
    series = defaultdict(list)
    for e in report["experiments"]:
        if e["status"] != "ok" or "special" in e["inputs"]:
            continue
        m, p = e["metrics"], e["params"]
        acc = "fp32 acc" if p["accumulate"] == "float32" else "input acc"
        series[(e["inputs"]["dtype"], p["backend"], p["strategy"], acc)].append(
            (e["inputs"]["n"], m["distinct"], m.get("rel_error")))
    for col, dtype in enumerate(dtypes):
        for (dt, backend, strategy, acc), points in sorted(series.items()):
            if dt != dtype:
                continue
            points.sort()
            style = dict(color=colours[backend], linestyle=styles.get(strategy, "-"),
                         marker="o" if acc == "fp32 acc" else "s", label=f"{backend}/{strategy}, {acc}")
            axes[0][col].plot([p[0] for p in points], [p[1] for p in points], **style)
            errs = [(p[0], p[2]) for p in points if p[2]]
            if errs:
                axes[1][col].plot(*zip(*errs), **style)
        axes[0][col].set(title=f"{dtype}: distinct results over the runs", xscale="log", xlabel="n")
        axes[1][col].set(title=f"{dtype}: relative error vs exact sum", xscale="log", yscale="log", xlabel="n")
    handles = {}
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(list(handles.values()), list(handles), loc="center right", fontsize=7)
    fig.tight_layout(rect=(0, 0, 1 - 3 / (5 * len(dtypes) + 3), 0.96))
    from probes.device import fingerprint_summary

    fig.suptitle(f"driftscope reduction probe: {fingerprint_summary(report['fingerprint'])}", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
