"""Fixed-point primitives: gemmlowp-compatible rounding, saturation and multiplier encoding."""

from __future__ import annotations

import numpy as np

from edgevit.quant.scheme import (INT32_MAX, INT32_MIN, choose_qparams, div_round, isqrt,
                                  multiply_by_quantized_multiplier, quantize_multiplier, quantize_weight,
                                  rounding_divide_by_pot, srdhm)


def test_quantize_multiplier_encodes_factor_to_31_bits():
    reals = np.array([1e-9, 3.1e-5, 0.0123, 0.5, 0.999999, 1.0, 1.7, -0.37, 250.0])
    m, s = quantize_multiplier(reals)
    assert np.all((np.abs(m) >= 2 ** 30) & (np.abs(m) < 2 ** 31))
    assert np.all(np.abs(m * 2.0 ** (s.astype(float) - 31) / reals - 1) < 2 ** -30)
    m, s = quantize_multiplier([0.0, 2.0 ** -40])  # zero, and factors below 2^-32, encode as M = 0
    assert np.all(m == 0) and np.all(s == 0)


def test_srdhm_rounds_and_saturates_like_gemmlowp():
    assert srdhm(INT32_MIN, INT32_MIN) == INT32_MAX
    assert srdhm(2 ** 30, 2 ** 30) == 2 ** 29  # (2^60 + 2^30) / 2^31 truncated
    assert srdhm(3, 2 ** 30) == 2 and srdhm(-3, 2 ** 30) == -1  # 1.5 → 2, −1.5 → −1: ties toward +∞
    assert srdhm(1, 2 ** 29) == 0 and srdhm(-1, 2 ** 29) == 0


def test_rounding_divide_by_pot_ties_away_from_zero():
    x = np.array([5, -5, 6, -6, 7, -7, 0, INT32_MAX, INT32_MIN])
    assert rounding_divide_by_pot(x, 1).tolist() == [3, -3, 3, -3, 4, -4, 0, 2 ** 30, -(2 ** 30)]
    assert rounding_divide_by_pot(x, 0).tolist() == x.tolist()


def test_requantization_matches_exact_rounding_within_one():
    rng = np.random.default_rng(0)
    acc = rng.integers(-(2 ** 24), 2 ** 24, 5000)
    for real in (0.0003, 0.0271, 0.5, 3.9):
        m, s = quantize_multiplier(real)
        got = multiply_by_quantized_multiplier(acc, m, s)
        assert np.max(np.abs(got - np.round(acc * real))) <= 1
    # factor 8 = 2^30 · 2^(4−31): the left shift by 4 saturates 2^30 to INT32_MAX instead of wrapping
    m, s = quantize_multiplier(8.0)
    assert (int(m[0]), int(s[0])) == (2 ** 30, 4)
    assert multiply_by_quantized_multiplier(np.array([2 ** 30]), m, s)[0] == 2 ** 30


def test_negative_multiplier_negates_up_to_ties():
    acc = np.arange(-1000, 1000, 7)
    m, s = quantize_multiplier(0.123)
    pos, neg = multiply_by_quantized_multiplier(acc, m, s), multiply_by_quantized_multiplier(acc, -m, s)
    assert np.max(np.abs(pos + neg)) <= 1 and np.mean(pos == -neg) > 0.99


def test_isqrt_and_div_round_are_exact():
    n = np.array([0, 1, 2, 3, 4, 15, 16, 17, 2 ** 52 + 1, 2 ** 62 - 1], np.int64)
    r = isqrt(n)
    assert np.all(r * r <= n) and np.all((r + 1) * (r + 1) > n)
    assert div_round(np.array([5, -5, 4, -4, 7]), 2).tolist() == [3, -3, 2, -2, 4]


def test_qparams_symmetric_when_balanced_asymmetric_otherwise():
    assert choose_qparams(-1.0, 0.95).zero_point == 0
    relu = choose_qparams(0.0, 6.0)
    assert relu.zero_point == -128 and abs(relu.range[1] - 6.0) < 1e-9
    q = choose_qparams(-0.3, 2.0)
    assert q.quantize(np.array([0.0]))[0] == q.zero_point  # zero is exact (padding value)
    w, scales = quantize_weight(np.array([[1.0, -0.5], [0.25, 0.1]]), 0)
    assert w.tolist() == [[127, -64], [127, 51]] and np.allclose(scales, [1 / 127, 0.25 / 127])
