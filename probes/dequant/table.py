"""Printed tables and the plot of a dequantisation report."""


def _fmt(v):
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def format_table(report):
    lines = ["int4 group-wise (g=128, bf16 out): formula vs formula, per backend",
             f"{'zeros':6s} {'compute':8s} {'backend':9s} {'model':6s} "
             f"{'sub_mul~mul_sub':>18s} {'sub_mul~fma':>18s} {'mul_sub~fma':>18s}  (fraction differing / max ulp)"]
    for e in report["experiments"]:
        k = e["key"].split("/")
        m = e["metrics"] or {}
        if k[0] == "int4" and not m:  # skipped, or failed before it measured
            lines.append(f"{k[1]:6s} {k[2]:8s} {k[3]:9s} {e['status']}: {e['message']}")
        elif k[0] == "int4":
            ok = "ok" if e["status"] == "ok" else "DIFF"
            cells = [f"{m[p + '/frac_differing']:.4f} / {m[p + '/max_ulp']:<3d}" for p in
                     ("sub_mul~mul_sub", "sub_mul~fma", "mul_sub~fma")]
            extra = f"  addcmul = {','.join(m['addcmul_matches']) or 'none'}" if "addcmul_matches" in m else ""
            lines.append(f"{k[1]:6s} {k[2]:8s} {k[3]:9s} {ok:6s} " + " ".join(f"{c:>18s}" for c in cells) + extra)
    lines += ["", "GGUF Q4 blocks and FP8 (float32 vs bfloat16 dequantisation), per backend"]
    for e in report["experiments"]:
        k = e["key"].split("/")
        m = e["metrics"] or {}
        if k[0] == "gguf":
            lines.append(f"SmolLM2 GGUF tensor types: {m['counts']}; not Q4 (not decoded): "
                         + "; ".join(f"{t}: {len(v)} ({', '.join(v[:3])}{', ...' if len(v) > 3 else ''})"
                                     for t, v in m["not_q4"].items()))
        elif k[0] == "q4":
            lines.append(f"{'/'.join(k[1:3]):40s} {k[-1]:9s} matches model: {m.get('matches_model', e['message'])}")
        elif k[0] == "fp8":
            d = f"fp32~bf16 {m['float32~bfloat16/frac_differing']:.4f} / {m['float32~bfloat16/max_ulp']}" \
                if "float32~bfloat16/max_ulp" in m else "fp32~bf16 n/a"
            lines.append(f"{'/'.join(k[1:3]):40s} {k[-1]:9s} model: f32 {_fmt(m.get('matches_model/float32'))} "
                         f"bf16 {_fmt(m.get('matches_model/bfloat16'))}  {d}")
    rest = [e for e in report["experiments"] if e["key"].split("/")[0] in ("fused", "layer", "speed")]
    if rest:
        lines += ["", "fused matmul, layer effect, speed"]
        for e in rest:
            lines.append(f"{e['key']:55s} {e['status']:5s} " + ", ".join(
                f"{k}={_fmt(v)}" for k, v in (e["metrics"] or {}).items()))
    bad = [e["key"] for e in report["experiments"] if e["status"] == "error"]
    lines += ["", f"errors: {len(bad)}" + (": " + ", ".join(bad) if bad else "")]
    skipped = [f"{e['key']} ({e['message']})" for e in report["experiments"] if e["status"] == "skipped"]
    if skipped:
        lines.append("skipped: " + "; ".join(skipped))
    return "\n".join(lines)


def plot(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [e for e in report["experiments"] if e["key"].startswith("int4/") and e["key"].endswith("/numerics")
            and e["metrics"]]
    speed = [e for e in report["experiments"] if e["key"].startswith("speed/") and e["key"] != "speed/copy"]
    fig, axes = plt.subplots(1, 2 if speed else 1, figsize=(13 if speed else 7, 4.5), squeeze=False)
    ax = axes[0][0]
    pairs = ("sub_mul~mul_sub", "sub_mul~fma", "mul_sub~fma")
    labels = [f"{e['key'].split('/')[1]}/{e['key'].split('/')[2][5:]}" for e in rows]
    for i, p in enumerate(pairs):
        ax.bar([j + 0.27 * i for j in range(len(rows))], [e["metrics"][p + "/frac_differing"] for e in rows],
               width=0.27, label=p)
    ax.set_xticks([j + 0.27 for j in range(len(rows))], labels, rotation=30)
    ax.set_ylabel("fraction of bf16 weights that differ")
    ax.set_title("int4 dequant formulas (zeros / scale math)")
    ax.legend()
    if speed:
        ax = axes[0][1]
        ax.barh([e["key"][6:] for e in speed], [e["metrics"]["fraction_of_copy"] for e in speed])
        ax.axvline(0.8, color="k", ls="--", lw=1)
        ax.set_xlabel("fraction of copy bandwidth")
        ax.set_title("dequant kernel speed")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
