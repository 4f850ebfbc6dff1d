"""fold-batchnorm: BN folded into the linear node before or after it; where a fold would be wrong the
linear node is left alone and the BN becomes the exact per-channel Mul+Add fallback instead."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from edgevit.ir import graph as G
from edgevit.passes.fold_batchnorm import PASS

from .helpers import apply_pass, random_weight

HEADER = '<ir_version: 8, opset_import: ["" : 17]>\n'


def build(text: str, **weights: np.ndarray) -> onnx.ModelProto:
    """A model from ONNX text whose inputs named in `weights` become initializers; shapes inferred.

    Declare a weight as a graph input in the text; it is moved to an initializer here, so the text
    stays short. Name it with a trailing `_input` to keep it an overridable graph input as well.
    """
    model = onnx.parser.parse_model(HEADER + text)
    for name, array in weights.items():
        model.graph.initializer.append(onnx.numpy_helper.from_array(array, name))
        if not name.endswith("_input"):
            keep = [i for i in model.graph.input if i.name != name]
            del model.graph.input[:]
            model.graph.input.extend(keep)
    model = G.infer_shapes(model)
    onnx.checker.check_model(model, full_check=True)
    return model


def bn(c: int, seed: int = 1, prefix: str = "") -> dict[str, np.ndarray]:
    """Non-trivial BN parameters (scale, bias, mean, positive var) for `c` channels."""
    rng = np.random.default_rng(seed)
    return {f"{prefix}s": rng.uniform(0.5, 1.5, c).astype(np.float32),
            f"{prefix}b": rng.normal(0, 0.5, c).astype(np.float32),
            f"{prefix}m": rng.normal(0, 0.5, c).astype(np.float32),
            f"{prefix}v": rng.uniform(0.5, 2.0, c).astype(np.float32)}


def assert_close(outcome, rel: float = 1e-5) -> None:
    assert outcome.parity.max_abs <= rel * max(outcome.parity.ref_range, 1.0), outcome.parity


def test_bn_after_grouped_padded_conv_folds():
    m = build("""
        g (float[1,4,8,8] x, float[6,2,3,3] w, float[6] cb, float[6] s, float[6] b, float[6] m, float[6] v)
            => (float[1,6,8,8] y) {
            c = Conv<pads=[1,1,1,1], group=2>(x, w, cb)
            y = BatchNormalization<epsilon=0.001>(c, s, b, m, v)
        }""", w=random_weight((6, 2, 3, 3)), cb=random_weight(6, 2), **bn(6))
    out = apply_pass(PASS, m)
    assert out.matches == 1 and out.ops() == ["Conv"]
    assert_close(out)


def test_bn_after_conv_without_bias_folds():
    m = build("""
        g (float[1,3,6,6] x, float[5,3,1,1] w, float[5] s, float[5] b, float[5] m, float[5] v)
            => (float[1,5,6,6] y) {
            c = Conv(x, w)
            y = BatchNormalization(c, s, b, m, v)
        }""", w=random_weight((5, 3, 1, 1)), **bn(5))
    out = apply_pass(PASS, m)
    assert out.matches == 1 and out.ops() == ["Conv"]
    assert_close(out)


def test_bn_after_grouped_conv_transpose_folds():
    m = build("""
        g (float[1,4,5,5] x, float[4,3,3,3] w, float[6] s, float[6] b, float[6] m, float[6] v)
            => (float[1,6,11,11] y) {
            c = ConvTranspose<strides=[2,2], group=2>(x, w)
            y = BatchNormalization(c, s, b, m, v)
        }""", w=random_weight((4, 3, 3, 3)), **bn(6))
    out = apply_pass(PASS, m)
    assert out.matches == 1 and out.ops() == ["ConvTranspose"]
    assert_close(out)


def test_bn_after_gemm_with_trans_b_and_beta_folds():
    m = build("""
        g (float[2,8] x, float[5,8] w, float[5] cb, float[5] s, float[5] b, float[5] m, float[5] v)
            => (float[2,5] y) {
            c = Gemm<transB=1, alpha=0.7, beta=0.5>(x, w, cb)
            y = BatchNormalization(c, s, b, m, v)
        }""", w=random_weight((5, 8)), cb=random_weight(5, 3), **bn(5))
    out = apply_pass(PASS, m)
    assert out.matches == 1 and out.ops() == ["Gemm"]
    assert_close(out)


def test_bn_after_2d_matmul_becomes_gemm():
    m = build("""
        g (float[3,8] x, float[8,5] w, float[5] s, float[5] b, float[5] m, float[5] v) => (float[3,5] y) {
            c = MatMul(x, w)
            y = BatchNormalization(c, s, b, m, v)
        }""", w=random_weight((8, 5)), **bn(5))
    out = apply_pass(PASS, m)
    assert out.matches == 1 and out.ops() == ["Gemm"]
    assert_close(out)


def test_bn_before_unpadded_grouped_conv_folds():
    m = build("""
        g (float[1,4,7,7] x, float[6,2,3,3] w, float[6] cb, float[4] s, float[4] b, float[4] m, float[4] v)
            => (float[1,6,5,5] y) {
            n = BatchNormalization(x, s, b, m, v)
            y = Conv<group=2>(n, w, cb)
        }""", w=random_weight((6, 2, 3, 3)), cb=random_weight(6, 2), **bn(4))
    out = apply_pass(PASS, m)
    assert out.matches == 1 and out.ops() == ["Conv"]
    assert_close(out)


def test_bn_before_gemm_head_folds():
    m = build("""
        g (float[2,8] x, float[10,8] w, float[10] cb, float[8] s, float[8] b, float[8] m, float[8] v)
            => (float[2,10] y) {
            n = BatchNormalization(x, s, b, m, v)
            y = Gemm<transB=1>(n, w, cb)
        }""", w=random_weight((10, 8)), cb=random_weight(10, 2), **bn(8))
    out = apply_pass(PASS, m)
    assert out.matches == 1 and out.ops() == ["Gemm"]
    assert_close(out)


def test_bn_before_2d_matmul_becomes_gemm():
    m = build("""
        g (float[2,8] x, float[8,4] w, float[8] s, float[8] b, float[8] m, float[8] v) => (float[2,4] y) {
            n = BatchNormalization(x, s, b, m, v)
            y = MatMul(n, w)
        }""", w=random_weight((8, 4)), **bn(8))
    out = apply_pass(PASS, m)
    assert out.matches == 1 and out.ops() == ["Gemm"]
    assert_close(out)


def test_bn1d_after_flattened_batched_matmul_folds():
    # timm LeViT LinearNorm: MatMul (B, N, K)@(K, C) → Flatten(0, 1) to (B·N, C) → BatchNorm1d → Reshape.
    m = build("""
        g (float[2,4,8] x, float[8,5] w, float[5] s, float[5] b, float[5] m, float[5] v, int64[3] shape)
            => (float[2,4,5] y) {
            c = MatMul(x, w)
            f = Flatten<axis=2>(c)
            n = BatchNormalization<epsilon=0.001>(f, s, b, m, v)
            y = Reshape(n, shape)
        }""", w=random_weight((8, 5)), shape=np.array([2, 4, 5], np.int64), **bn(5))
    out = apply_pass(PASS, m)
    assert out.matches == 1 and out.ops() == ["MatMul", "Add", "Flatten", "Reshape"]
    assert_close(out)


def test_bn1d_after_reshaped_batched_matmul_folds():
    m = build("""
        g (float[1,6,8] x, float[8,4] w, float[4] s, float[4] b, float[4] m, float[4] v,
           int64[2] flat, int64[3] shape) => (float[1,6,4] y) {
            c = MatMul(x, w)
            f = Reshape(c, flat)
            n = BatchNormalization(f, s, b, m, v)
            y = Reshape(n, shape)
        }""", w=random_weight((8, 4)), flat=np.array([-1, 4], np.int64), shape=np.array([1, 6, 4], np.int64),
        **bn(4))
    out = apply_pass(PASS, m)
    assert out.matches == 1 and out.ops() == ["MatMul", "Add", "Reshape", "Reshape"]
    assert_close(out)


def test_standalone_bn_becomes_mul_add():
    # BN after a residual Add has no linear node to fold into: the exact per-channel affine map remains.
    m = build("""
        g (float[1,4,5,5] x, float[1,4,5,5] r, float[4] s, float[4] b, float[4] m, float[4] v)
            => (float[1,4,5,5] y) {
            a = Add(x, r)
            y = BatchNormalization<epsilon=0.001>(a, s, b, m, v)
        }""", **bn(4))
    out = apply_pass(PASS, m)
    assert out.matches == 1 and out.ops() == ["Add", "Mul", "Add"]
    scale = next(i for i in out.after.graph.initializer if i.name.endswith("_bn_scale"))
    assert list(scale.dims) == [4, 1, 1]
    assert_close(out)


# --- where the fold must not fire -------------------------------------------------------------------

def assert_untouched(m: onnx.ModelProto, *ops: str) -> None:
    """Nothing rewritten at all: not even the Mul+Add fallback applies."""
    out = apply_pass(PASS, m)
    assert out.matches == 0, out.ops()
    assert out.ops() == list(ops)
    assert out.parity.max_abs == 0.0


def assert_bn_left_as_mul_add(m: onnx.ModelProto, *ops: str) -> None:
    """The fold is refused: the linear node keeps its original weights, the BN becomes Mul+Add."""
    out = apply_pass(PASS, m)
    assert out.ops() == list(ops)
    before = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    for node in out.after.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul"):
            assert node.input[1] in before, f"{node.op_type} weight {node.input[1]} was rewritten"
    assert_close(out)


def test_runtime_bn_mean_is_not_folded():
    m = build("""
        g (float[1,3,6,6] x, float[4] m, float[4,3,1,1] w, float[4] s, float[4] b, float[4] v)
            => (float[1,4,6,6] y) {
            c = Conv(x, w)
            y = BatchNormalization(c, s, b, m, v)
        }""", w=random_weight((4, 3, 1, 1)), **{k: a for k, a in bn(4).items() if k != "m"})
    assert_untouched(m, "Conv", "BatchNormalization")


def test_overridable_bn_parameters_are_not_folded():
    # Initializers that are also graph inputs can be replaced at run time: not constants.
    p = bn(4)
    m = build("""
        g (float[1,3,6,6] x, float[4,3,1,1] w, float[4] s_input, float[4] b, float[4] m, float[4] v)
            => (float[1,4,6,6] y) {
            c = Conv(x, w)
            y = BatchNormalization(c, s_input, b, m, v)
        }""", w=random_weight((4, 3, 1, 1)), s_input=p.pop("s"), **p)
    assert_untouched(m, "Conv", "BatchNormalization")


def test_bn_before_padded_conv_is_not_folded():
    # The padded border reads 0 after BN, but would read BN(0) = t after folding.
    m = build("""
        g (float[1,4,6,6] x, float[5,4,3,3] w, float[4] s, float[4] b, float[4] m, float[4] v)
            => (float[1,5,6,6] y) {
            n = BatchNormalization(x, s, b, m, v)
            y = Conv<pads=[1,1,1,1]>(n, w)
        }""", w=random_weight((5, 4, 3, 3)), **bn(4))
    assert_bn_left_as_mul_add(m, "Mul", "Add", "Conv")


def test_conv_output_with_another_consumer_is_not_folded():
    m = build("""
        g (float[1,3,6,6] x, float[4,3,1,1] w, float[4] s, float[4] b, float[4] m, float[4] v)
            => (float[1,4,6,6] y, float[1,4,6,6] r) {
            c = Conv(x, w)
            y = BatchNormalization(c, s, b, m, v)
            r = Relu(c)
        }""", w=random_weight((4, 3, 1, 1)), **bn(4))
    assert_bn_left_as_mul_add(m, "Conv", "Mul", "Add", "Relu")


def test_bn_after_batched_matmul_is_not_folded():
    # (B, T, C) @ (C, N) → (B, T, N): BN's axis 1 is T, not the weight's output dim.
    m = build("""
        g (float[2,3,8] x, float[8,3] w, float[3] s, float[3] b, float[3] m, float[3] v) => (float[2,3,3] y) {
            c = MatMul(x, w)
            y = BatchNormalization(c, s, b, m, v)
        }""", w=random_weight((8, 3)), **bn(3))
    assert_bn_left_as_mul_add(m, "MatMul", "Mul", "Add")


def test_bn1d_after_flatten_merging_the_feature_axis_is_not_folded():
    # (1, 4, 2) flattened at axis 1 is (1, 8): BN's 8 channels mix tokens and features, not W's columns.
    m = build("""
        g (float[1,4,3] x, float[3,2] w, float[8] s, float[8] b, float[8] m, float[8] v) => (float[1,8] y) {
            c = MatMul(x, w)
            f = Flatten<axis=1>(c)
            y = BatchNormalization(f, s, b, m, v)
        }""", w=random_weight((3, 2)), **bn(8))
    assert_bn_left_as_mul_add(m, "MatMul", "Flatten", "Mul", "Add")


def test_training_mode_bn_is_not_folded():
    # Batch statistics, not the stored ones: no fixed affine map to fold (onnxscript's rule folds it).
    m = build("""
        g (float[1,3,6,6] x, float[4,3,1,1] w, float[4] s, float[4] b, float[4] m, float[4] v)
            => (float[1,4,6,6] y) {
            c = Conv(x, w)
            y, rm, rv = BatchNormalization<training_mode=1>(c, s, b, m, v)
        }""", w=random_weight((4, 3, 1, 1)), **bn(4))
    irm = ir.from_proto(m)
    assert PASS.run(irm) == 0
    assert [n.op_type for n in irm.graph] == ["Conv", "BatchNormalization"]
