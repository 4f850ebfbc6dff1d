"""Integer semantics of every op of the int8 MCU runtime — this module is the specification.

Every tensor is int8 with per-tensor (scale s, zero point z); weights are per-channel symmetric int8;
biases int32. Accumulators are int32: the quantizer only builds layers whose worst case fits
(K·255·127 < 2^31, i.e. reduction length K < 66 000), and `_accumulate` asserts it. `MBQM` and
`requantize` are `scheme.multiply_by_quantized_multiplier` / `scheme.requantize`; all rounding is
spelled out there. No floating point is used at run time: the float factors of the graph live only in
(multiplier, shift) pairs and lookup tables computed offline by the quantizer.

Ops (real factor of each multiplier in brackets; s_x input scale, s_o output scale):

conv2d       acc[o] = bias[o] + Σ (x − z_x)·w[o] over the receptive field (padding with z_x, i.e. 0)
             y = requantize(acc, M[o], e[o], z_o)                            [s_x·s_w[o]/s_o]
             groups > 1 (depthwise when groups = C) restrict the sum to the group's input channels.
linear       the same with x (…, K) and w (K, N): acc[n] = bias[n] + Σ_k (x_k − z_x)·w[k, n]
matmul       two activations: acc = Σ_k (a − z_a)(b − z_b); y = requantize(acc, M, e, z_o)
                                                                           [α·s_a·s_b/s_o]
             α: a constant scalar factor folded in (attention's 1/√d).
add          TFLite/CMSIS-NN int8 add: a' = MBQM((a − z_a)·2^20, M_a, e_a), b' likewise,
             y = clamp(z_o + MBQM(a' + b', M_o, e_o))     [s_a/2m, ±s_b/2m, 2m/(2^20·s_o)], m = max(s_a, s_b)
             Sub is add with a negative M_b. A constant operand is an int8 tensor with its own (s, z).
mul          acc = (a − z_a)(b − z_b); y = requantize(acc, M, e, z_o)          [s_a·s_b/s_o]
rescale      y = requantize(x − z_x, M, e, z_o)                               [s_x/s_o]
             (Concat inputs whose parameters differ from the output's.)
lut          y = table[x + 128]: any elementwise function of one int8 tensor (GELU, ReLU, ReLU6/Clip,
             Hardswish, Hardsigmoid, Sigmoid, Tanh, scalar Mul/Div/Add/Sub/Pow). The 256-entry int8
             table is computed offline as quantize_o(f(dequantize_x(q))), so it is the best int8
             answer: error ≤ ½ output LSB, a constant 256 bytes of flash and one load per element.
             This replaces I-ViT's ShiftGELU (which approximates GELU by x·σ(1.702x) with shifts, error
             ~1e-2) at equal or lower cost — a table is only impossible when the input is wider than
             8 bits, which never happens here.
softmax      over the last axis of int8 scores x (output fixed: s_o = 1/256, z_o = −128):
             d = max(x) − x ∈ [0, 255];  e = exp_table[d] = round(2^15·exp(−s_x·d))  (uint16 table)
             S = Σ e (int32);  y = clamp(((e·256 + S/2) / S) − 128, −128, 127)   (integer division)
             Same role as I-ViT's Shiftmax (exp of the max-subtracted logits, integer normalisation);
             the exp comes from a table over the 256 possible differences instead of shift-based
             2^x, which makes it exact to 2^-15 per term; the only errors are the 1/256 output step.
layernorm    over the last axis (n values), I-LayerNorm with an exact mean and integer square root:
             S = Σ x, P = Σ x² (int32, n < 131 072);  d = n·x − S (int32, = n·(x − mean) exactly)
             v = div_round((n·P − S²)·2^16, n²) + eps_q   (int64; v = 2^16·variance in input LSB²,
                 eps_q = round(ε·2^16/s_x²))
             σ = max(isqrt(v), 1)                         (2^8·std in input LSBs)
             R = div_round(2^36, n·σ)  (int64, once per row);  u = RDBPOT(d·R, 16)  (int64 product;
                 u = 2^12·x̂, the normalised value with 12 fractional bits)
             y[c] = clamp(z_o + β_q[c] + MBQM(u, M[c], e[c]))   [γ[c]/(2^12·s_o)], β_q = round(β/s_o)
             (I-ViT's I-LayerNorm also uses an integer √ and a per-row integer reciprocal; keeping the
             mean exact — d = n·x − S rather than x − round(mean) — matters when the std is a few LSBs.)
avgpool      acc = Σ (x − z_x) over the window / axes (count elements, padding counts as 0)
             y = requantize(acc, M, e, z_o)                                   [s_x/(count·s_o)]
             (AveragePool, GlobalAveragePool, ReduceMean.)
maxpool      max over the window, padding −128; output keeps the input's (s, z).
data moves   reshape/flatten/squeeze/unsqueeze, transpose, gather and slice with constant indices,
             split: pure index operations on int8 codes; outputs keep the input's (s, z).
concat       concatenation after `rescale` of each input whose (s, z) differs from the output's.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .scheme import (INT32_MAX, INT32_MIN, QMAX, QMIN, div_round, isqrt, multiply_by_quantized_multiplier, requantize,
                     rounding_divide_by_pot)

ADD_LEFT_SHIFT = 20
SOFTMAX_EXP_BITS = 15  # exp table entries are round(2^15 · exp(−s·d)), fit uint16
SOFTMAX_OUT_SCALE, SOFTMAX_OUT_ZP = 1.0 / 256, -128
LN_VAR_BITS = 16  # fractional bits of the variance (σ then has 8)
LN_OUT_BITS = 12  # fractional bits of the normalised value u
LN_RECIP_BITS = 16  # extra fractional bits of the per-row reciprocal R


def _accumulate(a: np.ndarray, b: np.ndarray, subscripts: str | None = None) -> np.ndarray:
    """Exact integer product-sum of int operands (via float64, exact below 2^53), checked to fit int32."""
    fa, fb = a.astype(np.float64), b.astype(np.float64)
    acc = (np.einsum(subscripts, fa, fb) if subscripts else np.matmul(fa, fb)).astype(np.int64)
    if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        raise OverflowError("int32 accumulator overflow")
    return acc


def _windows(x: np.ndarray, kernel, strides, pads, dilations, pad_value: int) -> np.ndarray:
    """(N, C, H, W) → (N, C, OH, OW, kh, kw) receptive fields, padded with `pad_value`."""
    t, l, b, r = pads
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=pad_value)
    kh, kw = kernel
    dh, dw = dilations
    win = sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    return win[:, :, ::strides[0], ::strides[1], ::dh, ::dw]


def conv2d(x, x_zp, w, bias, mult, shift, out_zp, strides, pads, dilations, group) -> np.ndarray:
    n, c = x.shape[:2]
    cout, cg, kh, kw = w.shape
    win = _windows(x, (kh, kw), strides, pads, dilations, x_zp).astype(np.int64) - x_zp
    oh, ow = win.shape[2:4]
    win = win.reshape(n, group, cg, oh, ow, kh, kw)
    wg = w.reshape(group, cout // group, cg, kh, kw)
    acc = _accumulate(win, wg, "ngchwij,gocij->ngohw").reshape(n, cout, oh, ow) + bias.reshape(1, -1, 1, 1)
    return requantize(acc, mult.reshape(1, -1, 1, 1), shift.reshape(1, -1, 1, 1), out_zp)


def linear(x, x_zp, w, bias, mult, shift, out_zp) -> np.ndarray:
    acc = _accumulate(x.astype(np.int64) - x_zp, w) + bias
    return requantize(acc, mult, shift, out_zp)


def matmul(a, a_zp, b, b_zp, mult, shift, out_zp) -> np.ndarray:
    acc = _accumulate(a.astype(np.int64) - a_zp, b.astype(np.int64) - b_zp)
    return requantize(acc, mult, shift, out_zp)


def add(a, a_zp, b, b_zp, a_mult, a_shift, b_mult, b_shift, out_mult, out_shift, out_zp) -> np.ndarray:
    a_s = multiply_by_quantized_multiplier((a.astype(np.int64) - a_zp) << ADD_LEFT_SHIFT, a_mult, a_shift)
    b_s = multiply_by_quantized_multiplier((b.astype(np.int64) - b_zp) << ADD_LEFT_SHIFT, b_mult, b_shift)
    return requantize(a_s + b_s, out_mult, out_shift, out_zp)


def mul(a, a_zp, b, b_zp, mult, shift, out_zp) -> np.ndarray:
    return requantize((a.astype(np.int64) - a_zp) * (b.astype(np.int64) - b_zp), mult, shift, out_zp)


def rescale(x, x_zp, mult, shift, out_zp) -> np.ndarray:
    return requantize(x.astype(np.int64) - x_zp, mult, shift, out_zp)


def lut(x, table) -> np.ndarray:
    return table[x.astype(np.int64) - QMIN]


def softmax(x, exp_table) -> np.ndarray:
    x = x.astype(np.int64)
    e = exp_table[x.max(axis=-1, keepdims=True) - x].astype(np.int64)
    total = e.sum(axis=-1, keepdims=True)
    return np.clip((e * 256 + total // 2) // total + SOFTMAX_OUT_ZP, QMIN, QMAX).astype(np.int8)


def layernorm(x, mult, shift, beta_q, eps_q, out_zp) -> np.ndarray:
    x = x.astype(np.int64)
    n = x.shape[-1]
    total = x.sum(axis=-1, keepdims=True)
    d = n * x - total
    spread = n * (x * x).sum(axis=-1, keepdims=True) - total * total
    var = div_round(spread << LN_VAR_BITS, n * n) + eps_q
    sigma = np.maximum(isqrt(var), 1)
    recip = div_round(np.int64(1) << (LN_VAR_BITS // 2 + LN_OUT_BITS + LN_RECIP_BITS), n * sigma)
    u = rounding_divide_by_pot(d * recip, LN_RECIP_BITS)
    return np.clip(out_zp + beta_q + multiply_by_quantized_multiplier(u, mult, shift), QMIN, QMAX).astype(np.int8)


def avgpool(x, x_zp, mult, shift, out_zp, kernel, strides, pads) -> np.ndarray:
    win = _windows(x, kernel, strides, pads, (1, 1), x_zp).astype(np.int64) - x_zp
    return requantize(win.sum(axis=(-2, -1)), mult, shift, out_zp)


def reduce_mean(x, x_zp, mult, shift, out_zp, axes, keepdims: bool) -> np.ndarray:
    acc = (x.astype(np.int64) - x_zp).sum(axis=tuple(axes), keepdims=keepdims)
    return requantize(acc, mult, shift, out_zp)


def maxpool(x, kernel, strides, pads, dilations) -> np.ndarray:
    return _windows(x, kernel, strides, pads, dilations, QMIN).max(axis=(-2, -1)).astype(np.int8)
