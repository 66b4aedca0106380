"""Check a detected model bit for bit on many random dot products.

``random_operands(fmt, samples, K, seed)`` draws A (M, K) and B (K, N) with M * N >= samples:
- rows of A, a third each: normal N(0, 1); mixed exponents (N(0, 1) x 2^U[-s, s] per element);
  cancelling (the second half of the row is minus the first half, perturbed in its last bits);
- columns of B: half normal, half mixed exponents; every row / column scaled by a power of two
  (so blocks see both the accumulator and the products as the largest term).
Everything is rounded into ``fmt`` once (numerics.formats.round_to_format); the spreads keep every
value inside the format (an overflow would raise, never saturate). ``validate`` runs the backend
and ``numerics.matmul.model_matmul`` (its bits, through ``numerics.matmul_fast.matmul_bits``) and compares the
float32 bit patterns.
"""
from __future__ import annotations

import math

import numpy as np

from numerics.formats import get_format, round_to_format
from numerics.matmul import MatmulModel, operand_formats
from numerics.matmul_fast import matmul_bits
from probes.accumulator.backends import check_fits

K_VALIDATE = 256
ROW_KINDS = ("normal", "mixed", "cancel")


def _spread(fmt):
    return min({"float8_e4m3fn": 2, "float8_e5m2": 4}.get(f, 6) for f in operand_formats(fmt))


def random_operands(fmt: str, samples: int, K: int = K_VALIDATE, seed: int = 0):
    if samples < 1 or K < 1:
        raise ValueError(f"need samples >= 1 and K >= 1 (got {samples}, {K})")
    fa, fb = operand_formats(fmt)
    f = get_format(fa)
    rng = np.random.default_rng(seed)
    M = N = int(math.ceil(math.sqrt(samples)))
    s = _spread(fmt)
    kind = np.arange(M) % 3                                 # 0 normal, 1 mixed, 2 cancel
    A = rng.standard_normal((M, K))
    mixed = np.exp2(rng.integers(-s, s + 1, (M, K)))
    A = np.where((kind == 1)[:, None], A * mixed, A)
    h = K // 2
    pert = 1 + rng.integers(-4, 5, (M, h)) * 2.0 ** -(f.mantissa_bits)
    canc = A.copy()
    canc[:, h:2 * h] = -A[:, :h] * pert
    A = np.where((kind == 2)[:, None], canc, A)
    A = A * np.exp2(rng.integers(-2, 3, (M, 1)))
    B = rng.standard_normal((K, N))
    B = np.where((np.arange(N) % 2 == 1)[None, :], B * np.exp2(rng.integers(-s, s + 1, (K, N))), B)
    B[h:2 * h] = np.where((np.arange(N) % 4 == 0)[None, :], B[:h], B[h:2 * h])   # pairs for cancel
    B = B * np.exp2(rng.integers(-2, 3, (1, N)))
    A = round_to_format(A, f)
    B = round_to_format(B, get_format(fb))
    check_fits(A, fa, "A")
    check_fits(B, fb, "B")
    return A, B, {"generator": "numpy.default_rng", "seed": seed, "M": M, "N": N, "K": K,
                  "rows": "normal/mixed/cancel by row index mod 3", "spread_binades": s}


def validate(backend, fmt: str, model: MatmulModel, *, samples: int = 100_000, K: int = K_VALIDATE,
             seed: int = 0, examples: int = 8) -> dict:
    A, B, inputs = random_operands(fmt, samples, K, seed)
    got = backend.matmul(A, B, fmt)
    want = matmul_bits(A, B, model)
    gb = got.astype(np.float32).view(np.uint32)
    wb = want.astype(np.float32).view(np.uint32)
    same = gb == wb
    M = A.shape[0]
    kinds = np.arange(M) % 3
    per_kind = {k: float(same[kinds == i].mean()) for i, k in enumerate(ROW_KINDS)}
    bad = np.argwhere(~same)
    ex = [{"i": int(i), "j": int(j), "row_kind": ROW_KINDS[i % 3], "backend_hex": f"{int(gb[i, j]):08x}",
           "model_hex": f"{int(wb[i, j]):08x}", "backend": float(got[i, j]), "model": float(want[i, j])}
          for i, j in bad[:examples]]
    ulps = np.abs(gb.astype(np.int64) - wb.astype(np.int64))[~same]   # same-sign values: ulps
    return {"inputs": inputs, "samples": int(same.size), "matches": int(same.sum()),
            "match_rate": float(same.mean()), "match_rate_by_row_kind": per_kind,
            "max_ulp_mismatch": int(ulps.max()) if ulps.size else 0, "mismatch_examples": ex,
            "got": got}
