"""``numerics.matmul``'s block-FMA model evaluated in float64 instead of integers: the same bits, faster.

``model_matmul`` aligns every term on integers (int64 or Python ints): exact for every model, but a
whole model layer (SmolLM2's 30 layers, a 49,152-wide lm_head) would take hours. For the models GPUs
have (normalised blocks, exact products, a finite number ``p`` of extra alignment bits), every step
is exact in float64 too:

- a product of two 16-bit (or 8-bit, tf32) values has at most 22 significant bits: exact in float64;
- aligning a term to the block's grid ``2^g`` (``g = E - 23 - p``) and cutting the bits below it
  toward zero is ``trunc(t * 2^-g) * 2^g``: a power-of-two scaling and ``np.trunc``, both exact;
- the aligned terms are integers below ``2^(26 + p)`` (the largest term's significand product is
  below 4), and ``n_b + 1`` of them sum exactly while ``26 + p + bit_length(n_b + 1) <= 53``;
- rounding that sum to ``sum_bits`` significant bits (toward zero: ``trunc``; to nearest even:
  ``np.rint``) after scaling by a power of two is exact, as in ``numerics.formats``.

``fast_supported(model)`` says whether a model is of that kind (``None`` when it is, else why not);
``fast_matmul(A, B, model)`` gives exactly ``model_matmul(A, B, model)`` for those (tested bit for bit
against it in tests/test_profile_emulate.py) and raises ``ValueError`` naming the reason otherwise.
A chain of correctly rounded fp32 FMAs (``block_size=1``, ``extra_bits=None``, nearest-even: an fp32
SGEMM on CUDA cores) is supported through ``numerics.matmul.add_fp32``, vectorised over the outputs.
"""
from __future__ import annotations

import numpy as np

from numerics.formats import get_format
from numerics.matmul import (MatmulModel, add_fp32, check_representable, matmul_shape, model_matmul,
                             operand_formats, split_k_slices)

__all__ = ["fast_supported", "fast_matmul", "fast_matmul_nt", "operand_keys", "matmul_bits"]

_ACC = get_format("float32")
_MAX_BITS = 53


def _is_fma_chain(m: MatmulModel) -> bool:
    fin = m.final_rounding or m.rounding
    return (m.block_size == 1 and m.extra_bits is None and m.rounding == "nearest_even"
            and fin == "nearest_even" and m.normalize and m.sum_bits == 24)


def fast_supported(model: MatmulModel) -> str | None:
    """None when ``fast_matmul`` evaluates ``model`` exactly, else the reason it does not."""
    if not model.exact_products:
        return "exact_products=False"
    if _is_fma_chain(model):
        return None
    if not model.normalize:
        return "normalize=False (unnormalised intermediates)"
    if model.align_cut != "toward_zero":
        return f"align_cut={model.align_cut}"
    if model.extra_bits is None:
        return "extra_bits=None (infinitely many extra bits) with a block size > 1 or directed rounding"
    width = 26 + int(model.extra_bits) + (model.block_size + 1).bit_length()
    if width > _MAX_BITS:
        return f"a block's aligned sum needs {width} bits (> 53): extra_bits={model.extra_bits}, " \
               f"block_size={model.block_size}"
    return None


def _exponent(x):
    return (np.frexp(x)[1] - 1).astype(np.int64)


_NOKEY = -16000             # the alignment key of a zero operand or term: far below every real key
_REAL = -10000              # keys above this are real (two zero operands' keys sum to -32000)


def _round_sum(S, g, sum_bits, nearest):
    """S * 2^g (S: float64 integers, exactly) rounded to ``sum_bits`` significant bits (fp32's range:
    gradual underflow below 2^-126), toward zero or to nearest even; overflow as numerics.matmul.
    With 24 bits this is float64 -> float32 (one nearest-even rounding, subnormals and overflow as
    IEEE 754 says), stepped one float32 toward zero where that rounding went away from zero."""
    if sum_bits == 24:
        x = np.ldexp(S, g)                               # exact: |S| < 2^53, far inside float64's range
        x32 = x.astype(np.float32)
        if not nearest:
            away = np.abs(x32.astype(np.float64)) > np.abs(x)
            x32 = np.where(away, np.nextafter(x32, np.float32(0)), x32)
        return x32.astype(np.float64) + 0.0
    A = np.abs(S)
    nz = A != 0
    L = g + np.where(nz, np.frexp(A)[1] - 1, 0)
    q = np.maximum(L, _ACC.emin) - (sum_bits - 1)
    r = np.maximum(q - g, 0)                             # bits to drop
    scaled = np.ldexp(A, -r)                             # exact: power-of-two scaling
    Q = np.rint(scaled) if nearest else np.trunc(scaled)
    val = np.ldexp(Q, g + r)
    val = np.where(S < 0, -val, val)
    over = np.abs(val) > _ACC.max_finite
    if np.any(over):
        val = np.where(over, np.copysign(np.inf if nearest else _ACC.max_finite, val), val)
    return val + 0.0


class _Operands:
    """A chunk of rows of A (r, K) and of columns of B (as Bt: c, K), with their alignment keys; gives a
    block's products laid out (b, r * c), so that every reduction runs over the leading axis."""

    def __init__(self, a, bt, ka, kb):
        self.a, self.bt, self.ka, self.kb = a, bt, ka, kb
        self.n = a.shape[0] * bt.shape[0]

    def block(self, k0, k1, align_to):
        aT = self.a[:, k0:k1].T.astype(np.float64)       # float32 operands hold 16/8-bit values exactly
        bT = self.bt[:, k0:k1].T.astype(np.float64)
        P = (aT[:, :, None] * bT[:, None, :]).reshape(k1 - k0, self.n)     # exact in float64
        if align_to == "value":
            keys = np.where(P != 0, _exponent(P), _NOKEY)
        else:
            ka = self.ka[:, k0:k1].T.astype(np.int32)
            kb = self.kb[:, k0:k1].T.astype(np.int32)
            keys = (ka[:, :, None] + kb[:, None, :]).reshape(k1 - k0, self.n)
        return P, keys


def _block(acc, P, keys, p, nearest, sum_bits):
    """One normalised block FMA: acc (n,), P/keys (b, n). Returns the new accumulators."""
    E = np.maximum(keys.max(axis=0), np.where(acc != 0, _exponent(acc), _NOKEY))
    E = np.where(E > _REAL, E, 0)                        # all terms zero: any grid gives 0
    g = E - 23 - p
    scale = np.ldexp(1.0, -g)
    S = np.trunc(P * scale).sum(axis=0) + np.trunc(acc * scale)
    return _round_sum(S, g, sum_bits, nearest)


def _chain(ops, k0, k1, c, model: MatmulModel):
    """The block-FMA chain over products k0..k1-1 from accumulators c."""
    acc = c.copy()
    if _is_fma_chain(model):
        for k in range(k0, k1):
            P, _ = ops.block(k, k + 1, "value")
            acc = add_fp32(P[0], acc)
        return acc
    nb, p = model.block_size, int(model.extra_bits)
    near = model.rounding == "nearest_even"
    fin = (model.final_rounding or model.rounding) == "nearest_even"
    for b0 in range(k0, k1, nb):
        b1 = min(b0 + nb, k1)
        P, keys = ops.block(b0, b1, model.align_to)
        acc = _block(acc, P, keys, p, fin if b1 >= k1 else near, model.sum_bits)
    return acc


def _promoted(ops, k0, k1, model):
    zero = np.zeros(ops.n)
    if model.promote_every is None:
        return _chain(ops, k0, k1, zero, model)
    acc = zero
    P = int(model.promote_every)
    for s0 in range(k0, k1, P):
        acc = add_fp32(_chain(ops, s0, min(s0 + P, k1), zero, model), acc)
    return acc


def _dots(ops, K, model):
    out = None
    for s0, s1 in split_k_slices(K, model.split_k, model.split_align):
        part = _promoted(ops, s0, s1, model)
        out = part if out is None else add_fp32(out, part)
    return out


def fast_matmul(A, B, model: MatmulModel, *, chunk: int = 1 << 20, check: bool = True) -> np.ndarray:
    """``A @ B`` (A: (M, K), B: (K, N)) through ``model``: float64 (M, N) holding float32 values, bit for
    bit ``numerics.matmul.model_matmul(A, B, model)``. ``chunk``: products evaluated at once.
    ``check=False`` skips the representability check of A and B (the caller rounded them)."""
    why = fast_supported(model)
    if why is not None:
        raise ValueError(f"fast_matmul cannot evaluate this model exactly: {why}; use "
                         f"numerics.matmul.model_matmul")
    fa, fb = operand_formats(model.input_format)
    if check:
        A = check_representable(A, fa, "A")
        B = check_representable(B, fb, "B")
    A = np.asarray(A, np.float64)
    B = np.asarray(B, np.float64)
    matmul_shape(A, B)
    return fast_matmul_nt(A, np.ascontiguousarray(B.T), model, chunk=chunk)


def matmul_bits(A, B, model: MatmulModel) -> np.ndarray:
    """``numerics.matmul.model_matmul(A, B, model)``, the same bits, evaluated by ``fast_matmul`` where it
    evaluates ``model`` exactly (4-6x faster at the accumulator probe's 317 x 256 x 317) and by
    ``model_matmul`` itself where it does not: which one ran never changes the result."""
    if fast_supported(model) is None:
        return fast_matmul(A, B, model)
    return model_matmul(A, B, model)


def operand_keys(X, fmt: str) -> np.ndarray:
    """The alignment keys (exponents, clamped at the format's emin; zeros far below) of operand values X
    in format ``fmt``, as int16: what ``fast_matmul_nt`` needs for ``align_to="exponent_sum"`` (a
    caller multiplying by the same weights many times computes them once)."""
    X = np.asarray(X)
    e = np.frexp(X.astype(np.float64) if X.dtype != np.float64 else X)[1] - 1
    return np.where(X != 0, np.maximum(e, get_format(fmt).emin), _NOKEY).astype(np.int16)


def fast_matmul_nt(A, Bt, model: MatmulModel, *, chunk: int = 1 << 21, ka=None, kb=None) -> np.ndarray:
    """``A @ Bt.T`` (A: (M, K), Bt: (N, K), e.g. F.linear's x and W) through ``model``, bit for bit
    ``model_matmul(A, Bt.T, model)``. A and Bt may be float32 or float64 arrays; their values must be
    in the model's operand formats (not checked here: ``fast_matmul`` checks). ``ka``, ``kb``: the
    operands' ``operand_keys`` if already computed."""
    why = fast_supported(model)
    if why is not None:
        raise ValueError(f"fast_matmul cannot evaluate this model exactly: {why}; use "
                         f"numerics.matmul.model_matmul")
    M, K, N = matmul_shape(A, Bt, b_transposed=True)
    if model.align_to == "exponent_sum":
        fa, fb = operand_formats(model.input_format)
        ka = operand_keys(A, fa) if ka is None else ka
        kb = operand_keys(Bt, fb) if kb is None else kb
    out = np.empty((M, N))
    per = max(1, chunk // K)                            # dot products per pass
    rows = max(1, min(M, per // N))
    cols = N if rows > 1 else max(1, min(N, per))
    for i in range(0, M, rows):
        for j in range(0, N, cols):
            ops = _Operands(A[i:i + rows], Bt[j:j + cols], None if ka is None else ka[i:i + rows],
                            None if kb is None else kb[j:j + cols])
            r, c = ops.a.shape[0], ops.bt.shape[0]
            out[i:i + r, j:j + c] = _dots(ops, K, model).reshape(r, c)
    return out
