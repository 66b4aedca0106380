"""Run the FMA experiments and build the report (see probes/fma/__init__.py).

For each program x format x backend x variant on seeded inputs: the output's bits against the model the
variant is predicted to equal (``model_match``: the fraction of outputs with exactly the predicted bits;
also ``match_fma`` / ``match_mul_add``, so a wrong prediction shows which model the build followed).
Then, between the variants of one backend and between the two models: the fraction of outputs that
differ, the largest distance in ulps and the histogram of distances.
"""
from __future__ import annotations

import hashlib
import itertools
import time

import numpy as np

from numerics import fma_programs as fp
from numerics.formats import cast, ulp_distance
from probes import report as reports
from probes.fma.backends import BACKENDS
from probes.progress import Progress

FORMATS = fp.FORMATS
PROGRAMS = fp.PROGRAMS
DOT_K = 64          # products per dot
HORNER_DEGREE = 8   # coefficients: degree + 1


def default_n(device):
    """Outputs per program: rows of the dot, points of horner, elements of axpy."""
    return 256 if device == "cpu" else 1 << 16


def make_inputs(program, fmt, n, seed):
    """The inputs, defined exactly by (seed, program, fmt, n): uniform(-1, 1) rounded to fmt (nearest-even)."""
    rng = np.random.default_rng([seed, PROGRAMS.index(program), FORMATS.index(fmt), n])

    def draw(shape):
        return cast(rng.uniform(-1.0, 1.0, shape), fmt)
    if program == "dot":
        return {"a": draw((n, DOT_K)), "b": draw((n, DOT_K))}
    if program == "horner":
        return {"coeffs": draw(HORNER_DEGREE + 1), "x": draw(n)}
    return {"alpha": draw(1), "x": draw(n), "y": draw(n)}


def input_description(program, fmt, n, seed):
    shapes = {"dot": f"a, b: ({n}, {DOT_K})", "horner": f"coeffs: {HORNER_DEGREE + 1}, x: {n}",
              "axpy": f"alpha: 1, x, y: {n}"}
    return {"generator": "numpy.random.default_rng([seed, program_index, format_index, n]).uniform(-1, 1), "
                         "in argument order, cast to the format (nearest-even)",
            "seed": seed, "program": program, "program_index": PROGRAMS.index(program), "format": fmt,
            "format_index": FORMATS.index(fmt), "n": n, "shapes": shapes[program]}


def _bits(x):
    x = np.ascontiguousarray(x)
    return x.view({2: np.uint16, 4: np.uint32}[x.dtype.itemsize])


def compare(x, y, fmt):
    """Fraction of outputs whose bits differ, the max ulp distance and the histogram {ulps: count}."""
    d = ulp_distance(x, y, fmt).astype(np.int64)
    values, counts = np.unique(d, return_counts=True)
    return {"n": int(d.size), "differ_fraction": float(np.count_nonzero(_bits(x) != _bits(y)) / d.size),
            "max_ulp": int(d.max()), "ulp_histogram": {str(int(v)): int(c) for v, c in zip(values, counts)}}


#: What probes.compare compares (probes.report.add_experiment's `compares`): a pair's difference pattern
#: (exact, from the bits); a backend's agreement with each model and the hash of its output bits.
PAIR_COMPARES = {"metrics": ["differ_fraction", "max_ulp", "ulp_histogram"]}
BACKEND_COMPARES = {"metrics": ["model_match", "match_fma", "match_mul_add", "bits_sha256"]}


def run(device, *, backends, formats, n, seed, command, log=print):
    from probes.device import fingerprint
    start = time.perf_counter()
    config = {"device": device, "seed": seed, "n": n, "dot_k": DOT_K, "horner_degree": HORNER_DEGREE,
              "formats": list(formats), "backends": list(backends),
              "plain_builds": fp.PLAIN_BUILDS,
              "backend_docs": {b: BACKENDS[b].doc for b in backends}}
    if "ext" in backends:
        try:
            from probes.fma import kernels
            config["cpu_has_fma"] = kernels.cpu_has_fma()
        except Exception as e:  # noqa: BLE001 - recorded, not fatal
            config["cpu_has_fma"] = f"unknown ({e})"
    report = reports.new_report("fma", command=command, fingerprint=fingerprint(device), config=config)
    jobs = [(p, f) for p in PROGRAMS for f in formats]
    with Progress(len(jobs), "fma probe") as progress:
        for program, fmt in jobs:
            _program_format(report, device, program, fmt, n, seed, backends, log)
            progress.update(note=f"{program}/{fmt}")
    report["config"]["wall_seconds"] = time.perf_counter() - start
    return report


def _program_format(report, device, program, fmt, n, seed, backends, log):
    inputs = make_inputs(program, fmt, n, seed)
    desc = input_description(program, fmt, n, seed)
    models = {v: fp.program(program, inputs, fmt, v) for v in fp.VARIANTS}
    reports.add_experiment(report, key=f"model/fma~mul_add/{program}/{fmt}", inputs=desc,
                           params={"backend": "model", "pair": ["fma", "mul_add"], "program": program,
                                   "format": fmt}, metrics=compare(models["fma"], models["mul_add"], fmt),
                           compares=PAIR_COMPARES)
    for name in backends:
        backend = BACKENDS[name]
        why = backend.available(device)
        outputs = {}
        for variant in backend.variants:
            key = f"{name}/{variant}/{program}/{fmt}"
            predicted = backend.predicted(variant, device)
            params = {"backend": name, "variant": variant, "program": program, "format": fmt,
                      "predicted": predicted}
            reason = why or backend.skip_reason(device, fmt, variant)
            if reason:
                reports.add_experiment(report, key=key, inputs=desc, params=params, status="skipped", message=reason,
                                       compares=BACKEND_COMPARES)
                continue
            try:
                out = backend.run(program, inputs, variant, device)
            except Exception as e:  # noqa: BLE001 - one failing build must not hide the others
                log(f"fma probe: {key} failed: {type(e).__name__}: {e}")
                reports.add_experiment(report, key=key, inputs=desc, params=params, status="error",
                                       message=f"{type(e).__name__}: {e}", compares=BACKEND_COMPARES)
                continue
            outputs[variant] = out
            bits = _bits(out)
            match = {m: float(np.mean(bits == _bits(models[m]))) for m in fp.VARIANTS}
            metrics = {"model_match": match[predicted], "match_fma": match["fma"],
                       "match_mul_add": match["mul_add"], "n": int(out.size),
                       "bits_sha256": hashlib.sha256(bits.tobytes()).hexdigest()}
            reports.add_experiment(report, key=key, inputs=desc, params=params, metrics=metrics,
                                   compares=BACKEND_COMPARES)
        for va, vb in itertools.combinations(list(outputs), 2):
            reports.add_experiment(report, key=f"{name}/{va}~{vb}/{program}/{fmt}", inputs=desc,
                                   params={"backend": name, "pair": [va, vb], "program": program, "format": fmt},
                                   metrics=compare(outputs[va], outputs[vb], fmt), compares=PAIR_COMPARES)
