"""Profiles of GPUs not measured here, from published tensor-core models (``basis: published``).

Sources (``CITATIONS``):

- Khattak & Mikaitis, "Accurate Models of NVIDIA Tensor Cores", arXiv 2512.07004 (2025), and their
  MATLAB models (github.com/north-numerical-computing/MATLAB-tensor-core, ``models/*TC.m``, read at
  commit 109e412d for V100/A100/Ada and at the commits named below for H100 and B200): per GPU and
  input format, the block FMA size ``fma`` (= ``block_size``), the extra alignment bits ``neab``
  (= ``extra_bits``) and the rounding ``frmode`` (``rz`` = ``toward_zero``) of the fp32-output path.
- Fasi, Higham, Mikaitis & Pranesh, "Numerical behavior of NVIDIA tensor cores", PeerJ Computer
  Science 7:e330 (2021): V100, T4 and A100 in fp16: products exact, 4-term (V100, T4) and 8-term
  (A100) blocks added with the terms aligned to the largest and truncated, no extra bits on V100/T4,
  round toward zero, normalised after each block.

What ``numerics.matmul`` cannot take from the papers is ASSUMED, and said in each profile:
- ``align_to``: not among the published parameters; ``exponent_sum`` (a product's exponent is
  e_a + e_b, as the hardware adds exponents), as measured on the H100 here: with it the published H100
  parameters reproduce every stored H100 tl.dot output in fp16, bf16 and tf32; with ``value`` only
  87-93 % of them (docs/profiles.md);
- ``sum_bits``: 24 (fp32) unless the model says otherwise (the fp8 path's narrower accumulator is
  modelled in the papers through ``neab = -10``; the H100 measurement needed sum_bits=14 besides);
- fp32 inputs (run dtype float32, TF32 off): a chain of correctly rounded fp32 FMAs in k order (an
  SGEMM on CUDA cores); not from the papers;
- the K order: no split-K (the heuristics of those GPUs' cuBLAS were not measured).

``published_profiles()`` gives them all; ``python -m probes.profile --published DIR`` writes them; the
shipped copies in probes/profile/data are checked against this code by tests/test_profile.py.
"""
from __future__ import annotations

from numerics.matmul import MatmulModel
from probes.profile import SCHEMA, SCHEMA_VERSION

__all__ = ["CITATIONS", "published_profiles"]

CITATIONS = {
    "khattak2025": "F. A. Khattak and M. Mikaitis, Accurate Models of NVIDIA Tensor Cores, arXiv:2512.07004 "
                   "(2025); MATLAB models: github.com/north-numerical-computing/MATLAB-tensor-core models/*TC.m",
    "fasi2021": "M. Fasi, N. J. Higham, M. Mikaitis and S. Pranesh, Numerical behavior of NVIDIA tensor cores, "
                "PeerJ Computer Science 7:e330 (2021)",
    "khattak2025hpec": "F. A. Khattak and M. Mikaitis, Generalized Methodology for Determining Numerical Features "
                       "of Hardware Floating-Point Matrix Multipliers: Part I, IEEE HPEC 2025 (arXiv:2510.15884): "
                       "the RTX 3060 (Ampere GA106, sm_86) has the A100's numerical features",
}

# GPU -> format -> (fma, neab, where). fp16/bf16/tf32/fp8 with fp32 output (the rz path).
_TC = {
    "v100": {"float16": (4, 0, "V100TC.m (commit 109e412d): fma=4 neab=0 frmode=rz; fasi2021")},
    "t4": {"float16": (4, 0, "fasi2021: the T4's fp16 tensor cores behave as the V100's (4-term blocks, "
                             "truncation, no extra bits, round toward zero)")},
    "a100": {"float16": (8, 1, "A100TC.m (commit 109e412d): fma=8 neab=1 frmode=rz; fasi2021 (8-term blocks)"),
             "bfloat16": (8, 1, "A100TC.m (commit 109e412d): fma=8 neab=1 frmode=rz"),
             "tf32": (4, 1, "A100TC.m (commit 109e412d): tf32 fma=4")},
    "l40s": {"float16": (8, 1, "AdaTC.m (commit 109e412d): fma=8 neab=1 frmode=rz"),
             "bfloat16": (8, 1, "AdaTC.m (commit 109e412d): fma=8 neab=1 frmode=rz"),
             "tf32": (4, 1, "AdaTC.m (commit 109e412d): tf32 fma=4"),
             "float8_e4m3fn": (16, -10, "AdaTC.m (commit 109e412d): fp8 fma=16 neab=-10"),
             "float8_e5m2": (16, -10, "AdaTC.m (commit 109e412d): fp8 fma=16 neab=-10")},
    "h100": {"float16": (16, 2, "H100TC.m (commit 07113e74): fma=16 neab=2 frmode=rz"),
             "bfloat16": (16, 2, "H100TC.m (commit 07113e74): fma=16 neab=2 frmode=rz"),
             "tf32": (8, 2, "H100TC.m (commit 07113e74): tf32 fma=8"),
             "float8_e4m3fn": (32, -10, "H100TC.m (commit 07113e74): fp8 fma=32 (two interleaved 16-vectors) "
                                        "neab=-10"),
             "float8_e5m2": (32, -10, "H100TC.m (commit 07113e74): fp8 fma=32 neab=-10")},
    "b200": {"float16": (16, 2, "B200TC.m (commit 04d57166): fma=16 neab=2 frmode=rz"),
             "bfloat16": (16, 2, "B200TC.m (commit 04d57166): fma=16 neab=2 frmode=rz"),
             "tf32": (8, 2, "B200TC.m (commit 04d57166): tf32 fma=8"),
             "float8_e4m3fn": (32, 2, "B200TC.m (commit 04d57166): fp8 fma=32 neab=2 (the default; not -10)"),
             "float8_e5m2": (32, 2, "B200TC.m (commit 04d57166): fp8 fma=32 neab=2")},
}

_GPUS = {
    # name: (GPU, sm, tensor-core table, basis of the tensor-core models, citations, extra assumptions)
    "v100-published": ("NVIDIA V100 (Volta)", "sm_70", "v100", "published", ["khattak2025", "fasi2021"], []),
    "t4-like": ("NVIDIA T4 (Turing TU104)", "sm_75", "t4", "published", ["fasi2021"],
                ["bfloat16: the T4 has no bf16 tensor cores and no published model of how cuBLAS computes a "
                 "bf16 GEMM there: the profile has no bfloat16 linear (a run in bfloat16 is refused)"]),
    "a100-published": ("NVIDIA A100 (Ampere GA100)", "sm_80", "a100", "published", ["khattak2025", "fasi2021"], []),
    "a10g-like": ("NVIDIA A10G (Ampere GA102)", "sm_86", "a100", "assumed", ["khattak2025", "khattak2025hpec"],
                  ["matmul: the A10G (GA102, sm_86) is ASSUMED to have the A100's tensor-core arithmetic "
                   "(Khattak & Mikaitis's A100 model); not measured on an A10G. Supporting evidence: their HPEC "
                   "2025 paper found the RTX 3060 (GA106, sm_86) identical to the A100"]),
    "l40s-published": ("NVIDIA L40S (Ada Lovelace AD102)", "sm_89", "l40s", "published", ["khattak2025"], []),
    "h100-published": ("NVIDIA H100 (Hopper GH100)", "sm_90", "h100", "published", ["khattak2025"],
                       ["H200: the same GH100 tensor cores; Khattak & Mikaitis's H200TC model is the H100's"]),
    "b200-published": ("NVIDIA B200 (Blackwell)", "sm_100", "b200", "published", ["khattak2025"], []),
}

_COMMON = [
    "align_to: not a published parameter; align_to=exponent_sum (a product's exponent is e_a + e_b) as measured "
    "on the H100 here (with align_to=value the published H100 parameters reproduce only 87-93 % of the H100's "
    "tl.dot outputs, with exponent_sum all of them in fp16/bf16/tf32)",
    "sum_bits: 24 (an fp32 accumulator) unless stated",
    "float32 run dtype (TF32 off): a chain of correctly rounded fp32 FMAs in k order (CUDA cores' SGEMM); "
    "not from the papers",
    "k_order: no split-K at any shape or M (these GPUs' cuBLAS heuristics were not measured)",
    "linear: the fp32 accumulator is rounded once to the run dtype (nearest even); a bias is added in fp32 "
    "before that rounding",
]


def _model(fmt, fma, neab):
    return MatmulModel(fmt, fma, neab, "toward_zero", align_to="exponent_sum")


def _profile(name):
    gpu, sm, table, basis, cites, extra = _GPUS[name]
    tc = _TC[table]
    matmul = []
    for fmt, (fma, neab, where) in tc.items():
        m = _model(fmt, fma, neab)
        matmul.append({"library": "tensor core (mma)", "format": fmt, "shape_class": "instruction",
                       "shape_MxKxN": None, "model": m.as_dict(), "model_text": m.describe(), "basis": basis,
                       "evidence": {"source": where}})
    linear = {}
    for dtype in ("bfloat16", "float16"):
        if dtype in tc:
            fma, neab, where = tc[dtype]
            m = _model(dtype, fma, neab)
            linear[dtype] = {"model": m.as_dict(), "model_text": m.describe(), "basis": basis,
                             "from": f"matmul: tensor core (mma)/{dtype}/instruction ({where})",
                             "applies": "assumed: every linear runs on the tensor cores, K in order, no split-K"}
    chain = MatmulModel("float32", 1, None, "nearest_even")
    linear["float32"] = {"model": chain.as_dict(), "model_text": chain.describe(), "basis": "assumed",
                         "from": "assumed: fp32 FMA chain in k order (CUDA cores; TF32 off, torch's default)",
                         "applies": "assumed"}
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "name": name,
        "gpu": {"name": gpu, "sm": sm, "basis": "published" if basis == "published" else "assumed"},
        "source": {"kind": "published", "citations": {c: CITATIONS[c] for c in cites}, "reports": []},
        "matmul": matmul,
        "linear": linear,
        "k_order": {"entries": [], "buckets": [],
                    "default": {"split_k": 1, "split_align": 1, "basis": "assumed",
                                "note": "not measured on this GPU: no split-K assumed"}},
        "fma": {"basis": "assumed", "facts": [],
                "note": "not measured on this GPU; contraction is the compiler's choice (nvcc contracts a*b+c "
                        "by default, --fmad=false does not; see the H100 profile's facts)"},
        "assumptions": extra + _COMMON,
    }


def published_profiles() -> dict:
    """name -> profile, for every published or published-like GPU profile."""
    return {name: _profile(name) for name in _GPUS}
