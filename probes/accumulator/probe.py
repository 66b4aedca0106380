"""The accumulator probe's run: per backend x format, detect the model, validate it, report."""
from __future__ import annotations

import math
import time

from dataclasses import replace

import numpy as np

from numerics.matmul import MIXED_FORMATS, MatmulModel, operand_formats
from probes import report as reports
from probes.accumulator.backends import make_backends
from probes.accumulator.designs import K_DESIGN, DesignSet
from probes.accumulator.detect import Detection, detect
from probes.accumulator.fit import MAX_EVALS, fit_at_shape
from probes.accumulator.validate import K_VALIDATE, validate
from probes.progress import Progress

#: The CPU demo's "device": a different known model per format, recovered by the detection.
SIMULATED_MODELS = {
    "float16": MatmulModel("float16", 8, 3, "toward_zero"),
    "bfloat16": MatmulModel("bfloat16", 16, 2, "toward_zero", normalize=False),
    "tf32": MatmulModel("tf32", 4, 1, "nearest_even"),
    "float32": MatmulModel("float32", 1, None, "nearest_even"),
    "float8_e4m3fn": MatmulModel("float8_e4m3fn", 32, -10, "toward_zero", sum_bits=14),
    "float8_e5m2": MatmulModel("float8_e5m2", 32, 0, "toward_zero", align_to="exponent_sum"),
    "float8_e4m3fn_x_e5m2": MatmulModel("float8_e4m3fn_x_e5m2", 32, -10, "toward_zero", sum_bits=14,
                                        split_k=2),
}

#: What probes.compare compares (probes.report.add_experiment's `compares`): the validation matmul's output bit
#: for bit, the model fitted to it and how many of its values that model reproduces; not the times.
COMPARES = {"output": True, "metrics": ["model", "match_rate"]}


def run(*, device, backend_names, formats, samples, seed, command, log=print, fingerprint=None,
        checkpoint=None, fit_evals=MAX_EVALS):
    """``checkpoint(report)`` is called after each experiment (the CLI writes the JSON then, so a
    run cut short by a time limit keeps what it measured)."""
    from probes.device import fingerprint as fp_fn
    t0 = time.time()
    fp = fingerprint if fingerprint is not None else fp_fn(device)
    backends = make_backends(backend_names, device, SIMULATED_MODELS)
    report = reports.new_report("accumulator", command=command, fingerprint=fp, config={
        "device": device, "backends": backend_names, "formats": formats, "samples": samples,
        "seed": seed, "K_validate": K_VALIDATE, "fit_evals": fit_evals,
        "simulated_models": {k: v.as_dict() for k, v in SIMULATED_MODELS.items()}})
    bar = Progress(len(backends) * len(formats), "accumulator")
    found = {}                        # (backend, format) -> model, a start for mixed formats
    for be in backends:
        for fmt in formats:
            key = f"accumulator/{be.name}/{fmt}"
            params = {"backend": be.name, "format": fmt}
            why = be.unavailable(device, fmt)
            if why:
                log(f"skip {be.name}/{fmt}: {why}")
                reports.add_experiment(report, key=key, inputs={"seed": seed}, params=params,
                                       status="skipped", message=why, compares=COMPARES)
                bar.update(note=f"{be.name}/{fmt} skipped")
                continue
            t = time.time()
            try:
                det = _designs_or_start(be, fmt, seed, found)
                side = int(math.ceil(math.sqrt(samples)))
                fit = fit_at_shape(be, fmt, det.model, M=side, N=side, K=K_VALIDATE, seed=seed,
                                   max_evals=fit_evals)
                t_det = time.time() - t
                val = validate(be, fmt, fit["model"], samples=samples, seed=seed)
            except Exception as e:  # a backend failing on one format is a finding, not a crash
                log(f"error {be.name}/{fmt}: {type(e).__name__}: {e}")
                reports.add_experiment(report, key=key, inputs={"seed": seed}, params=params,
                                       status="error", message=f"{type(e).__name__}: {e}", compares=COMPARES)
                bar.update(note=f"{be.name}/{fmt} error")
                continue
            got = val.pop("got")
            ev = det.evidence()
            model = fit["model"]
            found[(be.name, fmt)] = model
            rows = max(64, K_DESIGN // 2)       # detect.design_outputs' matmul shape
            shapes = {"designs": f"{rows}x{K_DESIGN}x{rows}",
                      "promotion": "256x512x256", "fit_and_validation": f"{side}x{K_VALIDATE}x{side}"}
            metrics = {"model": model.as_dict(), "model_text": model.describe(),
                       "design_model": det.model.as_dict(), "design_model_text": det.model.describe(),
                       "fit": {"rate": fit["fit_rate"], "rows": fit["rows"], "changed": fit["changed"],
                               "trace": fit["trace"], "seed": fit["inputs"]["seed"]},
                       "shapes_MxKxN": shapes,
                       "K_per_slice": -(-K_VALIDATE // model.split_k),
                       "consistent_with_designs": det.consistent, "survivors": det.survivors,
                       "ambiguity": det.ambiguity, "design_mismatches": det.mismatches,
                       "match_rate": val["match_rate"], "samples": val["samples"],
                       "match_rate_by_row_kind": val["match_rate_by_row_kind"],
                       "max_ulp_mismatch": val["max_ulp_mismatch"],
                       "mismatch_examples": val["mismatch_examples"],
                       "evidence": ev, "detect_seconds": t_det, "seconds": time.time() - t}
            if be.name == "simulated":
                metrics["true_model"] = be.model_for(fmt).as_dict()
                metrics["recovered_true_model"] = model == be.model_for(fmt)
            reports.add_experiment(report, key=key, inputs={**val["inputs"], "design_seed": seed,
                                                            "design_scale_exp": ev["scale_exp"]},
                                   params=params, output=got.astype("float32"), metrics=metrics,
                                   compares=COMPARES)
            fitted = "" if model == det.model else f"  (designs: {det.model.describe()})"
            log(f"{be.name}/{fmt}: {model.describe()}{fitted}  designs {_designs_word(det.consistent)}"
                f"  match {val['match_rate']:.6f}  ({time.time() - t:.1f} s)")
            bar.update(note=f"{be.name}/{fmt}")
            if checkpoint:
                report["config"]["wall_seconds"] = time.time() - t0
                checkpoint(report)
    report["config"]["wall_seconds"] = time.time() - t0
    return report


def _designs_word(consistent):
    return "n/a" if consistent is None else "ok" if consistent else "MISMATCH"


def _designs_or_start(be, fmt, seed, found):
    """Stages 1-3 on the designs; for a mixed-operand format (whose designs would need factors in
    two formats: not built) a design-less Detection whose model is the start of the fit: this
    backend's model for A's format found earlier in the run, else the MatmulModel defaults."""
    if fmt not in MIXED_FORMATS:
        return detect(be, fmt, seed=seed)
    base = found.get((be.name, operand_formats(fmt)[0]))
    start = replace(base, input_format=fmt) if base else MatmulModel(input_format=fmt)
    empty = np.zeros((0, 1))
    return Detection(fmt=fmt, model=start, consistent=None, survivors=0, ambiguity={},
                     outputs=np.zeros(0), designs=DesignSet(fmt=fmt, scale_exp=0, a=empty, b=empty))


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
                     f"{_designs_word(m['consistent_with_designs']):>8} "
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
