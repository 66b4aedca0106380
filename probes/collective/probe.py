"""The collective probe: its axes, its inputs, one collective measured across the ranks (see __init__.py).

One case runs one collective (`op`) on one dtype and size, `--runs` times, on every rank of the launch. Rank r's
input is ``numpy.random.default_rng([seed, r, n, dtype_index]).standard_normal(n)`` rounded (nearest-even) to the
dtype, so every rank (and every machine) can rebuild every rank's input. Each run's result is hashed on every
rank (sha256 of its bits); rank 0 gathers the hashes and compares:

- distinct_runs: distinct results of rank 0 over the runs; ranks_agree: every rank got rank 0's bits in every
  run (all_reduce, fixed_order; reduce_scatter's ranks hold different chunks: their chunks are gathered to rank
  0 and compared as one array; all_gather: every rank's whole result);
- max_ulp_between_runs: the largest ulp distance of a run's result from run 0's;
- against numerics.collective (the sums): differ_from_exact, max_ulp_vs_exact, max_rel_err_vs_exact (the exact
  sum, correctly rounded); equal_rank_order (fraction of elements equal to ((x0 + x1) + x2) + ...) and
  equal_ring_model (to the textbook ring's order); all_gather: equal_inputs (it moves bits, never adds);
- median_ms (rank 0, each run between a barrier and the device's synchronisation) and, once every case ran,
  the fixed-order reduction's cost against the all-reduce of the same dtype and size (cost_vs_all_reduce).

`output` is rank 0's first result (its first OUTPUT_HEAD elements; `digest`, compared too, covers all of it).
"""
from __future__ import annotations

import hashlib
import time

import numpy as np

from numerics import collective as col
from numerics.formats import cast, ulp_distance
from probes import cli, runner
from probes import report as reports
from probes.collective import dist as cdist
from probes.errors import UsageError
from probes.probe import Axis, Probe

__all__ = ["CollectiveProbe", "main", "OPS", "DTYPES", "make_input", "OUTPUT_HEAD"]

OPS = ("all_reduce", "reduce_scatter", "all_gather", "fixed_order")
DTYPES = ("float32", "bfloat16", "float16")
OUTPUT_HEAD = 4096
#: what compare compares (exact results); the timings are not
RESULT_METRICS = ("digest", "distinct_runs", "ranks_agree", "max_ulp_between_runs")
SUM_METRICS = ("differ_from_exact", "max_ulp_vs_exact", "ulps_vs_exact", "equal_rank_order", "equal_ring_model")

DESCRIPTION = """\
Launched with torchrun (`torchrun --standalone --nproc-per-node N -m probes.collective ...`; every rank runs
it, rank 0 prints and writes the report): all-reduce, reduce-scatter and all-gather of fixed seeded inputs
(rank r: default_rng([seed, r, n, dtype_index]).standard_normal(n) in the dtype), each repeated --runs times,
and a fixed-order reduction of our own (all-gather, then ((x0 + x1) + x2) + ... in rank order). Per case: the
distinct results over the runs, whether the ranks agree, the ulp spread, the error against the exact sum
(numerics.collective), the fraction of elements equal to the rank-order and textbook-ring sums, and the
median time; the fixed order's cost against the all-reduce. gloo on a CPU (--device cpu), NCCL on GPUs
(rank r on cuda:LOCAL_RANK) with the algorithm and protocol of NCCL_ALGO / NCCL_PROTO (one launch per
variant: scripts/gpu/collective.sh); NCCL_NVLS_ENABLE is set to 0. Keys carry the variant and the world
size, so `python -m probes.compare` lines up two machines' reports of the same launch."""


def default_sizes(device):
    return (1000, 4096) if device == "cpu" else (1 << 16, (1 << 22) + 4)


def make_input(seed: int, rank: int, n: int, dtype: str) -> np.ndarray:
    """Rank `rank`'s input: standard normal draws rounded once to `dtype` (numpy; ml_dtypes for bfloat16)."""
    rng = np.random.default_rng([seed, rank, n, DTYPES.index(dtype)])
    return cast(rng.standard_normal(n), dtype)


def _torch_dtype(name):
    import torch
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def to_torch(x: np.ndarray, device: str):
    """The numpy array as a torch tensor with the same bits, on `device`."""
    import torch
    if x.dtype.name == "bfloat16":
        return torch.from_numpy(x.view(np.int16).copy()).view(torch.bfloat16).to(device)
    return torch.from_numpy(x.copy()).to(device)


def to_numpy(t) -> np.ndarray:
    """The tensor's bits as numpy (ml_dtypes bfloat16 for bfloat16)."""
    import ml_dtypes
    import torch
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def digest(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()[:32]


class CollectiveProbe(Probe):
    name = "collective"
    description = DESCRIPTION
    axes = (Axis("op", OPS, flag="--ops", help="comma-separated collectives (default: all): " + ", ".join(OPS)),
            Axis("dtype", DTYPES, flag="--dtypes", help="comma-separated dtypes (default: all): " + ", ".join(DTYPES)),
            Axis("n", default_sizes, flag="--sizes", parse="sizes",
                 help="elements per rank, comma-separated (default 1000,4096 on a CPU; 2^16,2^22+4 on GPUs)"))

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--runs", type=int, default=None, metavar="INT",
                            help="times each collective is repeated (default 5 on a CPU, 20 on GPUs)")
        parser.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                            help="how long a rank waits for the others in one collective (default 300)")

    def configure(self, args):
        if args.resume:
            raise UsageError("--resume: probes.collective runs every case on every rank; run it again whole")
        runs = args.runs if args.runs is not None else (5 if self.device == "cpu" else 20)
        if runs < 1:
            raise UsageError(f"--runs must be >= 1, got {runs}")
        self.runs = runs
        self.world = cdist.world_from_env("probes.collective")
        self.device = cdist.init(self.device, self.world, args.timeout)
        self.variant = cdist.variant(self.device)
        self.backend = "nccl" if self.device.startswith("cuda") else "gloo"

    def config(self, fingerprint):
        import torch
        nccl = None
        if self.backend == "nccl":
            v = torch.cuda.nccl.version()
            nccl = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
        return {"runs": self.runs, "world_size": self.world.size, "backend": self.backend, "variant": self.variant,
                "nccl_version": nccl, "nccl_env": cdist.nccl_env(), "output_head": OUTPUT_HEAD}

    # ---- one case ----------------------------------------------------------------------------------------

    def unavailable(self, case):
        if case.op == "reduce_scatter" and case.n % self.world.size:
            return f"reduce_scatter needs n divisible by the world size ({self.world.size})"
        return None

    def record(self, case):
        W = self.world.size
        return dict(key=f"{self.variant}/w={W}/{case.op}/{case.dtype}/n={case.n}",
                    inputs={"generator": "numpy.random.default_rng([seed, rank, n, dtype_index]).standard_normal(n), "
                                         "rounded to the dtype (nearest-even)",
                            "seed": self.seed, "n": case.n, "dtype": case.dtype, "dtype_index": DTYPES.index(case.dtype),
                            "world_size": W},
                    params={"op": case.op, "backend": self.backend, "variant": self.variant, "world_size": W},
                    compares={"output": True,
                              "metrics": list(RESULT_METRICS) + (["equal_inputs"] if case.op == "all_gather"
                                                                 else list(SUM_METRICS))})

    def _collective(self, case, x):
        """One run of the case's collective on this rank's input `x`; what this rank holds after it."""
        import torch
        import torch.distributed as dist
        W = self.world.size
        if case.op == "all_reduce":
            y = x.clone()
            dist.all_reduce(y)
            return y
        if case.op == "reduce_scatter":
            y = torch.empty(case.n // W, dtype=x.dtype, device=x.device)
            dist.reduce_scatter_tensor(y, x)
            return y
        g = torch.empty(W * case.n, dtype=x.dtype, device=x.device)
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        gather(g, x)
        if case.op == "all_gather":
            return g
        g = g.view(W, case.n)                       # fixed_order: ((x0 + x1) + x2) + ... in rank order
        s = g[0].clone()
        for r in range(1, W):
            s = s + g[r]
        return s

    def _sync(self):
        import torch
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def run_case(self, case, report):
        import torch
        import torch.distributed as dist
        W, rank = self.world.size, self.world.rank
        x = to_torch(make_input(self.seed, rank, case.n, case.dtype), self.device)
        hashes, times, first, spread = [], [], None, 0
        with torch.inference_mode():
            self._collective(case, x)               # warm-up (NCCL makes its communicator here)
            for _ in range(self.runs):
                dist.barrier()
                self._sync()
                t0 = time.perf_counter()
                y = self._collective(case, x)
                self._sync()
                times.append(time.perf_counter() - t0)
                if case.op == "reduce_scatter":     # the whole sum on every rank: gather the chunks (moves bits)
                    full = torch.empty(case.n, dtype=y.dtype, device=y.device)
                    (getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor)(full, y)
                    y = full
                out = to_numpy(y)
                hashes.append(digest(out))
                if first is None:
                    first = out
                elif hashes[-1] != hashes[0]:
                    spread = max(spread, int(ulp_distance(out, first, case.dtype).max()))
        everyone = [None] * W
        dist.all_gather_object(everyone, hashes)
        if rank != 0:                               # rank 0 measures and reports; the others only took part
            return
        metrics = {"digest": hashes[0], "distinct_runs": len(set(hashes)),
                   "ranks_agree": all(h == hashes for h in everyone), "max_ulp_between_runs": spread,
                   "runs": self.runs, "median_ms": float(np.median(times)) * 1e3,
                   "min_ms": float(np.min(times)) * 1e3}
        parts = np.stack([make_input(self.seed, r, case.n, case.dtype) for r in range(W)])
        if case.op == "all_gather":
            metrics["equal_inputs"] = digest(parts.reshape(-1)) == hashes[0]
        else:
            metrics.update(col.sum_errors(first, parts))
            for name, model in (("equal_rank_order", col.rank_order_sum), ("equal_ring_model", col.ring_sum)):
                m = model(parts)
                metrics[name] = float(np.mean(first.view(_uint(first)) == m.view(_uint(m))))
        self.add(report, case, output=first[:OUTPUT_HEAD], metrics=metrics)

    def finish(self, report):
        """The fixed-order reduction's cost: its median time over the all-reduce's (same dtype and size)."""
        ok = {e["key"]: e for e in report["experiments"] if e["status"] == "ok"}
        for key, e in ok.items():
            if "/fixed_order/" in key:
                ar = ok.get(key.replace("/fixed_order/", "/all_reduce/"))
                if ar and ar["metrics"]["median_ms"] > 0:
                    e["metrics"]["cost_vs_all_reduce"] = e["metrics"]["median_ms"] / ar["metrics"]["median_ms"]

    def table(self, report):
        head = (f"{'experiment':<46} {'status':<7} {'runs':>4} {'distinct':>8} {'ranks':>5} {'rank-ord':>8} "
                f"{'ring':>6} {'ulp/exact':>9} {'ms':>9} {'cost':>6}")
        lines = [f"{self.variant}, world size {self.world.size}, {self.runs} runs per case", head]
        for e in report["experiments"]:
            m = e["metrics"] or {}
            if e["status"] != "ok":
                lines.append(f"{e['key']:<46} {e['status']:<7} {e['message']}")
                continue

            def f(name, fmt):
                v = m.get(name)
                return "-" if v is None else format(v, fmt)
            agree = "yes" if m.get("ranks_agree") else "NO"
            lines.append(f"{e['key']:<46} {e['status']:<7} {m['runs']:>4} {m['distinct_runs']:>8} {agree:>5} "
                         f"{f('equal_rank_order', '.3f'):>8} {f('equal_ring_model', '.3f'):>6} "
                         f"{f('max_ulp_vs_exact', 'd'):>9} {m['median_ms']:>9.3f} {f('cost_vs_all_reduce', '.2f'):>6}")
        lines.append("rank-ord / ring: fraction of elements equal to the rank-order / textbook-ring sum; ulp/exact: "
                     "max ulps from the exact sum; cost: median time over the all-reduce's")
        return "\n".join(lines)


def _uint(x):
    return {2: np.uint16, 4: np.uint32, 8: np.uint64}[x.dtype.itemsize]


def _quiet(line):
    pass


def main(argv=None):
    """Every rank runs the cases; rank 0 goes through probes.runner.main (table, report, plot, exit status), the
    others measure along without writing anything."""
    import os
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    world = cdist.world_from_env("probes.collective")
    ok = False
    try:
        if world.rank == 0:
            status = runner.main(CollectiveProbe, argv)
        else:
            os.environ["DRIFTSCOPE_NO_PROGRESS"] = "1"
            probe = CollectiveProbe.from_argv(argv, log=_quiet)
            report = reports.new_report(probe.name, command=[], fingerprint={}, config={})
            runner.run(probe, report)
            status = 0
        ok = True
        return status
    finally:
        cdist.finish(sync=ok)


if __name__ == "__main__":  # pragma: no cover
    import sys
    sys.exit(cli.guarded_main(main))
