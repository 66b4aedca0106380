"""The accumulator probe's printed table and its plot."""


def designs_word(consistent):
    return "n/a" if consistent is None else "ok" if consistent else "MISMATCH"


def format_table(report):
    head = f"{'backend':<12} {'format':<14} {'detected model':<72} {'designs':>8} {'match':>9} {'s':>6}"
    lines = [head, "-" * len(head)]
    other = []
    for e in report["experiments"]:
        p, m = e["params"], e.get("metrics") or {}
        if e["status"] != "ok":
            other.append(f"  {e['status']} {p['backend']}/{p['format']}: {e['message']}")
            continue
        amb = "" if not m["ambiguity"] else "  (ambiguous: " + ", ".join(
            f"{k}={'/'.join(str(v) for v in vs)}" for k, vs in m["ambiguity"].items()) + ")"
        lines.append(f"{p['backend']:<12} {p['format']:<14} {m['model_text']:<72} "
                     f"{designs_word(m['consistent_with_designs']):>8} "
                     f"{m['match_rate']:>9.6f} {m['seconds']:>6.1f}")
        if amb:
            lines.append(f"{'':<27}{amb}")
        if "recovered_true_model" in m:
            lines.append(f"{'':<27}(simulated: true model recovered: {m['recovered_true_model']})")
    if other:
        lines += ["", "not run:"] + other
    return "\n".join(lines)


def plot(report, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    exps = [e for e in report["experiments"] if e["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(exps) + 1.5))
    labels = [f"{e['params']['backend']}/{e['params']['format']}" for e in exps]
    rates = [1 - e["metrics"]["match_rate"] for e in exps]
    ax.barh(range(len(exps)), [max(r, 1e-7) for r in rates], color=["tab:green" if r == 0 else "tab:red" for r in rates])
    ax.set_xscale("log")
    ax.set_yticks(range(len(exps)), labels)
    for i, e in enumerate(exps):
        ax.text(1.2e-7, i, e["metrics"]["model_text"], va="center", fontsize=7)
    ax.set_xlabel("mismatch rate vs the detected model (green: bit-exact on all samples)")
    gpu = (report["fingerprint"].get("gpu") or {}).get("name") or report["config"]["device"]
    ax.set_title(f"accumulator models on {gpu}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
