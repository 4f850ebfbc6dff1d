"""fold-layer-scale: per-channel constant Mul/Div folded into adjacent weights; refused off-axis."""

from __future__ import annotations

import numpy as np

from edgevit.passes.fold_layer_scale import PASS

from .helpers import apply_pass, assert_refused, random_weight
from .test_fold_batchnorm import build


def gamma(*shape: int, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.5, 1.5, shape).astype(np.float32)


def assert_close(outcome, rel: float = 1e-5) -> None:
    assert outcome.parity.max_abs <= rel * max(outcome.parity.ref_range, 1.0), outcome.parity


def test_layer_scale_after_grouped_conv_folds():
    m = build("""
        g (float[1,4,6,6] x, float[6,2,3,3] w, float[6] b, float[6,1,1] ls) => (float[1,6,6,6] y) {
            c = Conv<pads=[1,1,1,1], group=2>(x, w, b)
            y = Mul(c, ls)
        }""", w=random_weight((6, 2, 3, 3)), b=random_weight(6, 1), ls=gamma(6, 1, 1))
    out = apply_pass(PASS, m)
    assert out.matches == 1 and out.ops() == ["Conv"]
    assert_close(out)


def test_constant_first_mul_and_div_fold():
    m = build("""
        g (float[1,4,6,6] x, float[4,4,1,1] w, float[1,4,1,1] ls, float[4,4,1,1] w2, float[4,1,1] d)
            => (float[1,4,6,6] y) {
            c = Conv(x, w)
            s = Mul(ls, c)
            c2 = Conv(s, w2)
            y = Div(c2, d)
        }""", w=random_weight((4, 4, 1, 1)), ls=gamma(1, 4, 1, 1), w2=random_weight((4, 4, 1, 1), 2),
        d=gamma(4, 1, 1, seed=3))
    out = apply_pass(PASS, m)
    assert out.matches == 2 and out.ops() == ["Conv", "Conv"]
    assert_close(out)


def test_scale_before_padded_grouped_conv_folds():
    # Zero padding scaled is still zero; each grouped weight slot takes the scale of the channel it reads.
    m = build("""
        g (float[1,4,6,6] x, float[1,4,1,1] ls, float[6,2,3,3] w) => (float[1,6,6,6] y) {
            s = Mul(x, ls)
            y = Conv<pads=[1,1,1,1], group=2>(s, w)
        }""", ls=gamma(1, 4, 1, 1), w=random_weight((6, 2, 3, 3)))
    out = apply_pass(PASS, m)
    assert out.matches == 1 and out.ops() == ["Conv"]
    assert_close(out)


def test_transformer_linear_with_bias_add_and_layer_scale_folds():
    # (B, T, C) tokens: MatMul + bias Add, then γ on the channel (last) axis.
    m = build("""
        g (float[2,5,8] x, float[8,6] w, float[6] b, float[6] ls) => (float[2,5,6] y) {
            p = MatMul(x, w)
            q = Add(b, p)
            y = Mul(q, ls)
        }""", w=random_weight((8, 6)), b=random_weight(6, 1), ls=gamma(6))
    out = apply_pass(PASS, m)
    assert out.matches == 1 and out.ops() == ["MatMul", "Add"]
    assert_close(out)


def test_gemm_and_conv_transpose_scales_fold():
    m = build("""
        g (float[2,8] x, float[8,3] w, float[3] b, float[1,3] ls, float[1,4,5,5] z, float[4,2,3,3] wt, float[4,1,1] lt)
            => (float[2,3] y, float[1,4,7,7] u) {
            c = Gemm<alpha=0.5, beta=2.0>(x, w, b)
            y = Mul(c, ls)
            t = ConvTranspose<group=2>(z, wt)
            u = Mul(t, lt)
        }""", w=random_weight((8, 3)), b=random_weight(3, 1), ls=gamma(1, 3), wt=random_weight((4, 2, 3, 3), 2),
        lt=gamma(4, 1, 1, seed=4))
    out = apply_pass(PASS, m)
    assert out.matches == 2 and out.ops() == ["Gemm", "ConvTranspose"]
    assert_close(out)


def test_scalar_before_batched_matmul_folds():
    # The 0.5 of an exported erf-GELU, right before the next Linear.
    m = build("""
        g (float[2,5,8] x, float half, float[8,6] w) => (float[2,5,6] y) {
            h = Mul(x, half)
            y = MatMul(h, w)
        }""", half=np.array(0.5, np.float32), w=random_weight((8, 6)))
    out = apply_pass(PASS, m)
    assert out.matches == 1 and out.ops() == ["MatMul"]
    assert_close(out)


# --- where the fold must not fire -------------------------------------------------------------------


def test_spatially_varying_constant_is_not_folded():
    m = build("""
        g (float[1,4,6,6] x, float[4,4,1,1] w, float[1,1,6,6] ls) => (float[1,4,6,6] y) {
            c = Conv(x, w)
            y = Mul(c, ls)
        }""", w=random_weight((4, 4, 1, 1)), ls=gamma(1, 1, 6, 6))
    assert_refused(PASS, m)


def test_token_axis_scale_after_batched_matmul_is_not_folded():
    # (B, T, C) * (T, 1): scales tokens, not the weight's output channels.
    m = build("""
        g (float[2,5,8] x, float[8,6] w, float[5,1] ls) => (float[2,5,6] y) {
            p = MatMul(x, w)
            y = Mul(p, ls)
        }""", w=random_weight((8, 6)), ls=gamma(5, 1))
    assert_refused(PASS, m)


def test_rank_growing_constant_is_not_folded():
    m = build("""
        g (float[1,4,6,6] x, float[4,4,1,1] w, float[1,1,4,1,1] ls) => (float[1,1,4,6,6] y) {
            c = Conv(x, w)
            y = Mul(c, ls)
        }""", w=random_weight((4, 4, 1, 1)), ls=gamma(1, 1, 4, 1, 1))
    assert_refused(PASS, m)


def test_conv_output_with_another_consumer_is_not_folded():
    m = build("""
        g (float[1,4,6,6] x, float[4,4,1,1] w, float[4,1,1] ls) => (float[1,4,6,6] y, float[1,4,6,6] r) {
            c = Conv(x, w)
            y = Mul(c, ls)
            r = Relu(c)
        }""", w=random_weight((4, 4, 1, 1)), ls=gamma(4, 1, 1))
    assert_refused(PASS, m)


def test_runtime_scale_is_not_folded():
    m = build("""
        g (float[1,4,6,6] x, float[4,1,1] ls, float[4,4,1,1] w) => (float[1,4,6,6] y) {
            c = Conv(x, w)
            y = Mul(c, ls)
        }""", w=random_weight((4, 4, 1, 1)))
    assert_refused(PASS, m)


def test_constant_divided_by_conv_is_not_folded():
    m = build("""
        g (float[1,4,6,6] x, float[4,4,1,1] w, float[4,1,1] ls) => (float[1,4,6,6] y) {
            c = Conv(x, w)
            y = Div(ls, c)
        }""", w=random_weight((4, 4, 1, 1)), ls=gamma(4, 1, 1))
    assert_refused(PASS, m)


def test_scale_before_gemm_with_trans_a_is_not_folded():
    m = build("""
        g (float[8,2] x, float[1,2] ls, float[8,3] w) => (float[2,3] y) {
            s = Mul(x, ls)
            y = Gemm<transA=1>(s, w)
        }""", ls=gamma(1, 2), w=random_weight((8, 3)))
    assert_refused(PASS, m)
