"""Run the reduction experiments and build the report (see probes/reduction/__init__.py)."""
import os
import sys
import time

import numpy as np

from numerics import exact, formats, metrics
from probes import report as reports
from probes.convert import to_numpy, to_torch
from probes.progress import Progress
from probes.reduction.backends import INTERPRETED_RUNS, Case, torch_dtype
from probes.timing import copy_bandwidth_gbps, median, time_runs

DTYPES = ("float32", "float16", "bfloat16")
ACCUMULATES = ("float32", "input")
SPECIALS = {
    "nan": "x[n // 3] = nan",
    "inf": "x[n // 3] = +inf",
    "inf-inf": "x[n // 3] = +inf, x[2 * n // 3] = -inf",
}
SPECIAL_N = 4097
SPECIAL_RUNS = 10


def default_sizes(device, dtype):
    sizes = [1000, 4097, (1 << 20) + 3, (1 << 24) + 1]
    if device == "cpu":
        return [1000, 4097, (1 << 16) + 1]
    if dtype == "float32":
        sizes.append(1 << 28)  # the benchmark size
    return sizes


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


class ReductionProbe:
    def __init__(self, *, device, backends, dtypes, sizes, accumulates, runs, seed, overrides,
                 specials=True, log=print):
        self.device = device
        self.backends = backends
        self.dtypes = dtypes
        self.sizes = sizes
        self.accumulates = accumulates
        self.runs = runs
        self.seed = seed
        self.overrides = overrides
        self.specials = specials
        self.log = log
        self._models = {}

    # -- one experiment -------------------------------------------------------------------------
    def params_for(self, backend):
        params = backend.defaults(self.device)
        for key, value in self.overrides.items():
            if key in params and value is not None:
                params[key] = value
        return params

    def model_for(self, backend, strategy, case, params):
        key = (type(backend).model.__qualname__, strategy, case.dtype, case.acc, case.n, tuple(sorted(params.items())))
        if key not in self._models:
            self._models[key] = backend.model(strategy, case, params)
        return self._models[key]

    def runs_for(self, backend, runs):
        return min(runs, INTERPRETED_RUNS) if backend.interpreted(self.device) else runs

    def run_strategy(self, backend, strategy, case, params, runs, timed):
        import torch

        results = torch.zeros(runs, dtype=torch_dtype(case.acc), device=self.device)
        launch = backend.prepare(strategy, case, params, results)
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

    # -- the sweep -------------------------------------------------------------------------------
    def plan(self):
        for dtype in self.dtypes:
            for n in self.sizes(self.device, dtype):
                for acc_opt in self.accumulates:
                    acc = "float32" if acc_opt == "float32" else dtype
                    if acc_opt == "input" and dtype == "float32":
                        continue  # the same as accumulating in float32
                    for backend in self.backends:
                        for strategy in backend.strategies:
                            yield dtype, n, acc, backend, strategy

    def run(self, report):
        plan = list(self.plan())
        unavailable = {b.name: b.unavailable(self.device) for b in self.backends}
        for name, reason in unavailable.items():
            if reason:
                self.log(f"skipping backend {name}: {reason}")
        inputs = {}
        copy_rate = {}
        with Progress(len(plan), "reduction") as progress:
            for dtype, n, acc, backend, strategy in plan:
                progress.update(note=f"{backend.name}/{strategy} {dtype}->{acc} n={n}")
                if (dtype, n) not in inputs:
                    inputs.clear()
                    x_host = make_input(self.seed, n, dtype)
                    inputs[(dtype, n)] = (x_host, to_torch(x_host, self.device), exact.exact_sum(x_host))
                nbytes = n * np.dtype(host_dtype(dtype)).itemsize
                if self.device != "cpu" and nbytes not in copy_rate:
                    copy_rate[nbytes] = copy_bandwidth_gbps(nbytes, device=self.device)
                x_host, x, exact_value = inputs[(dtype, n)]
                case = Case(self.device, dtype, acc, n, x, x_host)
                self.experiment(report, backend, strategy, case, exact_value, copy_rate.get(nbytes),
                                unavailable[backend.name])
        if self.specials:
            self.run_specials(report, unavailable)
        add_ratios(report)

    def entry(self, backend, strategy, case, params, special=None):
        """Key, inputs and parameters of one experiment: what lines it up with other reports."""
        where = f"special={special}/" if special else ""
        return dict(key=f"{backend.name}/{strategy}/{case.dtype}->{case.acc}/{where}n={case.n}",
                    inputs=input_description(self.seed, case.n, case.dtype, special),
                    params={"backend": backend.name, "strategy": strategy, "accumulate": case.acc, **params})

    def experiment(self, report, backend, strategy, case, exact_value, copy_gbps, unavailable):
        started = time.perf_counter()
        params = self.params_for(backend)
        entry = self.entry(backend, strategy, case, params)
        key = entry["key"]
        reason = unavailable or backend.skip(strategy, case, params)
        if reason:
            reports.add_experiment(report, status="skipped", message=reason, compares=COMPARES, **entry)
            return
        runs = self.runs_for(backend, self.runs)
        try:
            values, times = self.run_strategy(backend, strategy, case, params, runs, timed=True)
        except Exception as exc:  # one failing kernel is a line in the report, not the end of the run
            reports.add_experiment(report, status="error", message=f"{type(exc).__name__}: {exc}",
                                   compares=COMPARES, **entry)
            self.log(f"error in {key}: {type(exc).__name__}: {exc}")
            return
        model = self.model_for(backend, strategy, case, params) if strategy in backend.ordered else None
        m = result_metrics(values, case.acc, exact_value, model)
        ms = median(times)
        m["median_ms"] = ms
        m["gbps"] = case.n * case.x_host.itemsize / (ms * 1e-3) / 1e9
        if copy_gbps:
            m["copy_gbps"] = copy_gbps
            m["copy_fraction"] = m["gbps"] / copy_gbps
        m["wall_seconds"] = time.perf_counter() - started  # host time of the experiment, model included
        message = f"runs capped at {runs} (interpreted)" if runs < self.runs else ""
        reports.add_experiment(report, output=values[:1], metrics=m, message=message, compares=COMPARES, **entry)

    def run_specials(self, report, unavailable):
        """NaN and Inf in the input: what each strategy returns (expected: NaN, +Inf, NaN)."""
        n = SPECIAL_N
        expected = {"nan": "nan", "inf": "+inf", "inf-inf": "nan"}
        for special in SPECIALS:
            for dtype in self.dtypes:
                x_host = make_input(self.seed, n, dtype, special)
                x = to_torch(x_host, self.device)
                acc = "float32"
                case = Case(self.device, dtype, acc, n, x, x_host)
                for backend in self.backends:
                    for strategy in backend.strategies:
                        params = self.params_for(backend)
                        entry = self.entry(backend, strategy, case, params, special)
                        reason = unavailable[backend.name] or backend.skip(strategy, case, params)
                        if reason:
                            reports.add_experiment(report, status="skipped", message=reason,
                                                   compares=SPECIAL_COMPARES, **entry)
                            continue
                        runs = self.runs_for(backend, SPECIAL_RUNS)
                        try:
                            values, _ = self.run_strategy(backend, strategy, case, params, runs, timed=False)
                        except Exception as exc:
                            reports.add_experiment(report, status="error", message=f"{type(exc).__name__}: {exc}",
                                                   compares=SPECIAL_COMPARES, **entry)
                            continue
                        classes = sorted({value_class(v) for v in values})
                        m = {"runs": runs, "distinct": int(metrics.distinct_count(values)), "classes": classes,
                             "expected": expected[special], "as_expected": classes == [expected[special]]}
                        reports.add_experiment(report, output=values[:1], metrics=m, compares=SPECIAL_COMPARES,
                                               **entry)


def add_ratios(report):
    """fixed/atomic median-time ratio for every backend, dtype, accumulation and size that ran both."""
    by_key = {e["key"]: e for e in report["experiments"]}
    for key, entry in by_key.items():
        backend, strategy, rest = key.split("/", 2)
        if strategy != "fixed" or "special=" in rest:
            continue
        atomic = by_key.get(f"{backend}/atomic/{rest}")
        if entry["status"] == "ok" and atomic and atomic["status"] == "ok":
            entry["metrics"]["fixed_over_atomic"] = entry["metrics"]["median_ms"] / atomic["metrics"]["median_ms"]


def build_report(probe, command):
    from probes.device import fingerprint

    config = {
        "device": probe.device,
        "backends": [b.name for b in probe.backends],
        "dtypes": list(probe.dtypes),
        "sizes": {d: probe.sizes(probe.device, d) for d in probe.dtypes},
        "accumulate": list(probe.accumulates),
        "runs": probe.runs,
        "seed": probe.seed,
        "launch": {b.name: probe.params_for(b) for b in probe.backends},
        "environment": {k: os.environ.get(k) for k in ("TRITON_INTERPRET", "NUMBA_ENABLE_CUDASIM")},
    }
    return reports.new_report("reduction", command=command, fingerprint=fingerprint(probe.device), config=config)


def run(probe, command=None):
    start = time.perf_counter()
    report = build_report(probe, command or sys.argv)
    probe.run(report)
    report["config"]["wall_seconds"] = time.perf_counter() - start
    return report
