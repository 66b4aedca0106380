"""Compare two profiles' tensor-core models, and a profile's models against a GPU's measured bits.

``compare_profiles(a, b)``: per input format, the model fields in which profile a's model differs
from b's (a's ``tensor core (mma)`` / instruction entry, else its designs entry; likewise b).
``against_report(prof, report, rows)``: each model of ``prof`` evaluated on the validation operands of
an accumulator report (regenerated from their seed, as probes.accumulator.refit does) and compared bit
for bit with the GPU outputs the report stores: the fraction of dot products it reproduces.
"""
from __future__ import annotations

import numpy as np

from numerics.matmul import MatmulModel
from numerics.matmul_fast import fast_matmul, fast_supported
from numerics.matmul import model_matmul
from probes.report import decode_output

__all__ = ["tensor_core_models", "compare_profiles", "against_report"]

#: shape classes tried per library: Triton's tl.dot is the mma instruction at every shape, so its model
#: validated at the fit shape is the unit's; cuBLAS may run other kernels at the fit shape.
_PREFER = {"triton": ("fit_and_validation", "designs")}


def tensor_core_models(prof: dict, library: str | None = None) -> dict:
    """format -> (MatmulModel, entry): the profile's model of the matrix unit itself per format (the
    published instruction model, else the measured model of ``library`` (default: triton, whose tl.dot
    is the mma instruction with no split (its validated model), else cublas's designs' model))."""
    out = {}
    libs = (library,) if library else ("tensor core (mma)", "triton", "cublas")
    for lib in libs:
        for cls in _PREFER.get(lib, ("instruction", "designs")):
            for e in prof["matmul"]:
                if e["library"] == lib and e["shape_class"] == cls and e["format"] not in out:
                    out[e["format"]] = (MatmulModel(**e["model"]), e)
    return out


def compare_profiles(a: dict, b: dict) -> list[dict]:
    """Per format both profiles model: the differing fields ({field: [a's, b's]}), empty if equal."""
    ma, mb = tensor_core_models(a), tensor_core_models(b)
    rows = []
    for fmt in sorted(set(ma) & set(mb)):
        da, db = ma[fmt][0].as_dict(), mb[fmt][0].as_dict()
        diff = {k: [da[k], db[k]] for k in da if da[k] != db[k]}
        rows.append({"format": fmt, "a": ma[fmt][0].describe(), "b": mb[fmt][0].describe(), "differs": diff,
                     "a_source": f"{ma[fmt][1]['library']}/{ma[fmt][1]['shape_class']}",
                     "b_source": f"{mb[fmt][1]['library']}/{mb[fmt][1]['shape_class']}"})
    return rows


def _bits(x):
    return np.asarray(x, np.float64).astype(np.float32).view(np.uint32)


def against_report(prof: dict, report: dict, rows: int | None = None, backends=("triton", "cublas")) -> list[dict]:
    """Each tensor-core model of ``prof`` on the stored validation sample of every ok experiment of an
    accumulator ``report`` whose backend is in ``backends`` and format the profile models: the fraction
    of the GPU's output bits it reproduces (on the first ``rows`` rows, default all)."""
    from probes.accumulator.validate import random_operands
    models = tensor_core_models(prof)
    out = []
    for e in report["experiments"]:
        if e["status"] != "ok" or not e.get("output"):
            continue
        be, fmt = e["params"]["backend"], e["params"]["format"]
        if be not in backends or fmt not in models:
            continue
        inp = e["inputs"]
        A, B, _ = random_operands(fmt, inp["M"] * inp["N"], inp["K"], inp["seed"])
        got = _bits(decode_output(e["output"]).astype(np.float64))
        n = A.shape[0] if rows is None else min(rows, A.shape[0])
        m = models[fmt][0]
        w = fast_matmul(A[:n], B, m) if fast_supported(m) is None else model_matmul(A[:n], B, m)
        rate = float((_bits(w) == got[:n]).mean())
        out.append({"key": e["key"], "model": m.describe(), "rows": n, "dots": int(n * B.shape[1]),
                    "match_rate": rate, "report_model": MatmulModel(**e["metrics"]["model"]).describe()})
    return out
