"""The FMA probe: its axes, its inputs, one build's check, and the pairs (see probes/fma/__init__.py).

One case runs one program (dot, horner, axpy) in one format through one backend's variant (an explicit FMA,
multiply-then-add, the plain expression with contraction on or off) on seeded inputs, and checks the output's
bits against the model the variant is predicted to equal (``model_match``: the fraction of outputs with exactly
the predicted bits; also ``match_fma`` / ``match_mul_add``, so a wrong prediction shows which model the build
followed). Then, once every case ran, the pairs: between the variants of one backend and between the two
models, the fraction of outputs that differ, the largest distance in ulps and the histogram of distances.
"""
from __future__ import annotations

import hashlib
import itertools

import numpy as np

from numerics import fma_programs as fp
from numerics.formats import cast, ulp_distance
from probes import report as reports
from probes.errors import UsageError
from probes.fma import table
from probes.fma.backends import BACKENDS, VARIANTS
from probes.probe import Axis, Probe

FORMATS = fp.FORMATS
PROGRAMS = fp.PROGRAMS
DOT_K = 64          # products per dot
HORNER_DEGREE = 8   # coefficients: degree + 1

DESCRIPTION = """\
Run a dot product (sequential over k), Horner's rule and axpy in float32, float16 and bfloat16 with an
explicit FMA, an explicit multiply-then-add, and the plain expression a*b+c built with contraction on and
off, on every backend: the compiled extension's CUDA kernels (on a CPU: its C++ reference, whose plain
builds use -ffp-contract=fast -mfma / off), Triton (tl.fma; enable_fp_fusion on/off) and Numba (cuda.fma;
fastmath on/off). Each output is checked bit for bit against the exact model (numerics.fma_programs) the
variant is predicted to equal, and variants are compared with each other (fraction differing, ulps).
On a CPU (--device cpu) Triton runs in its interpreter and Numba in its simulator: both evaluate every
variant unfused, which the report records as their prediction."""


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


def bits(x):
    """The unsigned-integer view of an output (2- or 4-byte floats), for bit-for-bit comparison."""
    x = np.ascontiguousarray(x)
    return x.view({2: np.uint16, 4: np.uint32}[x.dtype.itemsize])


def compare(x, y, fmt):
    """Fraction of outputs whose bits differ, the max ulp distance and the histogram {ulps: count}."""
    d = ulp_distance(x, y, fmt).astype(np.int64)
    values, counts = np.unique(d, return_counts=True)
    return {"n": int(d.size), "differ_fraction": float(np.count_nonzero(bits(x) != bits(y)) / d.size),
            "max_ulp": int(d.max()), "ulp_histogram": {str(int(v)): int(c) for v, c in zip(values, counts)}}


#: What probes.compare compares (probes.report.add_experiment's `compares`): a pair's difference pattern
#: (exact, from the bits); a backend's agreement with each model and the hash of its output bits.
PAIR_COMPARES = {"metrics": ["differ_fraction", "max_ulp", "ulp_histogram"]}
BACKEND_COMPARES = {"metrics": ["model_match", "match_fma", "match_mul_add", "bits_sha256"]}


class FmaProbe(Probe):
    name = "fma"
    description = DESCRIPTION
    backends = BACKENDS
    axes = (
        Axis("backend", tuple(BACKENDS), flag="--backends",
             help=f"comma-separated backends (default: all of {', '.join(BACKENDS)})"),
        Axis("format", FORMATS, flag="--formats",
             help=f"comma-separated arithmetic formats (default: {','.join(FORMATS)})"),
        Axis("program", PROGRAMS),
        Axis("variant", VARIANTS),
    )

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--n", type=int, default=None,
                            help="outputs per program: dot rows, horner points, axpy elements "
                                 "(default: 65536 on a GPU, 256 on a CPU)")

    def configure(self, args):
        self.n = default_n(self.device) if args.n is None else args.n
        if self.n < 1:
            raise UsageError(f"--n must be at least 1 (got {self.n})")
        self._inputs, self._models, self._outputs = {}, {}, {}

    def config(self, fingerprint):
        config = {"n": self.n, "dot_k": DOT_K, "horner_degree": HORNER_DEGREE, "plain_builds": fp.PLAIN_BUILDS,
                  "backend_docs": {b: BACKENDS[b].doc for b in self.values("backend")}}
        if "ext" in self.values("backend"):
            try:
                from probes.fma import kernels
                config["cpu_has_fma"] = kernels.cpu_has_fma()
            except Exception as e:  # noqa: BLE001 - recorded, not fatal
                config["cpu_has_fma"] = f"unknown ({e})"
        return config

    # ---- the plan: every program, format, backend and its variants ------------------------------------------

    def plan(self):
        return self.grid("program", "format", "backend", "variant")

    def excluded(self, case):
        return case.variant not in BACKENDS[case.backend].variants

    def record(self, case):
        return dict(key=f"{case.backend}/{case.variant}/{case.program}/{case.format}",
                    inputs=input_description(case.program, case.format, self.n, self.seed),
                    params={"backend": case.backend, "variant": case.variant, "program": case.program,
                            "format": case.format,
                            "predicted": BACKENDS[case.backend].predicted(case.variant, self.device)},
                    compares=BACKEND_COMPARES)

    # ---- one build: its output against the two exact models ---------------------------------------------

    def inputs(self, program, fmt):
        if (program, fmt) not in self._inputs:
            self._inputs[(program, fmt)] = make_inputs(program, fmt, self.n, self.seed)
        return self._inputs[(program, fmt)]

    def models(self, program, fmt):
        """{"fma": ..., "mul_add": ...}: the exact results of one rounding and of two (numerics.fma_programs)."""
        if (program, fmt) not in self._models:
            ins = self.inputs(program, fmt)
            self._models[(program, fmt)] = {v: fp.program(program, ins, fmt, v) for v in fp.VARIANTS}
        return self._models[(program, fmt)]

    def output(self, case):
        """The build's output (kept for the pairs; computed again for cases a resumed run did not run)."""
        key = self.record(case)["key"]
        if key not in self._outputs:
            ins = self.inputs(case.program, case.format)
            self._outputs[key] = BACKENDS[case.backend].run(case.program, ins, case.variant, self.device)
        return self._outputs[key]

    def run_case(self, case, report):
        out = bits(self.output(case))
        models = self.models(case.program, case.format)
        match = {m: float(np.mean(out == bits(models[m]))) for m in fp.VARIANTS}
        predicted = BACKENDS[case.backend].predicted(case.variant, self.device)
        self.add(report, case, metrics={"model_match": match[predicted], "match_fma": match["fma"],
                                        "match_mul_add": match["mul_add"], "n": int(out.size),
                                        "bits_sha256": hashlib.sha256(out.tobytes()).hexdigest()})

    # ---- the pairs: how far apart the variants of each backend, and the two models, are ----------------------

    def finish(self, report):
        ran = {e["key"] for e in report["experiments"] if e["status"] == "ok"}
        for program, fmt in itertools.product(self.values("program"), self.values("format")):
            desc = input_description(program, fmt, self.n, self.seed)
            models = self.models(program, fmt)
            self.add_pair(report, "model", ["fma", "mul_add"], program, fmt, desc,
                          compare(models["fma"], models["mul_add"], fmt))
            for name in self.values("backend"):
                outputs = {case.variant: self.output(case)
                           for case in self.grid("variant", program=program, format=fmt, backend=name)
                           if self.record(case)["key"] in ran}
                for va, vb in itertools.combinations(outputs, 2):
                    self.add_pair(report, name, [va, vb], program, fmt, desc, compare(outputs[va], outputs[vb], fmt))

    @staticmethod
    def add_pair(report, backend, pair, program, fmt, desc, metrics):
        reports.add_experiment(report, key=f"{backend}/{'~'.join(pair)}/{program}/{fmt}", inputs=desc,
                               params={"backend": backend, "pair": pair, "program": program, "format": fmt},
                               metrics=metrics, compares=PAIR_COMPARES)

    def table(self, report):
        return table.format_table(report)

    def plot(self, report, path):
        return table.plot(report, path)
