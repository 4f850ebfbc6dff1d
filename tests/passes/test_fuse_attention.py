"""fuse-attention: variants that must fuse, look-alikes that must not, and real zoo exports."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgevit.frontend.export import export
from edgevit.frontend.source import resolve
from edgevit.passes.fuse_attention import PASS

from .helpers import apply_pass, model_from_text, random_weight


def _inits(**arrays) -> str:
    """Initializers in ONNX text syntax (float32, or int64 for integer arrays)."""
    def one(name, a):
        a = np.asarray(a)
        kind = "int64" if a.dtype.kind == "i" else "float"
        dims = f"[{','.join(map(str, a.shape))}]" if a.ndim else ""
        return f"{kind}{dims} {name} = {{{', '.join(repr(v.item()) for v in a.ravel())}}}"
    return "<" + ", ".join(one(n, a) for n, a in arrays.items()) + ">"


def _mha(body: str, inputs="float[1,2,5,4] q, float[1,2,5,4] k, float[1,2,5,4] v",
         outputs="float[1,2,5,4] y", **weights) -> onnx.ModelProto:
    return model_from_text(f"""<ir_version: 8, opset_import: ["": 17]>
attention ({inputs}) => ({outputs}) {_inits(**weights) if weights else ""} {{
    {body}
}}""")


def _attention_nodes(model):
    return [n for n in model.graph.node if n.op_type == "Attention" and n.domain == "edgevit"]


def _scale(node) -> float:
    return next(a.f for a in node.attribute if a.name == "scale")


BIAS = random_weight((2, 5, 5), seed=1)
KT = random_weight((1, 2, 4, 5), seed=2)

POSITIVE = {
    "mul-scale+bias": ("""kt = Transpose <perm = [0, 1, 3, 2]> (k)
    s = MatMul(q, kt)
    scaled = Mul(s, c)
    biased = Add(scaled, bias)
    p = Softmax <axis = -1> (biased)
    y = MatMul(p, v)""", dict(c=np.float32(0.5), bias=BIAS), 0.5, "bias"),
    "div-scale": ("""kt = Transpose <perm = [0, 1, 3, 2]> (k)
    s = MatMul(q, kt)
    scaled = Div(s, c)
    p = Softmax <axis = 3> (scaled)
    y = MatMul(p, v)""", dict(c=np.float32(2.0)), 0.5, ""),
    "scaled-q+constant-kt": ("""qs = Mul(c, q)
    s = MatMul(qs, kt)
    p = Softmax(s)
    y = MatMul(p, v)""", dict(c=np.float32(0.125), kt=KT), 0.125, ""),
    "sdpa-split-scale-chain": ("""r = Sqrt(c)
    qs = Mul(q, r)
    kt = Transpose <perm = [0, 1, 3, 2]> (k)
    ks = Mul(kt, r)
    s = MatMul(qs, ks)
    p = Softmax <axis = -1> (s)
    y = MatMul(p, v)""", dict(c=np.array([0.25], np.float32)), 0.25, ""),
}


@pytest.mark.parametrize("case", list(POSITIVE))
def test_fuses_attention_variants(case):
    body, weights, scale, overload = POSITIVE[case]
    inputs = "float[1,2,5,4] q, float[1,2,5,4] v" if "kt" in weights else \
        "float[1,2,5,4] q, float[1,2,5,4] k, float[1,2,5,4] v"
    out = apply_pass(PASS, _mha(body, inputs=inputs, **weights))
    assert out.parity.max_abs < 1e-5
    assert out.matches == 1 and out.count("Softmax") == 0 and out.count("MatMul") == 0
    (node,) = _attention_nodes(out.after)
    assert _scale(node) == pytest.approx(scale, rel=1e-6)
    assert node.overload == overload
    assert {(f.name, f.overload) for f in out.after.functions} == {("Attention", overload)}


def _shsa(convs: str, **weights) -> onnx.ModelProto:
    """SHViT-style channels-first single-head attention on a 1×8×4×4 map (q, k: 4 channels, v: 8)."""
    return model_from_text(f"""<ir_version: 8, opset_import: ["": 17]>
shsa (float[1,8,4,4] x) => (float[1,8,4,4] y) {_inits(**weights)} {{
    {convs}
    q3 = Reshape(q, qk_shape)
    k3 = Reshape(k, qk_shape)
    v3 = Reshape(v, v_shape)
    qt = Transpose <perm = [0, 2, 1]> (q3)
    s = MatMul(qt, k3)
    scaled = Mul(s, c)
    p = Softmax <axis = -1> (scaled)
    pt = Transpose <perm = [0, 2, 1]> (p)
    o = MatMul(v3, pt)
    y = Reshape(o, y_shape)
}}""")


SHAPES = dict(qk_shape=np.array([1, 4, 16]), v_shape=np.array([1, 8, 16]), y_shape=np.array([1, 8, 4, 4]),
              c=np.float32(0.5))


def test_channels_first_single_head_merges_separate_projections():
    model = _shsa("""q = Conv <kernel_shape = [1, 1]> (x, wq, bq)
    k = Conv <kernel_shape = [1, 1]> (x, wk, bk)
    v = Conv <kernel_shape = [1, 1]> (x, wv, bv)""",
                  wq=random_weight((4, 8, 1, 1), 3), bq=random_weight((4,), 4), wk=random_weight((4, 8, 1, 1), 5),
                  bk=random_weight((4,), 6), wv=random_weight((8, 8, 1, 1), 7), bv=random_weight((8,), 8), **SHAPES)
    out = apply_pass(PASS, model)
    assert out.matches == 2  # the fusion and the projection merge
    assert out.count("Attention") == 1 and out.count("Softmax") == 0
    assert out.count("Conv") == 1 and out.count("Split") == 1
    (node,) = _attention_nodes(out.after)
    assert node.overload == "channels_first"
    assert out.parity.max_abs < 1e-5


def test_projections_with_different_attributes_stay_separate():
    model = _shsa("""q = Conv <kernel_shape = [1, 1]> (x, wq)
    k = Conv <kernel_shape = [1, 1]> (x, wk)
    v = Conv <kernel_shape = [3, 3], pads = [1, 1, 1, 1]> (x, wv)""",
                  wq=random_weight((4, 8, 1, 1), 3), wk=random_weight((4, 8, 1, 1), 5),
                  wv=random_weight((8, 8, 3, 3), 7), **SHAPES)
    out = apply_pass(PASS, model)
    assert out.matches == 1 and out.count("Conv") == 3 and out.count("Split") == 0
    assert out.parity.max_abs < 1e-5


NEGATIVE = {
    # softmax over the query axis: not attention over keys
    "softmax-axis-2": ("s = MatMul(q, kt)\n    p = Softmax <axis = 2> (s)", {}, ""),
    # the scale is a runtime input, not a constant
    "scale-is-input": ("s = MatMul(q, kt)\n    scaled = Mul(s, c)\n    p = Softmax(scaled)", {}, ", float c"),
    # c / scores is not a scaling of the scores
    "reversed-division": ("s = MatMul(q, kt)\n    scaled = Div(c, s)\n    p = Softmax(scaled)",
                          dict(c=np.float32(2.0)), ""),
    # a per-head scale is not one scalar
    "per-head-scale": ("s = MatMul(q, kt)\n    scaled = Mul(s, c)\n    p = Softmax(scaled)",
                       dict(c=np.array([[[0.5]], [[0.25]]], np.float32)), ""),
    # a bias that broadcasts the scores to a larger shape
    "bias-grows-scores": ("s = MatMul(q, kt)\n    b = Add(s, bias)\n    p = Softmax(b)",
                          dict(bias=random_weight((3, 2, 5, 5), 9)), ""),
}


@pytest.mark.parametrize("case", list(NEGATIVE))
def test_refuses_look_alikes(case):
    head, weights, extra_input = NEGATIVE[case]
    grown = "bias" in weights
    body = f"kt = Transpose <perm = [0, 1, 3, 2]> (k)\n    {head}\n    y = MatMul(p, v)"
    out_shape = "float[3,2,5,4] y" if grown else "float[1,2,5,4] y"
    out = apply_pass(PASS, _mha(body, inputs="float[1,2,5,4] q, float[1,2,5,4] k, float[1,2,5,4] v" + extra_input,
                                outputs=out_shape, **weights))
    assert out.matches == 0 and out.count("Softmax") == 1 and out.count("Attention") == 0


def test_refuses_when_probabilities_have_another_consumer():
    body = """kt = Transpose <perm = [0, 1, 3, 2]> (k)
    s = MatMul(q, kt)
    p = Softmax(s)
    y = MatMul(p, v)"""
    out = apply_pass(PASS, _mha(body, outputs="float[1,2,5,4] y, float[1,2,5,5] p"))
    assert out.matches == 0 and out.count("Softmax") == 1


# --- real exports (TorchScript, opset 17, onnxsim'd) -------------------------------------------------

@pytest.fixture(scope="module")
def efficientformer_l1():
    return export(resolve("efficientformer_l1"), (224, 224), samples=1).model  # biases are bound to 224


@pytest.mark.parametrize("name, size, attentions, overload", [
    ("efficientformer_l1", None, 1, "bias"),  # attention biases (heads, N, N)
    ("shvit_s1", 128, 9, "channels_first"),  # single head, one qkv conv + Split already
    ("levit_128s", 128, 11, "bias"),
    ("deit_tiny_patch16_224", 64, 12, ""),  # SDPA: √scale on Q and on Kᵀ
])
def test_zoo_attention_fully_fused(request, name, size, attentions, overload):
    model = request.getfixturevalue(name) if size is None else export(resolve(name), (size, size), samples=1).model
    out = apply_pass(PASS, model, samples=1)
    assert out.count("Softmax") == 0
    nodes = _attention_nodes(out.after)
    assert len(nodes) == attentions and {n.overload for n in nodes} == {overload}
    assert out.parity.within(1e-4), out.parity
