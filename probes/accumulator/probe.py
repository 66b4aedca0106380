"""The accumulator probe's run: per backend x format, detect the model, fit it, validate it, report.

One case is one backend's matrix unit in one input format: the designed dot products give a model
(detect.py; a mixed-operand format starts from the model of its A format found before), the fit sample at the
validation shape moves it where the library runs another kernel (fit.py), and the random validation sample
checks it bit for bit (validate.py). The report keeps the validation matmul's output and both models.
"""
from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np

from numerics.matmul import MIXED_FORMATS, MatmulModel, operand_formats
from probes.accumulator import table
from probes.accumulator.backends import BACKENDS, FORMATS, make_backends
from probes.accumulator.designs import K_DESIGN, DesignSet
from probes.accumulator.detect import Detection, detect
from probes.accumulator.fit import MAX_EVALS, fit_at_shape
from probes.accumulator.validate import K_VALIDATE, validate
from probes.errors import UsageError
from probes.probe import Axis, Probe

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

DESCRIPTION = """\
Run designed dot products (Fasi et al. 2021 style) through each backend x input format, infer the
block-FMA model of its accumulator (block size n_b, extra alignment bits p, rounding, normalisation,
product exactness), fit it at the validation shape on a separate random sample (split-K, block
size, accumulator width sum_bits: the library may run another kernel there), then check that model
bit for bit on --samples random dot products (K=256) with numerics.matmul. Re-analyse a saved report
on a CPU with `python -m probes.accumulator.refit REPORT.json`. Prints a table, writes a JSON report (with every design output as hex) and a plot.
On --device cpu the 'simulated' backend is numerics.matmul with known parameters (the detection
must recover them), torch_cpu is torch's CPU matmul, and Triton runs in its interpreter."""


def default_backends(device):
    return ("simulated", "torch_cpu", "triton") if device == "cpu" else ("cublas", "cublas_fast", "triton")


class AccumulatorProbe(Probe):
    name = "accumulator"
    description = DESCRIPTION
    axes = (
        Axis("backend", default_backends, flag="--backends", choices=BACKENDS,
             help=f"comma-separated, of {','.join(BACKENDS)} (default: cublas,cublas_fast,triton on a GPU; "
                  "simulated,torch_cpu,triton on a CPU)"),
        Axis("format", FORMATS, flag="--formats", help=f"comma-separated, of {','.join(FORMATS)}"),
    )

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--samples", type=int, default=100_000,
                            help="random dot products per format (default 100000)")
        parser.add_argument("--fit-evals", type=int, default=MAX_EVALS, help="candidate models the fit at the "
                            f"validation shape may evaluate per experiment (default {MAX_EVALS})")

    def configure(self, args):
        if args.samples < 1:
            raise UsageError(f"--samples must be at least 1 (got {args.samples})")
        if args.fit_evals < 1:
            raise UsageError(f"--fit-evals must be at least 1 (got {args.fit_evals})")
        self.samples, self.fit_evals = args.samples, args.fit_evals
        self.backends = {b.name: b for b in make_backends(self.values("backend"), self.device, SIMULATED_MODELS)}

    def config(self, fingerprint):
        return {"samples": self.samples, "K_validate": K_VALIDATE, "fit_evals": self.fit_evals,
                "simulated_models": {k: v.as_dict() for k, v in SIMULATED_MODELS.items()}}

    def plan(self):
        return self.grid("backend", "format")

    def record(self, case):
        return dict(key=f"accumulator/{case.backend}/{case.format}", inputs={"seed": self.seed},
                    params={"backend": case.backend, "format": case.format}, compares=COMPARES)

    # ---- one backend and format: designs, fit, validation ----------------------------------------------------

    def run_case(self, case, report):
        be, fmt = self.backends[case.backend], case.format
        t = time.time()
        det = self.designs_or_start(report, be, fmt)
        side = int(math.ceil(math.sqrt(self.samples)))
        fit = fit_at_shape(be, fmt, det.model, M=side, N=side, K=K_VALIDATE, seed=self.seed,
                           max_evals=self.fit_evals)
        t_det = time.time() - t
        val = validate(be, fmt, fit["model"], samples=self.samples, seed=self.seed)
        got = val.pop("got")
        ev = det.evidence()
        model = fit["model"]
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
        self.add(report, case, inputs={**val["inputs"], "design_seed": self.seed, "design_scale_exp": ev["scale_exp"]},
                 output=got.astype("float32"), metrics=metrics)
        fitted = "" if model == det.model else f"  (designs: {det.model.describe()})"
        self.log(f"{be.name}/{fmt}: {model.describe()}{fitted}  designs {table.designs_word(det.consistent)}"
                 f"  match {val['match_rate']:.6f}  ({time.time() - t:.1f} s)")

    def designs_or_start(self, report, be, fmt):
        """Stages 1-3 on the designs; for a mixed-operand format (whose designs would need factors in
        two formats: not built) a design-less Detection whose model is the start of the fit: this
        backend's model for A's format found earlier in the run (in the report), else the MatmulModel
        defaults."""
        if fmt not in MIXED_FORMATS:
            return detect(be, fmt, seed=self.seed)
        base = self.found(report, be.name, operand_formats(fmt)[0])
        start = replace(base, input_format=fmt) if base else MatmulModel(input_format=fmt)
        empty = np.zeros((0, 1))
        return Detection(fmt=fmt, model=start, consistent=None, survivors=0, ambiguity={},
                         outputs=np.zeros(0), designs=DesignSet(fmt=fmt, scale_exp=0, a=empty, b=empty))

    @staticmethod
    def found(report, backend, fmt):
        """The model the report holds for (backend, fmt), or None."""
        e = next((e for e in report["experiments"] if e["key"] == f"accumulator/{backend}/{fmt}"), None)
        return MatmulModel(**e["metrics"]["model"]) if e and e["status"] == "ok" else None

    def table(self, report):
        return table.format_table(report)

    def plot(self, report, path):
        return table.plot(report, path)
