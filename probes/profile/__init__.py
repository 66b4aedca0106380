"""GPU profiles: one GPU's matmul arithmetic as data, to emulate it where that GPU is not (issue 17).

A profile (JSON, schema ``driftscope-gpu-profile`` version ``SCHEMA_VERSION``) holds:

- ``matmul``: per library path, input format and shape class, the ``numerics.matmul.MatmulModel`` of
  the matrix unit (what ``probes.accumulator`` fitted, or what a paper published);
- ``k_order``: the K order cuBLAS's heuristic picked per Mistral-7B linear shape and M (tiles,
  split-K slices, from ``probes.gemm``'s algorithm listing), and the M buckets over which row 0's bits
  stay the same (its batch-invariance sweep);
- ``fma``: what the compilers contracted into fused multiply-adds (``probes.fma``);
- ``linear``: per run dtype, the model ``linear=emulate:PROFILE`` computes every linear with, and how
  K is split for a shape and M (``linear_plan``).

Every entry says its ``basis``: ``measured`` (a report made here, named in ``source``), ``published``
(a paper, cited in ``source``) or ``assumed`` (with the assumption in words). Nothing assumed is
silent: ``assumptions`` lists them all.

Profiles of the GPUs measured here and of published GPUs ship in ``probes/profile/data/``;
``python -m probes.profile REPORTS... --out X.json`` builds one from probe reports (``build.py``);
``published.py`` holds the published ones; docs/profiles.md says what each one is.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from numerics.matmul import MatmulModel
from probes.errors import UsageError

__all__ = ["SCHEMA", "SCHEMA_VERSION", "BASES", "DATA_DIR", "ProfileError", "shipped", "load_profile",
           "validate_profile", "LinearPlan", "linear_plan", "RUN_DTYPES"]

SCHEMA = "driftscope-gpu-profile"
SCHEMA_VERSION = 1
BASES = ("measured", "published", "assumed")
DATA_DIR = Path(__file__).resolve().parent / "data"
RUN_DTYPES = ("float32", "bfloat16", "float16")
_REQUIRED = ("schema", "schema_version", "name", "gpu", "source", "matmul", "linear", "k_order", "fma",
             "assumptions")


class ProfileError(UsageError):
    """A profile that is unknown, of another schema version, or lacks what a run needs."""


def shipped() -> list[str]:
    """The names of the profiles shipped with driftscope (probes/profile/data/NAME.json)."""
    return sorted(p.stem for p in DATA_DIR.glob("*.json"))


def load_profile(spec: str) -> dict:
    """A shipped profile by name (``h100``, ``t4-like``, ...) or a profile file by path, validated."""
    spec = str(spec)
    path = Path(spec)
    if not (spec.endswith(".json") or path.is_file()):
        path = DATA_DIR / f"{spec}.json"
        if not path.is_file():
            raise ProfileError(f"unknown profile {spec!r}: not a file, and not one of the shipped profiles "
                               f"({', '.join(shipped())})")
    if not path.is_file():
        raise ProfileError(f"profile file {spec}: no such file")
    try:
        prof = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ProfileError(f"profile file {spec}: not readable JSON ({exc})") from None
    validate_profile(prof, spec)
    return prof


def validate_profile(prof, where: str = "profile") -> None:
    """A ProfileError naming what is wrong: not a profile, another schema version, a missing part."""
    if not isinstance(prof, dict) or prof.get("schema") != SCHEMA:
        raise ProfileError(f"{where}: not a driftscope GPU profile (schema {SCHEMA!r} expected, found "
                           f"{prof.get('schema') if isinstance(prof, dict) else type(prof).__name__!r})")
    if prof.get("schema_version") != SCHEMA_VERSION:
        raise ProfileError(f"{where}: profile schema version {prof.get('schema_version')!r}, this driftscope "
                           f"reads version {SCHEMA_VERSION} only; rebuild the profile with python -m probes.profile")
    missing = [k for k in _REQUIRED if k not in prof]
    if missing:
        raise ProfileError(f"{where}: profile lacks {', '.join(missing)}")
    for dt, entry in prof["linear"].items():
        if entry.get("basis") not in BASES:
            raise ProfileError(f"{where}: linear.{dt}: basis {entry.get('basis')!r} not one of {', '.join(BASES)}")
        try:
            MatmulModel(**entry["model"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileError(f"{where}: linear.{dt}: not a numerics.matmul model ({exc})") from None


@dataclass(frozen=True)
class LinearPlan:
    """How one linear (run dtype, N, K, M) is computed under a profile: ``model`` (with its split-K)
    and where each part comes from (``model_basis``, ``k_order_basis``: measured | published | assumed)."""
    model: MatmulModel
    model_basis: str
    k_order_basis: str
    k_order_source: str

    def as_dict(self):
        return {"model": self.model.describe(), "model_basis": self.model_basis,
                "k_order_basis": self.k_order_basis, "k_order_source": self.k_order_source}


def _group_of(bucket: dict, M: int):
    """The sweep group of M in a bucket entry: M's own if swept, else that of the largest swept M below
    it (None when M is below every swept M)."""
    best = None
    for m, g in zip(bucket["ms"], bucket["groups"]):
        if m <= M:
            best = (m, g)
    return best


def linear_plan(prof: dict, dtype: str, N: int, K: int, M: int) -> LinearPlan:
    """The model for one linear (F.linear layout: x [M, K] @ W[N, K]^T) in run dtype ``dtype``.

    The K order: the heuristic's split-K measured for this (dtype, N, K) at M itself (basis measured),
    else that measured at an M in the same sweep group as M (the sweep found row 0's bits equal there,
    so the same K order is assumed; an M between swept values takes the group of the swept M below
    it), else the profile's default (assumed). A ProfileError when the profile has no
    model for ``dtype``."""
    lin = prof["linear"].get(dtype)
    if lin is None:
        have = ", ".join(sorted(prof["linear"])) or "none"
        raise ProfileError(f"profile {prof['name']!r} has no linear model for dtype {dtype} (it has: {have}); "
                           f"pick another profile or dtype")
    model = MatmulModel(**lin["model"])
    ko = prof["k_order"]
    entries = [e for e in ko.get("entries", []) if e["dtype"] == dtype and e["N"] == N and e["K"] == K]
    chosen, source = None, ""
    exact = [e for e in entries if e["M"] == M]
    if exact:
        chosen, source = exact[0], f"measured at M={M} ({exact[0]['shape']}: {exact[0]['desc']})"
    else:
        bucket = next((b for b in ko.get("buckets", []) if b["dtype"] == dtype and b["N"] == N
                       and b["K"] == K), None)
        if bucket is not None:
            mine = _group_of(bucket, M)
            for e in entries:
                theirs = _group_of(bucket, e["M"])
                if mine is not None and theirs is not None and mine[1] == theirs[1] and M <= bucket["ms"][-1]:
                    chosen = e
                    source = (f"measured at M={e['M']} ({e['shape']}: {e['desc']}), the same sweep group as "
                              f"M={M}" + ("" if M in bucket["ms"] else f" (M={M} not swept: group of M={mine[0]})"))
                    break
    if chosen is not None:
        model = replace(model, split_k=int(chosen["split_k"]), split_align=int(chosen.get("split_align", 1)))
        return LinearPlan(model, lin["basis"], "measured" if exact else "assumed", source)
    d = ko["default"]
    model = replace(model, split_k=int(d.get("split_k", 1)), split_align=int(d.get("split_align", 1)))
    return LinearPlan(model, lin["basis"], d.get("basis", "assumed"), d.get("note", "the profile's default"))
