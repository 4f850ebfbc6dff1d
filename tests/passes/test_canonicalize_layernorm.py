"""canonicalize-layernorm: decomposed LayerNorm → LayerNormalization; non-LayerNorm look-alikes stay."""

from __future__ import annotations


import numpy as np
import onnx
import pytest
import torch

from edgevit.frontend.export import export
from edgevit.frontend.source import resolve
from edgevit.passes.canonicalize_layernorm import PASS

from .helpers import apply_pass, export_module, model_from_text, random_weight


def _floats(a) -> str:
    return ", ".join(repr(float(v)) for v in np.asarray(a).ravel())


GAMMA, BETA = random_weight((8,), 1) + 1, random_weight((8,), 2)


def _ln_model(x_shape="2,3,8", mean_axes="<axes = [-1]>", var_axes=None, opset=17, square="Pow(d, two)",
              norm="Div(d, std)", affine=True, extra_inputs="", gamma_shape="8"):
    """x - mean over axes, divided by sqrt(var + eps), then ·γ + β."""
    var_axes = var_axes or mean_axes
    tail = "n = " + norm + ("\n    g = Mul(n, gamma)\n    y = Add(g, beta)" if affine else "\n    y = Identity(n)")
    count = int(np.prod([int(d) for d in gamma_shape.split(",")]))
    gamma = random_weight((count,), 1) + 1
    return model_from_text(f"""<ir_version: 8, opset_import: ["": {opset}]>
ln (float[{x_shape}] x{extra_inputs}) => (float[{x_shape}] y)
   <float two = {{2.0}}, float eps = {{1e-5}}, float[{gamma_shape}] gamma = {{{_floats(gamma)}}},
    float[8] beta = {{{_floats(BETA)}}}> {{
    mean = ReduceMean {mean_axes} (x)
    d = Sub(x, mean)
    sq = {square}
    var = ReduceMean {var_axes} (sq)
    ve = Add(var, eps)
    std = Sqrt(ve)
    {"r = Reciprocal(std)" if "r)" in norm else ""}
    {tail}
}}""")


def _opset(model) -> int:
    return {o.domain: o.version for o in model.opset_import}[""]


def test_decomposed_layernorm_with_affine():
    out = apply_pass(PASS, _ln_model())
    assert out.matches == 3  # normalization, then γ and β absorbed
    assert out.ops() == ["LayerNormalization"]
    assert out.parity.max_abs < 1e-5


def test_mul_square_and_reciprocal_without_affine():
    out = apply_pass(PASS, _ln_model(square="Mul(d, d)", norm="Mul(d, r)", affine=False))
    assert out.matches == 1 and out.count("LayerNormalization") == 1 and out.count("ReduceMean") == 0
    assert out.parity.max_abs < 1e-5


def test_two_trailing_axes_given_as_input_at_opset_18():
    model = model_from_text(f"""<ir_version: 8, opset_import: ["": 18]>
ln (float[2,3,4] x) => (float[2,3,4] y) <int64[2] axes = {{-2, -1}}, float two = {{2.0}}, float eps = {{1e-6}}> {{
    mean = ReduceMean(x, axes)
    d = Sub(x, mean)
    sq = Pow(d, two)
    var = ReduceMean(sq, axes)
    ve = Add(eps, var)
    std = Sqrt(ve)
    y = Div(d, std)
}}""")
    out = apply_pass(PASS, model)
    assert out.ops() == ["LayerNormalization"]
    (axis,) = [a.i for a in out.after.graph.node[0].attribute if a.name == "axis"]
    assert axis == -2 and out.parity.max_abs < 1e-5


def test_opset_16_graph_is_raised_to_17():
    out = apply_pass(PASS, _ln_model(opset=16))
    assert out.ops() == ["LayerNormalization"] and _opset(out.after) == 17


@pytest.mark.parametrize("case, kwargs", [
    ("channels-first norm over axis 1", dict(x_shape="2,8,3", mean_axes="<axes = [1]>", affine=False)),
    ("mean and variance over different axes", dict(x_shape="2,3,8", mean_axes="<axes = [-1]>",
                                                   var_axes="<axes = [1, 2]>", affine=False)),
    # x - mean(keepdims=0) broadcasts the row means along the wrong axis
    ("mean without keepdims", dict(x_shape="8,8", mean_axes="<axes = [-1], keepdims = 0>", affine=False)),
    ("opset 13: too old to raise", dict(opset=13)),
])
def test_refuses_look_alikes(case, kwargs):
    out = apply_pass(PASS, _ln_model(**kwargs))
    assert out.matches == 0 and out.count("LayerNormalization") == 0


def test_non_constant_eps_refused():
    text = onnx.printer.to_text(_ln_model(affine=False))
    model = onnx.parser.parse_model(text.replace("float two = {2}, float eps = {1e-05}", "float two = {2}")
                                    .replace("float[2,3,8] x)", "float[2,3,8] x, float eps)"))
    onnx.checker.check_model(model, full_check=True)
    out = apply_pass(PASS, model)
    assert out.matches == 0


def test_scale_varying_over_leading_axis_is_not_absorbed():
    """γ of shape (3, 1) scales rows, not features: the norm fuses, the Mul stays."""
    out = apply_pass(PASS, _ln_model(gamma_shape="3,1", x_shape="2,3,8"))
    assert out.count("LayerNormalization") == 1 and out.count("Mul") == 1
    assert out.parity.max_abs < 1e-5


# --- exporter graph shapes ------------------------------------------------------------------------

class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.norm, self.fc = torch.nn.LayerNorm(32), torch.nn.Linear(32, 64)
        torch.nn.init.normal_(self.norm.weight)
        torch.nn.init.normal_(self.norm.bias)

    def forward(self, x):
        return self.fc(self.norm(x))


def _export_tiny(exporter: str, opset: int) -> onnx.ModelProto:
    return export_module(_Tiny(), torch.randn(1, 10, 32), exporter, opset)


@pytest.mark.parametrize("exporter, opset, matches", [("torchscript", 16, 3), ("dynamo", 18, 0)])
def test_both_exporters(exporter, opset, matches):
    out = apply_pass(PASS, _export_tiny(exporter, opset))
    assert out.matches == matches  # dynamo already emits LayerNormalization
    assert out.count("LayerNormalization") == 1 and out.count("ReduceMean") == 0
    assert out.parity.within(1e-4)


def test_deit_tiny_exported_at_opset_16():
    model = export(resolve("deit_tiny_patch16_224"), (64, 64), samples=1, opset=16).model
    out = apply_pass(PASS, model, samples=1)
    assert out.count("LayerNormalization") == 25 and out.count("ReduceMean") == 0 and out.count("Pow") == 0
    assert _opset(out.after) == 17
    assert out.parity.within(1e-4), out.parity
