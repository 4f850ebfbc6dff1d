"""Each integer op against its float op on the same (dequantized) int8 inputs.

The bound asserted for each op is its documented error in output LSBs (what the integer arithmetic
adds on top of the int8 grid), measured here on seeded random inputs:
  conv2d / linear / matmul / avgpool / reduce_mean / rescale / mul: ≤ 0.75 LSB (one requantization:
      SRDHM then RDBPOT round twice, 0.5 + 0.5·2^-right, as in TFLite)
  add: ≤ 1 LSB (three requantizations);  lut (GELU, Hardswish, Sigmoid): ≤ 0.5 LSB (exact table)
  softmax: ≤ 1/256 absolute (≤ 1 output LSB);  layernorm: ≤ 1.5 LSB;  maxpool, data moves: exact
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgevit.quant import integer_ops as K
from edgevit.quant.scheme import QParams, choose_qparams, quantize_multiplier, quantize_weight

RNG = np.random.default_rng(0)
REQUANT = 0.75 + 1e-3
ONE_ROUNDING = 0.5 + 1e-3


def rand_q(shape, lo=-2.0, hi=3.0):
    """Random int8 codes and their (asymmetric) parameters."""
    qp = choose_qparams(lo, hi)
    return RNG.integers(-128, 128, shape).astype(np.int8), qp


def lsb_error(out_q: np.ndarray, qo: QParams, ref: np.ndarray) -> float:
    """Max error in output LSBs, ignoring values the int8 output range clips anyway."""
    lo, hi = qo.range
    inside = (ref >= lo) & (ref <= hi)
    return float(np.max(np.abs(qo.dequantize(out_q) - ref)[inside]) / qo.scale)


def out_params(ref: np.ndarray) -> QParams:
    return choose_qparams(float(ref.min()), float(ref.max()))


@pytest.mark.parametrize("group,stride,pad", [(1, 1, 1), (1, 2, 0), (8, 1, 1)])
def test_conv2d(group, stride, pad):
    x, qx = rand_q((1, 8, 9, 9))
    w, ws = quantize_weight(RNG.standard_normal((16, 8 // group, 3, 3)), 0)
    bias = RNG.integers(-2000, 2000, 16).astype(np.int32)
    wf = torch.from_numpy(w * ws.reshape(-1, 1, 1, 1))
    bf = torch.from_numpy(bias * qx.scale * ws)
    ref = F.conv2d(torch.from_numpy(qx.dequantize(x).astype(np.float64)), wf, bf, stride, pad, groups=group).numpy()
    qo = out_params(ref)
    m, s = quantize_multiplier(qx.scale * ws / qo.scale)
    out = K.conv2d(x, qx.zero_point, w, bias, m, s, qo.zero_point, [stride] * 2, [pad] * 4, [1, 1], group)
    assert out.shape == ref.shape and lsb_error(out, qo, ref) <= REQUANT


def test_linear_and_matmul():
    x, qx = rand_q((2, 5, 24))
    w, ws = quantize_weight(RNG.standard_normal((24, 12)), 1)
    bias = RNG.integers(-500, 500, 12).astype(np.int32)
    ref = qx.dequantize(x).astype(np.float64) @ (w * ws) + bias * qx.scale * ws
    qo = out_params(ref)
    m, s = quantize_multiplier(qx.scale * ws / qo.scale)
    assert lsb_error(K.linear(x, qx.zero_point, w, bias, m, s, qo.zero_point), qo, ref) <= REQUANT

    b, qb = rand_q((2, 24, 7), -1.0, 0.5)
    alpha = 0.125
    ref = alpha * qx.dequantize(x).astype(np.float64) @ qb.dequantize(b)
    qo = out_params(ref)
    m, s = quantize_multiplier(alpha * qx.scale * qb.scale / qo.scale)
    out = K.matmul(x, qx.zero_point, b, qb.zero_point, m, s, qo.zero_point)
    assert lsb_error(out, qo, ref) <= REQUANT


@pytest.mark.parametrize("sign", [1, -1])
def test_add_and_sub(sign):
    a, qa = rand_q((4, 33), -1.0, 1.0)
    b, qb = rand_q((4, 33), -4.0, 0.5)
    ref = qa.dequantize(a).astype(np.float64) + sign * qb.dequantize(b)
    qo = out_params(ref)
    twice = 2 * max(qa.scale, qb.scale)
    am, ash = quantize_multiplier(qa.scale / twice)
    bm, bsh = quantize_multiplier(sign * qb.scale / twice)
    om, osh = quantize_multiplier(twice / (2 ** K.ADD_LEFT_SHIFT * qo.scale))
    out = K.add(a, qa.zero_point, b, qb.zero_point, am, ash, bm, bsh, om, osh, qo.zero_point)
    assert lsb_error(out, qo, ref) <= 1.0


def test_mul_and_rescale():
    a, qa = rand_q((3, 40), -1.0, 2.0)
    b, qb = rand_q((3, 40), 0.0, 1.0)
    ref = qa.dequantize(a).astype(np.float64) * qb.dequantize(b)
    qo = out_params(ref)
    m, s = quantize_multiplier(qa.scale * qb.scale / qo.scale)
    assert lsb_error(K.mul(a, qa.zero_point, b, qb.zero_point, m, s, qo.zero_point), qo, ref) <= REQUANT
    qo = choose_qparams(-3.0, 5.0)
    m, s = quantize_multiplier(qa.scale / qo.scale)
    ref = qa.dequantize(a).astype(np.float64)
    assert lsb_error(K.rescale(a, qa.zero_point, m, s, qo.zero_point), qo, ref) <= REQUANT


@pytest.mark.parametrize("name,f", [
    ("gelu", lambda v: 0.5 * v * (1 + np.vectorize(math.erf)(v / math.sqrt(2)))),
    ("hardswish", lambda v: v * np.clip(v / 6 + 0.5, 0, 1)),
    ("sigmoid", lambda v: 1 / (1 + np.exp(-v))),
])
def test_lut_is_exact_to_half_an_lsb(name, f):
    codes = np.arange(-128, 128).astype(np.int8)
    qx = choose_qparams(-6.0, 6.0)
    ref = f(qx.dequantize(codes).astype(np.float64))
    qo = out_params(ref)
    table = qo.quantize(ref)
    assert lsb_error(K.lut(codes, table), qo, ref) <= ONE_ROUNDING


@pytest.mark.parametrize("scale", [0.02, 0.08, 0.3])
def test_softmax_error_at_most_one_output_step(scale):
    x = RNG.integers(-128, 128, (6, 49)).astype(np.int8)
    x[0] = 0  # uniform row
    x[1, 3] = 127  # one dominant logit
    ref = torch.softmax(torch.from_numpy((x.astype(np.float64)) * scale), -1).numpy()
    table = np.round(2 ** K.SOFTMAX_EXP_BITS * np.exp(-scale * np.arange(256))).astype(np.int32)
    got = (K.softmax(x, table).astype(np.float64) - K.SOFTMAX_OUT_ZP) * K.SOFTMAX_OUT_SCALE
    assert np.max(np.abs(got - ref)) <= 1 / 256 + 1e-9


@pytest.mark.parametrize("spread", [0.05, 1.0])
def test_layernorm_within_one_and_a_half_lsb(spread):
    c = 96
    qx = choose_qparams(-8.0, 8.0)
    x = np.clip(RNG.standard_normal((10, c)) * spread * 40 + RNG.standard_normal((10, 1)) * 20, -128, 127)
    x = x.astype(np.int8)
    gamma, beta = RNG.uniform(-1.5, 1.5, c), RNG.uniform(-0.5, 0.5, c)
    xf = torch.from_numpy(qx.dequantize(x).astype(np.float64))
    ref = F.layer_norm(xf, (c,), torch.from_numpy(gamma), torch.from_numpy(beta), 1e-5).numpy()
    qo = out_params(ref)
    m, s = quantize_multiplier(gamma / (2 ** K.LN_OUT_BITS * qo.scale))
    beta_q = np.round(beta / qo.scale).astype(np.int32)
    eps_q = int(round(1e-5 * 2 ** K.LN_VAR_BITS / qx.scale ** 2))
    assert lsb_error(K.layernorm(x, m, s, beta_q, eps_q, qo.zero_point), qo, ref) <= 1.5


def test_pooling():
    x, qx = rand_q((1, 4, 8, 8))
    xf = torch.from_numpy(qx.dequantize(x).astype(np.float64))
    ref = F.avg_pool2d(xf, 2, 2).numpy()
    qo = out_params(ref)
    m, s = quantize_multiplier(qx.scale / (4 * qo.scale))
    assert lsb_error(K.avgpool(x, qx.zero_point, m, s, qo.zero_point, [2, 2], [2, 2], [0, 0, 0, 0]), qo, ref) \
        <= REQUANT
    ref = xf.mean(dim=(2, 3)).numpy()
    qo = out_params(ref)
    m, s = quantize_multiplier(qx.scale / (64 * qo.scale))
    assert lsb_error(K.reduce_mean(x, qx.zero_point, m, s, qo.zero_point, [2, 3], False), qo, ref) <= REQUANT
    got = K.maxpool(x, [3, 3], [2, 2], [1, 1, 1, 1], [1, 1])
    assert np.array_equal(got, F.max_pool2d(torch.from_numpy(x.astype(np.float32)), 3, 2, 1).numpy().astype(np.int8))


def test_accumulator_overflow_is_refused():
    with pytest.raises(OverflowError):
        K.linear(np.full((1, 70000), 127, np.int8), -128, np.full((70000, 1), 127, np.int8),
                 np.zeros(1, np.int32), np.array([2 ** 30], np.int32), np.array([0], np.int32), 0)
