"""reparameterize-branches: parallel conv/BN/identity branches summed → one Conv; refused where illegal."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from edgevit.frontend.export import export
from edgevit.frontend.source import resolve
from edgevit.ir import graph as G
from edgevit.ir.numerics import Parity, run_ort
from edgevit.passes import fold_batchnorm
from edgevit.passes.reparameterize_branches import PASS

from .helpers import apply_pass, assert_refused, random_weight
from .test_fold_batchnorm import bn, build


def weights(**shapes) -> dict[str, np.ndarray]:
    return {name: random_weight(shape, seed) for seed, (name, shape) in enumerate(shapes.items())}


def assert_close(outcome, rel: float = 1e-5) -> None:
    assert outcome.parity.max_abs <= rel * max(outcome.parity.ref_range, 1.0), outcome.parity


def test_repvgg_block_becomes_one_conv():
    # 3×3 conv+BN, 1×1 conv+BN and a BN-only identity branch, summed by a chain of Adds.
    m = build("""
        g (float[1,4,8,8] x, float[4,4,3,3] w3, float[4,4,1,1] w1,
           float[4] as, float[4] ab, float[4] am, float[4] av, float[4] bs, float[4] bb, float[4] bm, float[4] bv,
           float[4] s, float[4] b, float[4] m, float[4] v) => (float[1,4,8,8] y) {
            c3 = Conv<pads=[1,1,1,1]>(x, w3)
            n3 = BatchNormalization(c3, as, ab, am, av)
            c1 = Conv(x, w1)
            n1 = BatchNormalization(c1, bs, bb, bm, bv)
            id = BatchNormalization(x, s, b, m, v)
            a = Add(n3, n1)
            t = Add(a, id)
            y = Relu(t)
        }""", **weights(w3=(4, 4, 3, 3), w1=(4, 4, 1, 1)), **bn(4, 1, "a"), **bn(4, 2, "b"), **bn(4, 3))
    out = apply_pass(PASS, m)
    assert out.matches == 1 and out.ops() == ["Conv", "Relu"]
    assert_close(out)


def test_depthwise_block_with_nary_sum_and_plain_identity():
    m = build("""
        g (float[1,6,7,7] x, float[6,1,3,3] w3, float[6] b3, float[6,1,1,1] w1, float[6] b1) => (float[1,6,7,7] y) {
            c3 = Conv<pads=[1,1,1,1], group=6>(x, w3, b3)
            c1 = Conv<group=6>(x, w1, b1)
            y = Sum(c3, x, c1)
        }""", **weights(w3=(6, 1, 3, 3), b3=6, w1=(6, 1, 1, 1), b1=6))
    out = apply_pass(PASS, m)
    assert out.matches == 1 and out.ops() == ["Conv"]
    assert_close(out)


def test_strided_large_and_small_kernels_merge():
    # FastViT's ReparamLargeKernelConv: 7×7 and 3×3, stride 2, depth multiplier 2 (group = C_in).
    m = build("""
        g (float[1,4,9,9] x, float[8,1,7,7] w7, float[8] b7, float[8,1,3,3] w3, float[8] b3) => (float[1,8,5,5] y) {
            c7 = Conv<pads=[3,3,3,3], strides=[2,2], group=4>(x, w7, b7)
            c3 = Conv<pads=[1,1,1,1], strides=[2,2], group=4>(x, w3, b3)
            y = Add(c7, c3)
        }""", **weights(w7=(8, 1, 7, 7), b7=8, w3=(8, 1, 3, 3), b3=8))
    out = apply_pass(PASS, m)
    assert out.matches == 1 and out.ops() == ["Conv"]
    assert_close(out)


def test_fastvit_repmixer_becomes_one_depthwise_conv():
    # x + γ·(mixer(x) − norm(x)), mixer = BN(x) + dw1×1(x) + dw3×3(x), norm = BN(x).
    m = build("""
        g (float[1,4,6,6] x, float[4,1,3,3] w3, float[4] b3, float[4,1,1,1] w1, float[4] b1, float[4,1,1] gamma,
           float[4] as, float[4] ab, float[4] am, float[4] av, float[4] s, float[4] b, float[4] m, float[4] v)
            => (float[1,4,6,6] y) {
            i = BatchNormalization(x, as, ab, am, av)
            c1 = Conv<group=4>(x, w1, b1)
            c3 = Conv<pads=[1,1,1,1], group=4>(x, w3, b3)
            p = Add(c1, i)
            mixer = Add(p, c3)
            norm = BatchNormalization(x, s, b, m, v)
            d = Sub(mixer, norm)
            ls = Mul(d, gamma)
            y = Add(x, ls)
        }""", **weights(w3=(4, 1, 3, 3), b3=4, w1=(4, 1, 1, 1), b1=4),
        gamma=np.float32([0.5, 1.5, -0.7, 1.1]).reshape(4, 1, 1), **bn(4, 1, "a"), **bn(4, 2))
    out = apply_pass(PASS, m)
    assert out.matches == 1 and out.ops() == ["Conv"]
    assert_close(out)


# --- where the merge must not fire ------------------------------------------------------------------


def test_depthwise_and_dense_branches_stay_apart():
    m = build("""
        g (float[1,4,6,6] x, float[4,1,3,3] wd, float[4,4,1,1] w1) => (float[1,4,6,6] y) {
            cd = Conv<pads=[1,1,1,1], group=4>(x, wd)
            c1 = Conv(x, w1)
            y = Add(cd, c1)
        }""", **weights(wd=(4, 1, 3, 3), w1=(4, 4, 1, 1)))
    assert_refused(PASS, m)


def test_different_dilations_stay_apart():
    m = build("""
        g (float[1,4,8,8] x, float[4,4,3,3] wa, float[4,4,3,3] wb) => (float[1,4,8,8] y) {
            a = Conv<pads=[1,1,1,1]>(x, wa)
            b = Conv<pads=[2,2,2,2], dilations=[2,2]>(x, wb)
            y = Add(a, b)
        }""", **weights(wa=(4, 4, 3, 3), wb=(4, 4, 3, 3)))
    assert_refused(PASS, m)


def test_branch_read_elsewhere_is_not_merged():
    m = build("""
        g (float[1,4,6,6] x, float[4,4,3,3] w3, float[4,4,1,1] w1) => (float[1,4,6,6] y, float[1,4,6,6] z) {
            c3 = Conv<pads=[1,1,1,1]>(x, w3)
            c1 = Conv(x, w1)
            y = Add(c3, c1)
            z = Relu(c3)
        }""", **weights(w3=(4, 4, 3, 3), w1=(4, 4, 1, 1)))
    assert_refused(PASS, m)


def test_runtime_weight_is_not_merged():
    m = build("""
        g (float[1,4,6,6] x, float[4,4,1,1] w1, float[4,4,3,3] w3) => (float[1,4,6,6] y) {
            c3 = Conv<pads=[1,1,1,1]>(x, w3)
            c1 = Conv(x, w1)
            y = Add(c3, c1)
        }""", w3=random_weight((4, 4, 3, 3)))
    assert_refused(PASS, m)


def test_plain_residual_is_left_alone():
    m = build("""
        g (float[1,4,6,6] x, float[4,4,3,3] w) => (float[1,4,6,6] y) {
            c = Conv<pads=[1,1,1,1]>(x, w)
            r = Relu(c)
            y = Add(x, r)
        }""", w=random_weight((4, 4, 3, 3)))
    assert_refused(PASS, m)


# --- exported timm models: training-time branches, no PyTorch reparameterize() ----------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobileone_s0", "fastvit_t8", "repvit_m0_9"])
def test_exported_model_reparameterizes_to_plain_convs(name):
    model = export(resolve(name), (64, 64), samples=1).model
    irm = ir.from_proto(model)
    merged = PASS.run(irm)
    folded = fold_batchnorm.PASS.run(irm)
    after = ir.to_proto(irm)
    onnx.checker.check_model(after, full_check=True)

    before_ops = Counter(n.op_type for n in model.graph.node)
    after_ops = Counter(n.op_type for n in after.graph.node)
    assert before_ops["BatchNormalization"] > 0 and after_ops["BatchNormalization"] == 0, after_ops
    assert merged >= 20, merged
    assert len(after.graph.node) <= 0.8 * len(model.graph.node), (len(model.graph.node), len(after.graph.node))

    parity = Parity()
    shapes = G.static_input_shapes(model)
    for seed in range(2):
        feeds = G.seeded_inputs(model, shapes, seed)
        for r, g in zip(run_ort(model, feeds), run_ort(after, feeds)):
            parity.update(r, g)
    assert parity.within(1e-4), parity
    print(f"{name}: {len(model.graph.node)} → {len(after.graph.node)} nodes, BN {before_ops['BatchNormalization']} → 0, "
          f"merges {merged}, BN folds {folded}, max abs {parity.max_abs:.2e} (range {parity.ref_range:.3g})")
