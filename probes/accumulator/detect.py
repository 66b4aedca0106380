"""Infer a backend's accumulator model from the designed test vectors.

The designs (``designs.py``) are run once through the backend. Then every candidate
``MatmulModel`` in a grid of parameters is evaluated on the same vectors with ``numerics.matmul``,
and the candidates that reproduce *every* output bit for bit survive:

- stage 1: block size n_b in {1, 2, 4, ..., 64}, extra bits p in [-16, 26] or infinite, rounding
  of the block sums and of the last step (toward zero / nearest-even), normalisation on/off, on the
  power-of-two families (insensitive to product exactness and alignment key);
- stage 2: the stage-1 survivors x (products exact / rounded to fp32) x (alignment key) x (bits
  shifted out toward zero / floor, i.e. sign-magnitude vs two's complement) on all
  families including the random vectors;
- stage 3: length-512 designs for a two-level accumulation (the unit's sum added into an fp32
  register every P in {32, 64, 128, 256} products, as cuBLAS's fp8 GEMMs may do);
- stage 4 (``fit.py``, run by ``AccumulatorProbe.run_case``): a random fit sample at the validation shape, where
  the library may run another kernel (split-K, other block size) and where a narrow accumulator
  (sum_bits) shows, which these designs do not exercise.

Ties (designs that cannot separate two candidates, e.g. p beyond the format's exponent range) are
reported; the chosen model is the first survivor in a fixed preference order (exact products,
value alignment, normalised, one rounding mode, the smallest p, the smallest n_b). If nothing
survives, the candidate with the fewest mismatches is returned with ``consistent=False`` and the
evidence shows which families it misses: that is a finding (the hardware is outside the model).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from numerics.matmul import MatmulModel, dot_rows_params, model_dot
from probes.accumulator.designs import CORE, K_DESIGN, DesignSet, design_set, promotion_set

BLOCK_SIZES = (1, 2, 4, 8, 16, 32, 64)
EXTRA_BITS = tuple(range(-16, 27)) + (None,)
ROUNDINGS = ("toward_zero", "nearest_even")


@dataclass
class Detection:
    fmt: str
    model: MatmulModel
    consistent: bool              # the model reproduces every design output
    survivors: int                # candidates consistent with all designs
    ambiguity: dict               # parameter -> sorted distinct values among the survivors
    mismatches: list = field(default_factory=list)   # design names the model misses
    outputs: np.ndarray = None    # the backend's outputs on the designs (float64 of fp32 values)
    designs: DesignSet = None
    promotion_outputs: np.ndarray = None
    promotion_designs: DesignSet = None

    def evidence(self) -> dict:
        """Per design: output fp32 bits as hex (and the offset from the reference 1, in 2^-24)."""
        bits = self.outputs.astype(np.float32).view(np.uint32)
        one = 2.0 ** self.designs.scale_exp
        out = {"scale_exp": self.designs.scale_exp,
               "outputs_hex": {n: f"{int(b):08x}" for n, b in zip(self.designs.names, bits)},
               "skipped_designs": self.designs.skipped,
               "family_summary": family_summary(self.designs.names, self.outputs, one)}
        if self.promotion_designs is not None and len(self.promotion_designs.names):
            pb = self.promotion_outputs.astype(np.float32).view(np.uint32)
            out["outputs_hex"].update({n: f"{int(b):08x}" for n, b in zip(self.promotion_designs.names, pb)})
            out["family_summary"].update(family_summary(self.promotion_designs.names,
                                                        self.promotion_outputs, one))
        return out


def _preference(m: MatmulModel):
    return (not m.exact_products, m.align_to != "value", m.align_cut != "toward_zero", not m.normalize,
            m.final_rounding is not None, m.rounding != "toward_zero",
            99 if m.extra_bits is None else m.extra_bits, m.block_size)


def design_outputs(backend, fmt: str, ds: DesignSet, rows: int | None = None) -> np.ndarray:
    """a_i . b_i for every design row: diagonals of (rows x K) @ (K x rows) matmuls (rows >= K/2,
    zero-padded, so that K is never much larger than M, N: no reason for a split-K), or the
    model directly for a simulated backend."""
    if hasattr(backend, "model_for"):
        return model_dot(ds.a, ds.b, None, backend.model_for(fmt))
    K = ds.a.shape[1]
    rows = rows or max(64, K // 2)
    out = np.empty(len(ds.names))
    for i in range(0, len(out), rows):
        a, b = ds.a[i:i + rows], ds.b[i:i + rows]
        n = len(a)
        if n < rows:
            a = np.vstack([a, np.zeros((rows - n, K))])
            b = np.vstack([b, np.zeros((rows - n, K))])
        out[i:i + n] = np.diagonal(backend.matmul(a, b.T.copy(), fmt))[:n]
    return out


def _matches(model, a, b, want):
    got = model_dot(a, b, None, model)
    return got.astype(np.float32).view(np.uint32) == want.astype(np.float32).view(np.uint32)


def _bits32(x):
    return np.asarray(x, dtype=np.float64).astype(np.float32).view(np.uint32)


def _stage1(fmt, a, b, want, screen):
    """Candidates (n_b, p, rounding, final, normalise) consistent with all rows; each n_b's finite-p
    candidates are evaluated in one vectorised pass per row set."""
    combos = [(p, rnd, fin, norm) for p in EXTRA_BITS if p is not None for rnd in ROUNDINGS
              for fin in (None,) + ROUNDINGS for norm in (True, False) if fin != rnd]
    survivors, best = [], (None, -1)
    for nb in BLOCK_SIZES:
        alive = combos
        for rows in (screen, np.arange(len(want))):
            if not alive:
                break
            ra, rb, rw = a[rows], b[rows], _bits32(want[rows])
            C, R = len(alive), len(rows)
            got = dot_rows_params(
                np.tile(ra, (C, 1)), np.tile(rb, (C, 1)), np.zeros(C * R), input_format=fmt,
                block_size=nb, extra_bits=np.repeat([c[0] for c in alive], R),
                nearest=np.repeat([c[1] == "nearest_even" for c in alive], R),
                final_nearest=np.repeat([(c[2] or c[1]) == "nearest_even" for c in alive], R),
                normalize=np.repeat([c[3] for c in alive], R))
            ok = (_bits32(got).reshape(C, R) == rw[None, :])
            if True:   # the closest candidate, in case none reproduces everything
                k = int(ok.sum(axis=1).argmax())
                if ok[k].sum() > best[1]:
                    best = (alive[k], int(ok[k].sum()), nb)
            alive = [c for c, o in zip(alive, ok.all(axis=1)) if o]
        survivors += [MatmulModel(input_format=fmt, block_size=nb, extra_bits=p, rounding=rnd,
                                  final_rounding=fin, normalize=norm) for p, rnd, fin, norm in alive]
        for rnd, fin, norm in itertools.product(ROUNDINGS, (None,) + ROUNDINGS, (True, False)):
            if fin == rnd:
                continue
            m = MatmulModel(input_format=fmt, block_size=nb, extra_bits=None, rounding=rnd,
                            final_rounding=fin, normalize=norm)
            if _matches(m, a[screen], b[screen], want[screen]).all() and _matches(m, a, b, want).all():
                survivors.append(m)
    best_model = None
    if best[0] is not None:
        p, rnd, fin, norm = best[0]
        best_model = MatmulModel(input_format=fmt, block_size=best[2], extra_bits=p, rounding=rnd,
                                 final_rounding=fin, normalize=norm)
    return survivors, best_model


#: Design rows each stage-2 candidate is screened on before all of them.
STAGE2_SCREEN = 96


def screen_rows(n: int, size: int) -> np.ndarray:
    """`size` row indices spread evenly over 0..n-1 (all of them when n <= size): a screen of design rows."""
    return np.linspace(0, n - 1, min(size, n)).astype(int)


def detect_from_outputs(fmt: str, ds: DesignSet, outputs: np.ndarray) -> Detection:
    outputs = np.asarray(outputs, dtype=np.float64)
    core = ds.family_mask(CORE)
    a1, b1, w1 = ds.a[core], ds.b[core], outputs[core]
    screen = screen_rows(len(w1), 48)
    survivors, best_model = _stage1(fmt, a1, b1, w1, screen)
    best = (best_model, -1)
    final, partial = [], []        # partial: (model, its matching rows or None where only screened)
    # each candidate first on a screen of the design rows (one that misses a row there cannot reproduce them
    # all): the same survivors as evaluating every candidate on every row, at a fraction of the work
    rows = screen_rows(len(outputs), STAGE2_SCREEN)
    for m0 in survivors:
        for exact, align, cut in itertools.product((True, False), ("value", "exponent_sum"),
                                                   ("toward_zero", "floor")):
            m = MatmulModel(**{**m0.as_dict(), "exact_products": exact, "align_to": align,
                               "align_cut": cut})
            if not _matches(m, ds.a[rows], ds.b[rows], outputs[rows]).all():
                partial.append((m, None))
                continue
            ok = _matches(m, ds.a, ds.b, outputs)
            if ok.all():
                final.append(m)
            else:
                partial.append((m, int(ok.sum())))
    best2 = (None, -1)
    if not final:   # then the first closest candidate on all rows, as an exhaustive evaluation picks it
        for m, n in partial:
            n = int(_matches(m, ds.a, ds.b, outputs).sum()) if n is None else n
            if n > best2[1]:
                best2 = (m, n)
    if final:
        # p unbounded above by the designs (None among the survivors): report it as infinite
        if any(m.extra_bits is None for m in final):
            final_pick = [m for m in final if m.extra_bits is None]
        else:
            final_pick = final
        final_pick.sort(key=_preference)
        chosen, consistent = final_pick[0], True
    else:
        chosen = best2[0] or best[0] or MatmulModel(input_format=fmt)
        consistent = False
    ok = _matches(chosen, ds.a, ds.b, outputs)
    amb = {}
    for key in ("block_size", "extra_bits", "rounding", "final_rounding", "exact_products",
                "normalize", "align_to", "align_cut"):
        vals = sorted({getattr(m, key) for m in final},
                      key=lambda v: (v is None, not isinstance(v, (int, np.integer)), v if isinstance(v, (int, np.integer)) else 0, str(v)))
        if len(vals) > 1:
            amb[key] = vals
    return Detection(fmt=fmt, model=chosen, consistent=consistent, survivors=len(final),
                     ambiguity=amb, mismatches=[n for n, o in zip(ds.names, ok) if not o],
                     outputs=outputs, designs=ds)


PROMOTE_EVERY = (None, 32, 64, 128, 256)


def detect_promotion(det: Detection, ps: DesignSet, outputs: np.ndarray) -> Detection:
    """Stage 3: with the length-512 promotion designs, is the unit's sum added into an fp32
    register every P products? Keeps P = None when that reproduces them (nothing visible)."""
    det.promotion_outputs = np.asarray(outputs, dtype=np.float64)
    det.promotion_designs = ps
    if not len(ps.names):
        return det
    base = det.model
    fits = []
    for P in PROMOTE_EVERY:
        if P is not None and P % base.block_size:
            continue
        m = MatmulModel(**{**base.as_dict(), "promote_every": P})
        if _matches(m, ps.a, ps.b, outputs).all():
            fits.append(m)
    if fits:
        det.model = fits[0]
        if len(fits) > 1 and fits[0].promote_every is not None:
            det.ambiguity["promote_every"] = [m.promote_every for m in fits]
    else:
        bad = ~_matches(base, ps.a, ps.b, outputs)
        det.mismatches += [n for n, b in zip(ps.names, bad) if b]
        det.consistent = False
    return det


def detect(backend, fmt: str, *, seed: int = 0) -> Detection:
    ds = design_set(fmt, seed=seed)
    det = detect_from_outputs(fmt, ds, design_outputs(backend, fmt, ds))
    ps = promotion_set(fmt)
    return detect_promotion(det, ps, design_outputs(backend, fmt, ps) if len(ps.names) else np.zeros(0))


def family_summary(names, outputs, one) -> dict:
    """Run-length summary per family: the output's offset from the reference 1 in units of 2^-24
    (half an fp32 ulp of 1), e.g. {"block": "2..15:+2 16..63:+0"}."""
    fams: dict = {}
    for n, o in zip(names, outputs):
        fam, _, idx = n.partition("/")
        if fam == "random":
            continue
        if abs(o) >= one / 2:      # near +-1: offset of |o| from 1; else the value itself
            v = f"{'-' if o < 0 else ''}1{(abs(o) - one) / one * 2.0 ** 24:+.6g}"
        else:
            v = f"{o / one * 2.0 ** 24:+.6g}"
        fams.setdefault(fam, []).append((idx, v))
    out = {}
    for fam, items in fams.items():
        runs, start, prev, val = [], None, None, None
        for idx, v in items + [(None, None)]:
            if v != val:
                if val is not None:
                    runs.append(f"{start}..{prev}:{val}" if start != prev else f"{start}:{val}")
                start, val = idx, v
            prev = idx
        out[fam] = " ".join(runs)
    return out
