"""Build a GPU profile from probe reports (``python -m probes.profile REPORTS... --out X.json``).

Reads, from reports of one GPU (plain or .xz JSON, validated as probes.report reads them):

- ``probes.accumulator``: every fitted model, per backend (cuBLAS, cuBLAS fast-accumulation fp8,
  Triton) and format, at both shape classes it was measured at: the designs' (64x64x64) and the fit and
  validation shape (317x256x317), where cuBLAS may run another kernel;
- ``probes.gemm`` (parts algos and sweep): per Mistral-7B linear shape, dtype and M the configuration
  cuBLAS's heuristic picked (algorithm, tile, K tile, split-K and its reduction), and the M values over
  which row 0 of X[:M] @ W keeps its bits;
- ``probes.fma``: per backend and build variant, whether the outputs were those of fused multiply-adds.

The result is deterministic (no time stamps; reports named by their last three path parts and
their sha256), so a profile rebuilt from the same reports is the same file (tests/test_profile.py).
Parts the reports lack can come from another profile (``assume_from``), every such entry marked
``assumed`` and named in ``assumptions``.
"""
from __future__ import annotations

import copy
import hashlib
import json
import lzma
import re
from dataclasses import replace
from pathlib import Path

from numerics.matmul import MatmulModel
from probes.profile import SCHEMA, SCHEMA_VERSION, ProfileError, load_profile
from probes.report import ReportError, validate_report

__all__ = ["read_report", "build_profile", "dump_profile"]

#: run dtype -> the accumulator format whose cuBLAS model computes F.linear in it (torch's default:
#: float32 matmuls without TF32).
LINEAR_FORMATS = {"bfloat16": "bfloat16", "float16": "float16", "float32": "float32"}
_DESC = re.compile(r"a(?P<algo>\d+) t(?P<tile>\d+x\d+) s(?P<ktile>\d+)x\w+ k(?P<split>\d+)(?:/(?P<red>\w+))?")


def read_report(path) -> dict:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ProfileError(f"report {path}: cannot read ({exc.strerror or exc})") from None
    if p.suffix == ".xz":
        raw = lzma.decompress(raw)
    try:
        rep = json.loads(raw)
        validate_report(rep, str(path))
    except (ValueError, ReportError) as exc:
        raise ProfileError(f"report {path}: not a driftscope report ({exc})") from None
    return rep


def _file_name(path) -> str:
    return "/".join(Path(path).resolve().parts[-3:])


def _ok(rep):
    return [e for e in rep["experiments"] if e["status"] == "ok" and e.get("metrics")]


def _from_accumulator(rep, file):
    out = []
    for e in _ok(rep):
        m, p = e["metrics"], e["params"]
        shapes = m.get("shapes_MxKxN", {})
        if m.get("consistent_with_designs") is not None and m.get("design_model"):
            out.append({"library": p["backend"], "format": p["format"], "shape_class": "designs",
                        "shape_MxKxN": shapes.get("designs"), "model": m["design_model"],
                        "model_text": MatmulModel(**m["design_model"]).describe(), "basis": "measured",
                        "evidence": {"report": file, "key": e["key"],
                                     "consistent_with_designs": m["consistent_with_designs"],
                                     "ambiguity": m.get("ambiguity", {})}})
        out.append({"library": p["backend"], "format": p["format"], "shape_class": "fit_and_validation",
                    "shape_MxKxN": shapes.get("fit_and_validation"), "model": m["model"],
                    "model_text": MatmulModel(**m["model"]).describe(), "basis": "measured",
                    "evidence": {"report": file, "key": e["key"], "match_rate": m["match_rate"],
                                 "samples": m["samples"]}})
    return out


def _from_gemm(rep, file):
    entries, buckets = [], []
    for e in _ok(rep):
        key, m, inp = e["key"], e["metrics"], e["inputs"]
        if key.startswith("algos/") and m.get("default"):
            _, dtype, shape, _M = key.split("/")
            d = _DESC.match(m["default"]["desc"])
            if d is None:
                continue
            entries.append({"shape": shape, "dtype": dtype, "N": inp["N"], "K": inp["K"], "M": inp["M"],
                            "desc": m["default"]["desc"], "algo": int(d["algo"]), "tile": d["tile"],
                            "k_tile": int(d["ktile"]), "split_k": int(d["split"]),
                            "reduction": d["red"] or "none", "split_align": int(d["ktile"]),
                            "torch_matches_default": m.get("torch_matches_default"), "basis": "measured",
                            "evidence": {"report": file, "key": key}})
        elif key.startswith("sweep/linear/torch/"):
            _, _, _, dtype, shape = key.split("/")
            buckets.append({"shape": shape, "dtype": dtype, "N": inp["N"], "K": inp["K"],
                            "ms": e["params"]["ms"], "groups": m["groups"], "change_points": m["change_points"],
                            "distinct": m["distinct"], "basis": "measured",
                            "evidence": {"report": file, "key": key}})
    return entries, buckets


def _from_fma(rep, file):
    seen = {}
    for e in _ok(rep):
        p = e["params"]
        if "variant" not in p or "~" in e["key"] or p.get("backend") == "model":
            continue
        m = e["metrics"]
        res = "fma" if m.get("match_fma") == 1.0 else "mul_add" if m.get("match_mul_add") == 1.0 else "neither"
        k = (p["backend"], p["variant"])
        seen.setdefault(k, {"backend": p["backend"], "variant": p["variant"], "predicted": p.get("predicted"),
                            "results": {}})["results"][f"{p['program']}/{p['format']}"] = res
    facts = []
    for f in seen.values():
        vals = set(f["results"].values())
        f["contracted"] = "fma" if vals == {"fma"} else "mul_add" if vals == {"mul_add"} else "mixed"
        f["as_predicted"] = f["contracted"] == f["predicted"]
        facts.append(f)
    return {"basis": "measured", "evidence": {"report": file},
            "facts": sorted(facts, key=lambda f: (f["backend"], f["variant"]))}


def _gpu_of(rep, file):
    g = rep.get("fingerprint", {}).get("gpu") or {}
    if not g.get("name"):
        raise ProfileError(f"report {file}: its fingerprint names no GPU (a CPU run?); a profile is of one GPU")
    v = rep["fingerprint"].get("versions", {})
    return {"name": g["name"], "sm": g.get("sm"), "driver_version": g.get("driver_version"),
            "cublas_version": g.get("cublas_version"), "cuda_runtime_version": g.get("cuda_runtime_version"),
            "torch": v.get("torch"), "triton": v.get("triton")}


def _linear(matmul):
    lin = {}
    for dtype, fmt in LINEAR_FORMATS.items():
        e = next((e for e in matmul if e["library"] == "cublas" and e["format"] == fmt
                  and e["shape_class"] == "designs"), None)
        if e is None:
            continue
        model = replace(MatmulModel(**e["model"]), split_k=1, split_align=1)
        lin[dtype] = {"model": model.as_dict(), "model_text": model.describe(), "basis": e["basis"],
                      "from": f"matmul: cublas/{fmt}/designs ({e['shape_MxKxN']})",
                      "applies": "assumed: the kernels cuBLAS's heuristic runs for a model's linears add "
                                 "products as the designs' kernel did; K is split as k_order says"}
    return lin


def build_profile(paths, *, name: str | None = None, assume_from: str | None = None) -> dict:
    """The profile of the GPU the reports at ``paths`` were measured on (see the module docstring)."""
    if not paths:
        raise ProfileError("no reports given: pass the probes' reports (accumulator, gemm, fma) of one GPU")
    matmul, entries, buckets, fma, sources, gpu = [], [], [], None, [], None
    for path in paths:
        rep = read_report(path)
        file = _file_name(path)
        g = _gpu_of(rep, file)
        if gpu is not None and g["name"] != gpu["name"]:
            raise ProfileError(f"report {file} is of {g['name']}, the others of {gpu['name']}: one GPU per profile")
        gpu = gpu or g
        probe = rep["probe"]
        if probe == "accumulator":
            matmul += _from_accumulator(rep, file)
        elif probe == "gemm":
            e, b = _from_gemm(rep, file)
            entries += e
            buckets += b
        elif probe == "fma":
            fma = _from_fma(rep, file)
        else:
            raise ProfileError(f"report {file}: probe {probe!r} gives nothing to a profile "
                               f"(accumulator, gemm and fma reports do)")
        sources.append({"file": file, "probe": probe, "created_utc": rep["created_utc"],
                        "command": rep["command"], "code": rep.get("code"),
                        "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()})
    assumptions = []
    linear = _linear(matmul)
    if linear:
        assumptions.append("linear: " + linear[next(iter(linear))]["applies"])
    if assume_from:
        other = load_profile(assume_from)
        why = f"from profile {other['name']!r} ({other['gpu']['name']}, {other['gpu'].get('sm')})"
        if not matmul:
            matmul = [dict(copy.deepcopy(e), basis="assumed", assumed_from=other["name"]) for e in other["matmul"]]
            assumptions.append(f"matmul: no accumulator report of this GPU; the models are {why}: the same "
                               f"tensor cores assumed (same compute capability)" if other["gpu"].get("sm") == gpu["sm"]
                               else f"matmul: no accumulator report of this GPU; the models are {why}")
        if not linear:
            linear = {k: dict(copy.deepcopy(v), basis="assumed", **{"from": f"{why}: {v['from']}"})
                      for k, v in other["linear"].items()}
        if fma is None:
            fma = dict(copy.deepcopy(other["fma"]), basis="assumed", assumed_from=other["name"])
            assumptions.append(f"fma: no fma report of this GPU; the contraction facts are {why} (they are "
                               f"the compilers' choices, nvcc/Triton/Numba, not the GPU's)")
    if not linear:
        raise ProfileError("the reports give no linear model (no probes.accumulator report with cuBLAS models): "
                           "add one, or pass --assume-from PROFILE to take the models from another GPU's profile")
    if not entries:
        assumptions.append("k_order: no probes.gemm algos report; every linear is computed without split-K")
    assumptions.append("k_order: a shape and M the GEMM probe did not list take the split-K measured at an M "
                       "of the same sweep group (the same row-0 bits), else none; split-K slices are "
                       "whole K tiles (split_align = the config's K tile) and added in slice order")
    assumptions.append("linear: the fp32 accumulator is rounded once to the run dtype (nearest even); a "
                       "bias is added in fp32 before that rounding")
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "name": name or _default_name(gpu["name"]),
        "gpu": dict(gpu, basis="measured"),
        "source": {"kind": "measured", "reports": sources,
                   "assumed_from": load_profile(assume_from)["name"] if assume_from else None},
        "matmul": matmul,
        "linear": linear,
        "k_order": {"entries": entries, "buckets": buckets,
                    "default": {"split_k": 1, "split_align": 1, "basis": "assumed",
                                "note": "not listed by the GEMM probe: no split-K assumed"}},
        "fma": fma or {"basis": "assumed", "facts": [], "note": "no fma report"},
        "assumptions": assumptions,
    }


def _default_name(gpu_name: str) -> str:
    m = re.search(r"\b([A-Z]\d{2,4}[A-Z]?)\b", gpu_name)
    return (m.group(1) if m else re.sub(r"\W+", "-", gpu_name)).lower()


def dump_profile(prof: dict, path) -> Path:
    """Write a profile as the shipped ones are written (sorted keys, 1-space indent, final newline)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(prof, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return p
