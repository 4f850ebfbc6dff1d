"""Fixed-point arithmetic of the int8 scheme: the few primitives every integer op is built from.

Quantization: real = scale · (q − zero_point), q ∈ [−128, 127] (int8). Activations are per-tensor;
weights are per-output-channel symmetric in [−127, 127] (zero_point 0); biases are int32 at scale
s_in · s_w[c] with zero_point 0.

Requantization (gemmlowp / TFLite `MultiplyByQuantizedMultiplier`, also CMSIS-NN's
`arm_nn_requantize`): a real factor r is stored as an int32 multiplier M and a shift e with
r ≈ M · 2^(e − 31), |M| ∈ [2^30, 2^31) (M = 0 for r = 0). Applying it to an int32 x:

    left  = max(e, 0), right = max(−e, 0)
    x'    = sat32(x · 2^left)                         (saturating; defined for every x)
    h     = SRDHM(x', M)                              (saturating rounding doubling high multiply)
    y     = RDBPOT(h, right)                          (rounding divide by 2^right, ties away from 0)

    SRDHM(a, b) = INT32_MAX if a = b = INT32_MIN, else trunc0((a·b + nudge) / 2^31),
                  nudge = 2^30 if a·b ≥ 0 else 1 − 2^30          (64-bit product, C's `/`;
                  i.e. round to nearest, ties toward +∞)
    RDBPOT(x, n) = (x >> n) + ((x & (2^n − 1)) > ((2^n − 1) >> 1) + (x < 0))   (arithmetic >>)

Negative multipliers are allowed (LayerNorm's γ may be negative, Sub negates one operand): M → −M
negates the result except at exact ties of SRDHM (off by one there). Shifts are kept in [−31, 30] by `quantize_multiplier`: a factor below
2^−32 becomes M = 0. Everything here is exact integer arithmetic on int64 numpy arrays, so a C
implementation with int32/int64 types reproduces it bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

QMIN, QMAX = -128, 127
INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1
SYMMETRIC_RATIO = 0.82  # zero_point 0 when that costs ≤ 10 % of the int8 resolution (see choose_qparams)


@dataclass(frozen=True)
class QParams:
    """Per-tensor int8 activation quantization: real = scale · (q − zero_point)."""

    scale: float
    zero_point: int

    def quantize(self, x: np.ndarray) -> np.ndarray:
        return np.clip(np.round(np.asarray(x, np.float64) / self.scale) + self.zero_point, QMIN, QMAX).astype(np.int8)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return ((q.astype(np.float64) - self.zero_point) * self.scale).astype(np.float32)

    @property
    def range(self) -> tuple[float, float]:
        return (QMIN - self.zero_point) * self.scale, (QMAX - self.zero_point) * self.scale


def choose_qparams(lo: float, hi: float) -> QParams:
    """int8 parameters covering [lo, hi] ∪ {0} (0 must be exact: it is the padding value).

    Symmetric (zero_point 0) when the range is nearly balanced — it saves the zero-point terms in the
    matmul kernels and costs ≤ 10 % resolution; asymmetric otherwise (after ReLU/GELU/softmax half
    the int8 codes would be wasted).
    """
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-8:
        return QParams(1e-8 / 255, 0) if hi == lo else QParams((hi - lo) / 255, 0)
    small, big = sorted((-lo, hi))
    if small / big >= SYMMETRIC_RATIO:
        return QParams(big / 127.0, 0)
    scale = (hi - lo) / 255.0
    zero_point = int(np.clip(round(QMIN - lo / scale), QMIN, QMAX))
    return QParams(scale, zero_point)


def quantize_weight(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel int8 weights along `axis` (codes ±127); returns (q, scales)."""
    w = np.asarray(w, np.float64)
    reduce = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
    amax = np.max(np.abs(w), axis=reduce) if reduce else np.abs(w)
    scales = np.where(amax > 0, amax / 127.0, 1.0)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scales.reshape(shape)), -127, 127).astype(np.int8)
    return q, scales


def quantize_multiplier(real) -> tuple[np.ndarray, np.ndarray]:
    """Real factors → (int32 multipliers, shifts) with real ≈ M · 2^(shift − 31); see module doc."""
    real = np.atleast_1d(np.asarray(real, np.float64))
    mults = np.zeros(real.shape, np.int64)
    shifts = np.zeros(real.shape, np.int64)
    for i, r in enumerate(real.flat):
        if r == 0.0 or not math.isfinite(r):
            continue
        frac, exp = math.frexp(abs(r))  # |r| = frac · 2^exp, frac ∈ [0.5, 1)
        m = round(frac * 2 ** 31)
        if m == 2 ** 31:
            m, exp = m // 2, exp + 1
        if exp < -31:  # below 2^-32: contributes nothing after rounding
            continue
        if exp > 30:
            raise ValueError(f"requantization factor {r:g} is too large for the int8 scheme")
        mults.flat[i], shifts.flat[i] = (m if r > 0 else -m), exp
    return mults.astype(np.int32), shifts.astype(np.int32)


def _trunc_div_pow2(x: np.ndarray, n: int) -> np.ndarray:
    """x / 2^n truncated toward zero (C's integer division), int64."""
    return np.where(x >= 0, x >> n, -((-x) >> n))


def srdhm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Saturating rounding doubling high multiply of int32 values (gemmlowp), as int64."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    out = _trunc_div_pow2(ab + nudge, 31)
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, out)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """x / 2^exponent rounded to nearest, ties away from zero (gemmlowp RoundingDivideByPOT), int64."""
    x, exponent = np.asarray(x, np.int64), np.asarray(exponent, np.int64)
    mask = (np.int64(1) << exponent) - 1
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + ((x & mask) > threshold)


def sat32(x: np.ndarray) -> np.ndarray:
    return np.clip(x, INT32_MIN, INT32_MAX)


def multiply_by_quantized_multiplier(x, multiplier, shift) -> np.ndarray:
    """Requantize int32 `x` by (M, shift), broadcasting per-channel arrays; int64 result in int32 range."""
    x = np.asarray(x, np.int64)
    shift = np.asarray(shift, np.int64)
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    return rounding_divide_by_pot(srdhm(sat32(x << left), multiplier), right)


def requantize(acc, multiplier, shift, zero_point: int) -> np.ndarray:
    """int32 accumulator → int8: clamp(zero_point + MBQM(acc, M, shift), −128, 127)."""
    return np.clip(multiply_by_quantized_multiplier(acc, multiplier, shift) + zero_point, QMIN, QMAX).astype(np.int8)


def div_round(a, b) -> np.ndarray:
    """a / b for b > 0, rounded to nearest with ties away from zero: sign(a)·((|a| + b/2) / b) in C."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    return np.sign(a) * ((np.abs(a) + b // 2) // b)


def isqrt(n) -> np.ndarray:
    """floor(√n) of non-negative int64 values — unique, so any exact C algorithm agrees."""
    n = np.asarray(n, np.int64)
    r = np.floor(np.sqrt(n.astype(np.float64))).astype(np.int64)
    r = np.where(r * r > n, r - 1, r)  # float64 √ can be off by one above 2^52
    return np.where((r + 1) * (r + 1) <= n, r + 1, r)
