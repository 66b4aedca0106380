"""The reduction probe: its axes, its inputs, one case's measurement, and the report (see __init__.py).

One case sums one input (dtype, size) with one backend's strategy `runs` times, accumulating in float32 or in
the input's dtype: how many distinct results, how far apart (ulps), how far from the exact sum, whether a
fixed order equals its numerics model bit for bit, and the time (GB/s, fraction of the copy bandwidth). The
special cases put NaN or Inf into the input (expected: NaN, +Inf, NaN).
"""
import os
import time

import numpy as np

from numerics import exact, formats, metrics
from probes.convert import to_numpy, to_torch, torch_dtype
from probes.errors import UsageError
from probes.probe import Axis, Probe
from probes.reduction import table
from probes.reduction.backends import BACKENDS, INTERPRETED_RUNS, STRATEGIES, Input, accumulation
from probes.timing import copy_bandwidth_gbps, median, time_runs

DTYPES = ("float32", "float16", "bfloat16")
ACCUMULATES = ("float32", "input")
SPECIALS = {
    "nan": "x[n // 3] = nan",
    "inf": "x[n // 3] = +inf",
    "inf-inf": "x[n // 3] = +inf, x[2 * n // 3] = -inf",
}
EXPECTED = {"nan": "nan", "inf": "+inf", "inf-inf": "nan"}
SPECIAL_N = 4097
SPECIAL_RUNS = 10
#: The benchmark size (GPU, float32 only): 1 GiB read, the speed figures' input.
BENCH_N = 1 << 28

DESCRIPTION = """\
Sum the same input many times through every backend (the compiled extension's CUDA kernels or, on a
CPU, its C++ reference; Triton; CuPy; Numba; torch) with a fixed-order and an atomic strategy, and
report how many distinct results each gives, how far apart they are (ulps), their error against the
exact sum, whether fixed orders match the numerics model bit for bit, and time / GB/s / fraction of
the copy bandwidth. Writes a JSON report and a plot; compare reports with `python -m probes.compare`.
On a CPU (--device cpu) Triton runs in its interpreter and Numba in its simulator, on small sizes.
Empty inputs are rejected (a sum of nothing is never what a probe meant)."""


def default_sizes(device):
    if device == "cpu":
        return [1000, 4097, (1 << 16) + 1]
    return [1000, 4097, (1 << 20) + 3, (1 << 24) + 1, BENCH_N]


def host_dtype(name):
    return formats.get_format(name).dtype


def make_input(seed, n, dtype, special=None):
    """The probe's input, defined exactly by (seed, n, dtype, special) so any machine can regenerate it."""
    values = np.random.default_rng([seed, n]).standard_normal(n)
    if special in ("nan", "inf", "inf-inf"):
        values[n // 3] = np.nan if special == "nan" else np.inf
        if special == "inf-inf":
            values[2 * n // 3] = -np.inf
    return values.astype(host_dtype(dtype))


def input_description(seed, n, dtype, special=None):
    desc = {
        "generator": "numpy.random.default_rng([seed, n]).standard_normal(n), cast to dtype (nearest-even)",
        "distribution": "normal(0, 1)",
        "seed": seed,
        "n": n,
        "dtype": dtype,
    }
    if special:
        desc["special"] = SPECIALS[special]
    return desc


def value_class(v):
    v = float(v)
    if np.isnan(v):
        return "nan"
    if np.isinf(v):
        return "+inf" if v > 0 else "-inf"
    return "finite"


#: What probes.compare compares (probes.report.add_experiment's `compares`): the first run's sum, bit for bit
#: (not the times, nor the run-to-run spread of atomic strategies, which varies between runs); for the NaN/Inf
#: inputs also the classes of value every run returned.
COMPARES = {"output": True}
SPECIAL_COMPARES = {"output": True, "metrics": ["classes"]}


def result_metrics(values, acc, exact_value=None, model=None):
    """Distinct results, their spread, error against the exact sum and agreement with the model."""
    distinct = metrics.distinct_count(values)
    m = {"runs": int(values.size), "distinct": int(distinct)}
    finite = values[np.isfinite(values.astype(np.float64))]
    if finite.size == values.size:
        lo, hi = finite[np.argmin(finite.astype(np.float64))], finite[np.argmax(finite.astype(np.float64))]
        m["spread_ulp"] = int(formats.ulp_distance(np.array([lo]), np.array([hi]), acc)[0])
    else:
        m["classes"] = sorted({value_class(v) for v in values})
    if exact_value is not None and finite.size == values.size:
        errors = [metrics.relative_error(v, exact_value) for v in values.astype(np.float64)]
        m["rel_error"] = float(errors[0])
        m["max_rel_error"] = float(max(errors))
    if model is not None:
        model_arr = np.asarray(model, dtype=values.dtype).reshape(1)
        m["matches_model"] = bool(all(metrics.bitwise_equal(values[i:i + 1], model_arr)
                                      for i in range(values.size)))
        m["model_bits"] = formats.to_bits(model_arr, acc).tolist()[0]
    return m


class ReductionProbe(Probe):
    name = "reduction"
    description = DESCRIPTION
    backends = BACKENDS
    axes = (
        Axis("backend", tuple(BACKENDS), flag="--backends",
             help=f"comma-separated backends to run (default: all of {', '.join(BACKENDS)}); one that is not "
                  "installed is skipped with a line saying why"),
        Axis("dtype", DTYPES, flag="--dtypes", help=f"comma-separated input dtypes (default: {','.join(DTYPES)})"),
        Axis("accumulate", ACCUMULATES, flag="--accumulate", what="accumulation",
             help="accumulate in float32 and/or in the input dtype (default: float32,input)"),
        Axis("n", default_sizes, flag="--sizes", parse="sizes",
             help="comma-separated input sizes, e.g. 1000,4097,2^20+3 (default on a GPU: 1000,4097,2^20+3,2^24+1 "
                  "and 2^28, the benchmark size, run in float32 only; on a CPU: 1000,4097,2^16+1)"),
        Axis("strategy", STRATEGIES),
        Axis("special", tuple(SPECIALS)),
    )

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--runs", type=int, default=100,
                            help="runs per strategy and input; distinct results are counted over them "
                                 f"(default 100; interpreted backends are capped at {INTERPRETED_RUNS})")
        parser.add_argument("--grid", type=int, default=None, help="blocks (programs) of pass 1, all backends "
                            "(default: 1024 on a GPU; the extension's C++ reference uses 1024 on a CPU too)")
        parser.add_argument("--block", type=int, default=None,
                            help="threads per block (Triton: lanes per program) (default: 256; Triton 1024)")
        parser.add_argument("--final-block", type=int, default=None,
                            help="threads of the fixed order's second pass (default 256)")
        parser.add_argument("--no-specials", action="store_true", help="skip the NaN / Inf experiments")

    def configure(self, args):
        if args.runs < 1:
            raise UsageError(f"--runs must be at least 1 (got {args.runs})")
        self.runs = args.runs
        self.overrides = {"grid": args.grid, "block": args.block, "final_block": args.final_block}
        self.specials = not args.no_specials
        self._input, self._copy_gbps, self._models = (None, None), {}, {}

    def config(self, fingerprint):
        return {"runs": self.runs, "launch": {b: self.params_for(BACKENDS[b]) for b in self.values("backend")},
                "environment": {k: os.environ.get(k) for k in ("TRITON_INTERPRET", "NUMBA_ENABLE_CUDASIM")}}

    # ---- the plan: every size, dtype and accumulation through every strategy; then NaN / Inf ----------------

    def plan(self):
        yield from self.grid("dtype", "n", "accumulate", "backend", "strategy")
        if self.specials:
            yield from self.grid("special", "dtype", "backend", "strategy", n=SPECIAL_N, accumulate="float32")

    def excluded(self, case):
        return (case.strategy not in BACKENDS[case.backend].strategies
                or (case.accumulate == "input" and case.dtype == "float32")   # the same as float32
                or (case.n == BENCH_N and case.dtype != "float32"))

    def record(self, case):
        """Key, inputs and parameters: what lines the case up with other reports."""
        special = case.get("special")
        where = f"special={special}/" if special else ""
        params = self.params_for(BACKENDS[case.backend])
        return dict(key=f"{case.backend}/{case.strategy}/{case.dtype}->{accumulation(case)}/{where}n={case.n}",
                    inputs=input_description(self.seed, case.n, case.dtype, special),
                    params={"backend": case.backend, "strategy": case.strategy, "accumulate": accumulation(case),
                            **params},
                    compares=SPECIAL_COMPARES if special else COMPARES)

    # ---- one case -------------------------------------------------------------------------------------------

    def params_for(self, backend):
        """The backend's launch shape on this device, with --grid / --block / --final-block."""
        params = backend.defaults(self.device)
        for key, value in self.overrides.items():
            if key in params and value is not None:
                params[key] = value
        return params

    def input(self, case):
        """The case's input on the device and the host, and its exact sum (None with NaN / Inf in it). One is
        kept, for the cases that follow with the same dtype and size (the plan puts them together)."""
        special = case.get("special")
        which = (case.dtype, case.n, special)
        if self._input[0] != which:
            x_host = make_input(self.seed, case.n, case.dtype, special)
            self._input = (which, (x_host, to_torch(x_host, self.device),
                                   None if special else exact.exact_sum(x_host)))
        x_host, x, exact_value = self._input[1]
        return Input(self.device, case.dtype, accumulation(case), case.n, x, x_host), exact_value

    def copy_gbps(self, nbytes):
        """The device-to-device copy rate for `nbytes` (measured once per size; None on a CPU)."""
        if self.device != "cpu" and nbytes not in self._copy_gbps:
            self._copy_gbps[nbytes] = copy_bandwidth_gbps(nbytes, device=self.device)
        return self._copy_gbps.get(nbytes)

    def model(self, backend, strategy, inp, params):
        """The numerics model of a fixed order: computed once per order, input and launch shape (CuPy shares
        the extension's)."""
        key = (type(backend).model.__qualname__, strategy, inp.dtype, inp.acc, inp.n, tuple(sorted(params.items())))
        if key not in self._models:
            self._models[key] = backend.model(strategy, inp, params)
        return self._models[key]

    def sums(self, backend, strategy, inp, runs, timed):
        """`runs` sums of the input, one per slot of a results tensor, and their times if `timed`."""
        import torch

        results = torch.zeros(runs, dtype=torch_dtype(inp.acc), device=self.device)
        launch = backend.prepare(strategy, inp, self.params_for(backend), results)
        if timed:
            warmup = 0 if backend.interpreted(self.device) else 3
            times = time_runs(launch, runs, device=self.device, warmup=warmup)
        else:
            for i in range(runs):
                launch(i)
            times = None
        if self.device != "cpu":
            torch.cuda.synchronize()
        return to_numpy(results), times

    def run_case(self, case, report):
        backend = BACKENDS[case.backend]
        inp, exact_value = self.input(case)
        limit = SPECIAL_RUNS if case.get("special") else self.runs
        runs = min(limit, INTERPRETED_RUNS) if backend.interpreted(self.device) else limit
        if case.get("special"):
            values, _ = self.sums(backend, case.strategy, inp, runs, timed=False)
            classes = sorted({value_class(v) for v in values})
            m = {"runs": runs, "distinct": int(metrics.distinct_count(values)), "classes": classes,
                 "expected": EXPECTED[case.special], "as_expected": classes == [EXPECTED[case.special]]}
            self.add(report, case, output=values[:1], metrics=m)
            return
        started = time.perf_counter()
        values, times = self.sums(backend, case.strategy, inp, runs, timed=True)
        params = self.params_for(backend)
        model = self.model(backend, case.strategy, inp, params) if case.strategy in backend.ordered else None
        m = result_metrics(values, inp.acc, exact_value, model)
        ms = median(times)
        m["median_ms"] = ms
        m["gbps"] = case.n * inp.x_host.itemsize / (ms * 1e-3) / 1e9
        copy_gbps = self.copy_gbps(case.n * inp.x_host.itemsize)
        if copy_gbps:
            m["copy_gbps"] = copy_gbps
            m["copy_fraction"] = m["gbps"] / copy_gbps
        m["wall_seconds"] = time.perf_counter() - started  # host time of the experiment, model included
        message = f"runs capped at {runs} (interpreted)" if runs < self.runs else ""
        self.add(report, case, output=values[:1], metrics=m, message=message)

    # ---- the whole run --------------------------------------------------------------------------------------

    def finish(self, report):
        """fixed/atomic median-time ratio for every backend, dtype, accumulation and size that ran both."""
        by_key = {e["key"]: e for e in report["experiments"]}
        for key, entry in by_key.items():
            backend, strategy, rest = key.split("/", 2)
            if strategy != "fixed" or "special=" in rest:
                continue
            atomic = by_key.get(f"{backend}/atomic/{rest}")
            if entry["status"] == "ok" and atomic and atomic["status"] == "ok":
                entry["metrics"]["fixed_over_atomic"] = entry["metrics"]["median_ms"] / atomic["metrics"]["median_ms"]

    def table(self, report):
        summary = table.speed_summary(report) if self.device != "cpu" else ""
        return table.format_table(report) + (f"\n\n{summary}" if summary else "")

    def plot(self, report, path):
        return table.plot(report, path)
