"""The MIL evaluator, op by op: every ONNX lowering (one node → MIL) evaluated with numpy vs onnxruntime,
MIL ops that only coremltools' passes emit vs numpy references, weight decompression vs coremltools' own,
and the FP16 emulation semantics."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgevit.backends.coreml import coremltools
from edgevit.backends.coreml import evaluate as E
from edgevit.backends.coreml.lower import lower, mil_name
from edgevit.ir import graph as G
from edgevit.ir.numerics import run_ort
from edgevit.passes.fuse_attention import PASS as FUSE_ATTENTION

from . import node_model
from ...passes.helpers import apply_pass
from ...passes.test_fuse_attention import POSITIVE, _mha

ct = coremltools()
RNG = np.random.default_rng(7)


def W(*shape, scale=0.5):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def I64(*v):
    return np.array(v, np.int64)


X4 = {"x": [2, 4, 9, 9]}
CASES = {
    # convolution family
    "conv3x3": ("Conv", X4, {"w": W(6, 4, 3, 3), "b": W(6)}, dict(pads=[1, 1, 1, 1])),
    "conv-stride2-asym-pad": ("Conv", X4, {"w": W(5, 4, 3, 3)}, dict(strides=[2, 2], pads=[0, 1, 1, 0])),
    "conv-grouped": ("Conv", X4, {"w": W(6, 2, 3, 3)}, dict(group=2, pads=[1, 1, 1, 1])),
    "conv-depthwise": ("Conv", X4, {"w": W(4, 1, 7, 7), "b": W(4)}, dict(group=4, pads=[3, 3, 3, 3])),
    "conv-depthwise-x2": ("Conv", X4, {"w": W(8, 1, 3, 3)}, dict(group=4, strides=[2, 2], pads=[1, 1, 1, 1])),
    "conv-dilated": ("Conv", X4, {"w": W(3, 4, 3, 3)}, dict(dilations=[2, 2], pads=[2, 2, 2, 2])),
    "conv-same-upper": ("Conv", X4, {"w": W(3, 4, 4, 4)}, dict(auto_pad="SAME_UPPER", strides=[2, 2])),
    "conv1d": ("Conv", {"x": [2, 4, 11]}, {"w": W(3, 4, 3)}, dict(pads=[1, 1])),
    "conv1x1-stride2": ("Conv", X4, {"w": W(7, 4, 1, 1)}, dict(strides=[2, 2])),
    "conv-transpose-s2": ("ConvTranspose", X4, {"w": W(4, 3, 4, 4), "b": W(3)}, dict(strides=[2, 2], pads=[1, 1, 1, 1])),
    "conv-transpose-3x3": ("ConvTranspose", X4, {"w": W(4, 2, 3, 3)}, dict(pads=[1, 1, 1, 1])),
    # linear algebra
    "matmul-const→linear": ("MatMul", {"x": [2, 5, 8]}, {"w": W(8, 6)}, {}),
    "matmul-4d-const": ("MatMul", {"x": [2, 3, 5, 8]}, {"w": W(8, 6)}, {}),
    "matmul-vars": ("MatMul", {"x": [2, 3, 5, 8], "y": [2, 3, 8, 4]}, {}, {}),
    "matmul-broadcast": ("MatMul", {"x": [2, 3, 5, 8], "y": [8, 4]}, {}, {}),
    "gemm": ("Gemm", {"x": [3, 8]}, {"w": W(6, 8), "c": W(6)}, dict(transB=1, alpha=0.5, beta=2.0)),
    "gemm-noT": ("Gemm", {"x": [3, 8]}, {"w": W(8, 6)}, {}),
    # elementwise
    "add-bcast": ("Add", {"x": [2, 4, 3, 3]}, {"c": W(4, 1, 1)}, {}),
    "sub-vars": ("Sub", {"x": [2, 4, 3, 3], "y": [1, 4, 1, 3]}, {}, {}),
    "mul-scalar": ("Mul", {"x": [2, 4, 3]}, {"c": np.float32(0.7)}, {}),
    "div-const-first": ("Div", {"x": [2, 4, 3]}, {"c": W(3)}, dict(input_order=["c", "x"])),
    "pow2": ("Pow", {"x": [2, 4, 3]}, {"c": np.float32(2.0)}, {}),
    "pow3": ("Pow", {"x": [2, 4, 3]}, {"c": np.float32(3.0)}, {}),
    "max": ("Max", {"x": [2, 4], "y": [2, 4]}, {}, {}),
    "min": ("Min", {"x": [2, 4], "y": [2, 4]}, {}, {}),
    "relu": ("Relu", {"x": [2, 4, 5]}, {}, {}),
    "sigmoid": ("Sigmoid", {"x": [2, 4, 5]}, {}, {}),
    "tanh": ("Tanh", {"x": [2, 4, 5]}, {}, {}),
    "erf": ("Erf", {"x": [2, 4, 5]}, {}, {}),
    "exp": ("Exp", {"x": [2, 4, 5]}, {}, {}),
    "abs": ("Abs", {"x": [2, 4, 5]}, {}, {}),
    "neg": ("Neg", {"x": [2, 4, 5]}, {}, {}),
    "softplus": ("Softplus", {"x": [2, 4, 5]}, {}, {}),
    "hardsigmoid": ("HardSigmoid", {"x": [2, 4, 5]}, {}, dict(alpha=0.3, beta=0.4)),
    "hardswish": ("HardSwish", {"x": [2, 4, 5]}, {}, {}),
    "leakyrelu": ("LeakyRelu", {"x": [2, 4, 5]}, {}, dict(alpha=0.1)),
    "clip-relu6": ("Clip", {"x": [2, 4, 5]}, {"lo": np.float32(0), "hi": np.float32(6)}, {}),
    "clip": ("Clip", {"x": [2, 4, 5]}, {"lo": np.float32(-0.5), "hi": np.float32(0.25)}, {}),
    "gelu-exact": ("Gelu", {"x": [2, 4, 5]}, {}, dict(opset=20)),
    "gelu-tanh": ("Gelu", {"x": [2, 4, 5]}, {}, dict(opset=20, approximate="tanh")),
    # normalization, softmax, reductions, pooling
    "softmax": ("Softmax", {"x": [2, 3, 7]}, {}, dict(axis=-1)),
    "softmax-axis1": ("Softmax", {"x": [2, 3, 7]}, {}, dict(axis=1)),
    "layernorm": ("LayerNormalization", {"x": [2, 5, 8]}, {"g": W(8), "b": W(8)}, dict(axis=-1, epsilon=1e-6)),
    "layernorm-chw": ("LayerNormalization", {"x": [2, 3, 4, 4]}, {"g": W(3, 4, 4)}, dict(axis=1)),
    "instancenorm": ("InstanceNormalization", X4, {"g": W(4), "b": W(4)}, {}),
    "batchnorm": ("BatchNormalization", X4, {"g": W(4), "b": W(4), "m": W(4), "v": np.abs(W(4)) + 0.5}, {}),
    "reducemean": ("ReduceMean", X4, {}, dict(axes=[2, 3], keepdims=0)),
    "reducemean-18": ("ReduceMean", X4, {"axes": I64(1)}, dict(opset=18)),
    "reducesum": ("ReduceSum", X4, {"axes": I64(-1)}, dict(keepdims=1)),
    "reducemax": ("ReduceMax", X4, {}, dict(axes=[1], keepdims=0)),
    "reducel2": ("ReduceL2", X4, {}, dict(axes=[1], keepdims=1)),
    "globalavgpool": ("GlobalAveragePool", X4, {}, {}),
    "avgpool-exclude-pad": ("AveragePool", X4, {}, dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0)),
    "avgpool-include-pad": ("AveragePool", X4, {}, dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                                                            count_include_pad=1)),
    "avgpool-ceil": ("AveragePool", X4, {}, dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)),
    "avgpool-1d": ("AveragePool", {"x": [2, 4, 16]}, {}, dict(kernel_shape=[4], strides=[4])),
    "maxpool": ("MaxPool", X4, {}, dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    "maxpool-ceil": ("MaxPool", X4, {}, dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)),
    # layout
    "reshape": ("Reshape", X4, {"s": I64(2, 0, -1)}, {}),
    "flatten": ("Flatten", X4, {}, dict(axis=1)),
    "squeeze": ("Squeeze", {"x": [2, 1, 5]}, {"a": I64(1)}, {}),
    "unsqueeze": ("Unsqueeze", {"x": [2, 5]}, {"a": I64(1, 3)}, {}),
    "transpose": ("Transpose", X4, {}, dict(perm=[0, 2, 3, 1])),
    "concat": ("Concat", {"x": [2, 3, 4], "y": [2, 5, 4]}, {"c": W(2, 1, 4)}, dict(axis=1)),
    "split-sizes": ("Split", {"x": [2, 9, 4]}, {"s": I64(2, 3, 4)}, dict(axis=1, n_outputs=3)),
    "split-even": ("Split", {"x": [2, 9, 6]}, {}, dict(axis=-1, n_outputs=3)),
    "slice": ("Slice", X4, {"s": I64(1, 2), "e": I64(3, 100), "a": I64(1, 3)}, {}),
    "slice-steps": ("Slice", X4, {"s": I64(0, 8), "e": I64(9, -100), "a": I64(2, 3), "st": I64(2, -3)}, {}),
    "gather-contiguous→slice": ("Gather", X4, {"i": I64(1, 2, 3)}, dict(axis=1)),
    "gather-scalar": ("Gather", X4, {"i": np.array(2, np.int64)}, dict(axis=1)),
    "gather-indices": ("Gather", X4, {"i": I64(3, 0, 0, 2)}, dict(axis=1)),
    "expand": ("Expand", {"x": [1, 4, 1]}, {"s": I64(2, 1, 4, 5)}, {}),
    "pad-constant": ("Pad", X4, {"p": I64(0, 0, 1, 2, 0, 0, 2, 1), "v": np.float32(0.5)}, {}),
    "pad-reflect": ("Pad", X4, {"p": I64(0, 0, 1, 2, 0, 0, 2, 1)}, dict(mode="reflect")),
    "pad-edge": ("Pad", X4, {"p": I64(0, 0, 1, 1, 0, 0, 1, 1)}, dict(mode="edge")),
    "resize-nearest-x2": ("Resize", X4, {"roi": np.zeros(0, np.float32), "sc": np.array([1, 1, 2, 2], np.float32)},
                          dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")),
    "resize-linear-up": ("Resize", X4, {"roi": np.zeros(0, np.float32), "sc": np.array([1, 1, 2, 2], np.float32)},
                         dict(mode="linear", coordinate_transformation_mode="half_pixel")),
    "resize-linear-down": ("Resize", {"x": [2, 4, 8, 8]}, {"roi": np.zeros(0, np.float32),
                                                            "sc": np.array([1, 1, .5, .5], np.float32)},
                           dict(mode="linear", coordinate_transformation_mode="half_pixel")),
    "resize-align-corners": ("Resize", X4, {"roi": np.zeros(0, np.float32), "sc": np.array([1, 1, 2, 2], np.float32)},
                             dict(mode="linear", coordinate_transformation_mode="align_corners")),
}


def _model(case) -> onnx.ModelProto:
    op, inputs, consts, attrs = CASES[case]
    attrs = dict(attrs)
    opset = attrs.pop("opset", 17)
    n_out = attrs.pop("n_outputs", 1)
    order = attrs.pop("input_order", None)
    if op == "Clip":
        order = ["x", "lo", "hi"]
    if op == "Resize":
        order = ["x", "roi", "sc"]
    return node_model(op, inputs, consts, n_outputs=n_out, opset=opset, input_order=order, **attrs)


def run_both(model: onnx.ModelProto, force_fp16=False):
    """(onnxruntime outputs, evaluator outputs of the lowered MIL program, lowering)."""
    feeds = G.seeded_inputs(model, G.static_input_shapes(model), 3)
    ref = run_ort(model, feeds)
    low = lower(model, ct.target.iOS16)
    got = E.evaluate(low.program, {mil_name(k): v for k, v in feeds.items()}, force_fp16=force_fp16)
    return ref, [got[o["name"]] for o in low.outputs], low


@pytest.mark.parametrize("case", list(CASES))
def test_lowering_and_evaluator_match_onnxruntime(case):
    ref, got, _ = run_both(_model(case))
    assert len(ref) == len(got)
    for r, g in zip(ref, got):
        assert g.shape == r.shape
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(r).max())))


@pytest.mark.parametrize("case", list(POSITIVE))
def test_attention_lowered_directly(case):
    """edgevit.Attention (from the fuse-attention pass, run by onnxruntime through its function body)."""
    body, weights, _, _ = POSITIVE[case]
    inputs = "float[1,2,5,4] q, float[1,2,5,4] v" if "kt" in weights else \
        "float[1,2,5,4] q, float[1,2,5,4] k, float[1,2,5,4] v"
    fused = apply_pass(FUSE_ATTENTION, _mha(body, inputs=inputs, **weights)).after
    assert any(n.op_type == "Attention" for n in fused.graph.node)
    ref, got, low = run_both(fused)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-5)
    kinds = {r["rewrite"] for r in low.rewrites}
    assert "attention head split" in kinds  # 2 heads → two single-head chains
    if "k, " in inputs:
        assert "transpose→matmul flag" in kinds


def test_attention_channels_first_with_bias_unsplit():
    from ...passes.test_fuse_attention import _shsa  # noqa: F401  (SHViT-style graphs are covered by the zoo tests)

    text = """kt = Transpose <perm = [0, 2, 1]> (k)
    s = MatMul(q, kt)
    scaled = Mul(s, c)
    biased = Add(scaled, bias)
    p = Softmax <axis = -1> (biased)
    pt = Transpose <perm = [0, 2, 1]> (p)
    y = MatMul(v, pt)"""
    model = _mha(text, inputs="float[1,6,3] q, float[1,6,3] k, float[1,5,6] v", outputs="float[1,5,6] y",
                 c=np.float32(0.3), bias=W(6, 6))
    fused = apply_pass(FUSE_ATTENTION, model).after
    (node,) = [n for n in fused.graph.node if n.op_type == "Attention"]
    assert any(a.name == "channels_first" and a.i == 1 for a in node.attribute)
    ref, got, low = run_both(fused)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-5)
    assert "attention scale→query" in {r["rewrite"] for r in low.rewrites}  # 6 keys > 3 channels


# ----------------------------------------------------------------- ops only coremltools' passes emit
def _mil(build, shape=(2, 4, 5, 5)):
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=shape)], opset_version=ct.target.iOS16)
    def prog(x):
        return build(mb, x)
    return prog


X = RNG.standard_normal((2, 4, 5, 5)).astype(np.float32)
PASS_OPS = {
    "cast-fp16": (lambda mb, x: mb.cast(x=x, dtype="fp16"), lambda x: x.astype(np.float16)),
    "silu": (lambda mb, x: mb.silu(x=x), lambda x: x / (1 + np.exp(-x))),
    "square": (lambda mb, x: mb.square(x=x), lambda x: x * x),
    "rsqrt": (lambda mb, x: mb.rsqrt(x=mb.abs(x=x), epsilon=1e-3), lambda x: 1 / np.sqrt(np.abs(x) + 1e-3)),
    "relu6": (lambda mb, x: mb.relu6(x=mb.mul(x=x, y=8.0)), lambda x: np.clip(8 * x, 0, 6)),
    "linear_activation": (lambda mb, x: mb.linear_activation(x=x, alpha=2.0, beta=-1.0), lambda x: 2 * x - 1),
    "squeeze/expand_dims": (lambda mb, x: mb.squeeze(x=mb.expand_dims(x=x, axes=[0]), axes=[0]), lambda x: x),
    "tile": (lambda mb, x: mb.tile(x=x, reps=[1, 2, 1, 1]), lambda x: np.tile(x, (1, 2, 1, 1))),
    "upsample_bilinear": (lambda mb, x: mb.upsample_bilinear(x=x, scale_factor_height=2, scale_factor_width=2,
                                                             align_corners=True), None),
}


@pytest.mark.parametrize("case", list(PASS_OPS))
def test_pass_emitted_ops_match_numpy(case):
    build, reference = PASS_OPS[case]
    got = list(E.evaluate(_mil(build), {"x": X}).values())[0]
    if reference is None:  # align_corners bilinear ×2 equals resize with STRICT_ALIGN_CORNERS
        reference = lambda x: E.resize_bilinear(x, 10, 10, "STRICT_ALIGN_CORNERS")  # noqa: E731
        assert got[0, 0, 0, 0] == pytest.approx(X[0, 0, 0, 0]) and got[0, 0, -1, -1] == pytest.approx(X[0, 0, -1, -1])
    np.testing.assert_allclose(got.astype(np.float32), reference(X).astype(np.float32), rtol=1e-5, atol=1e-6)


def test_unknown_op_is_refused_by_name():
    prog = _mil(lambda mb, x: mb.cumsum(x=x, axis=1))
    with pytest.raises(E.EvaluationError, match="cumsum"):
        E.evaluate(prog, {"x": X})


# ----------------------------------------------------------------------------- FP16 emulation
def test_fp16_emulation_rounds_every_op_output():
    prog = _mil(lambda mb, x: mb.mul(x=mb.add(x=x, y=np.float32(1e-3)), y=np.float32(3.0)))
    got = list(E.evaluate(prog, {"x": X}, force_fp16=True).values())[0]
    step = (X.astype(np.float16).astype(np.float32) + np.float16(1e-3).astype(np.float32)).astype(np.float16)
    expect = (step.astype(np.float32) * 3.0).astype(np.float16)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, expect)
    exact = list(E.evaluate(prog, {"x": X}).values())[0]
    assert exact.dtype == np.float32 and not np.array_equal(exact, got.astype(np.float32))


# ------------------------------------------------------------------------- weight decompression
def test_lut_and_affine_dequantization_match_coremltools():
    from coremltools.converters.mil.mil.ops.defs.iOS16.constexpr_ops import (constexpr_affine_dequantize,
                                                                             constexpr_lut_to_dense)
    from coremltools.optimize import _utils as optimize_utils

    for nbits in (4, 6):
        lut = RNG.standard_normal(2 ** nbits).astype(np.float16)
        idx = RNG.integers(0, 2 ** nbits, 3 * 5 * 7).astype(np.uint8)
        packed = optimize_utils.pack_elements_into_bits(idx, nbits)
        shape = np.array([3, 5, 7], np.uint32)
        np.testing.assert_array_equal(E.constexpr_lut_to_dense(packed, lut, shape),
                                      constexpr_lut_to_dense.decompress(lut, packed, shape))
        np.testing.assert_array_equal(E.unpack_bits(packed, nbits, idx.size), idx)
    q = RNG.integers(-127, 128, (6, 4)).astype(np.int8)
    scale, zp = np.abs(W(6)) + 0.01, np.zeros(6, np.int8)
    np.testing.assert_allclose(E.constexpr_affine_dequantize(q, zp, scale, 0),
                               constexpr_affine_dequantize.decompress(q, zp, scale, 0), rtol=1e-6)
