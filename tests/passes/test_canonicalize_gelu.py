"""canonicalize-gelu: erf-GELU orderings → Gelu-20 (opset bumped when safe) or edgevit.Gelu."""

from __future__ import annotations


import onnx
import pytest
import torch

from edgevit.frontend.export import export
from edgevit.frontend.source import resolve
from edgevit.passes.canonicalize_gelu import PASS

from .helpers import apply_pass, export_module, model_from_text


def _gelu_model(body: str, opset: int = 17, extra: str = "", consts="half = {0.5}, one = {1.0}, root2 = {1.4142135}"):
    inits = ", ".join(f"float {c.strip()}" for c in consts.split(","))
    return model_from_text(f"""<ir_version: 8, opset_import: ["": {opset}]>
gelu (float[2,8] x) => (float[2,8] y{extra}) <{inits}> {{
    {body}
}}""")


ERF = "s = Div(x, root2)\n    e = Erf(s)\n    onep = Add(e, one)"
ORDERINGS = {
    "torchscript": f"{ERF}\n    m = Mul(x, onep)\n    y = Mul(m, half)",
    "dynamo": f"{ERF}\n    h = Mul(half, onep)\n    y = Mul(x, h)",
    "half-first": f"{ERF}\n    h = Mul(x, half)\n    y = Mul(h, onep)",
    "one-first+mul-inv-sqrt2": "s = Mul(x, inv)\n    e = Erf(s)\n    onep = Add(one, e)\n    m = Mul(onep, x)\n"
                               "    y = Mul(half, m)",
}


def _domains(model):
    return {n.domain for n in model.graph.node if n.op_type == "Gelu"}


@pytest.mark.parametrize("order", list(ORDERINGS))
def test_orderings_become_native_gelu_with_opset_20(order):
    consts = "half = {0.5}, one = {1.0}, root2 = {1.4142135}, inv = {0.70710677}"
    out = apply_pass(PASS, _gelu_model(ORDERINGS[order], consts=consts))
    assert out.matches == 1 and out.ops() == ["Gelu"] and _domains(out.after) == {""}
    assert {o.domain: o.version for o in out.after.opset_import}[""] == 20
    assert out.parity.max_abs < 1e-6


def test_reducemean_with_axes_attribute_blocks_the_bump_so_edgevit_gelu():
    body = ORDERINGS["torchscript"].replace("y = Mul(m, half)", "y = Mul(m, half)\n    r = ReduceMean <axes = [1]> (y)")
    out = apply_pass(PASS, _gelu_model(body, extra=", float[2,1] r"))
    assert out.matches == 1 and _domains(out.after) == {"edgevit"} and out.count("Erf") == 0
    assert {o.domain: o.version for o in out.after.opset_import}[""] == 17
    assert [(f.domain, f.name) for f in out.after.functions] == [("edgevit", "Gelu")]
    assert out.parity.max_abs < 1e-6


def test_refuses_wrong_constant():
    out = apply_pass(PASS, _gelu_model(ORDERINGS["torchscript"], consts="half = {0.5}, one = {1.0}, root2 = {2.0}"))
    assert out.matches == 0 and out.count("Erf") == 1  # x/2 is not x/√2


def test_refuses_erf_of_another_tensor():
    model = model_from_text("""<ir_version: 8, opset_import: ["": 17]>
gelu (float[2,8] x, float[2,8] z) => (float[2,8] y) <float half = {0.5}, float one = {1.0}, float root2 = {1.4142135}> {
    s = Div(z, root2)
    e = Erf(s)
    onep = Add(e, one)
    m = Mul(x, onep)
    y = Mul(m, half)
}""")
    out = apply_pass(PASS, model)
    assert out.matches == 0 and out.count("Erf") == 1


def test_refuses_constant_that_broadcasts_to_a_new_shape():
    model = model_from_text(f"""<ir_version: 8, opset_import: ["": 17]>
gelu (float[2,8] x) => (float[1,2,8] y)
    <float[1,1,1] half = {{0.5}}, float one = {{1.0}}, float root2 = {{1.4142135}}> {{
    {ORDERINGS["torchscript"]}
}}""")
    out = apply_pass(PASS, model)
    assert out.matches == 0 and out.count("Erf") == 1


# --- exporter graph shapes: a tiny LayerNorm → Linear → GELU block, and a zoo model -----------------

class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.norm, self.fc, self.act = torch.nn.LayerNorm(32), torch.nn.Linear(32, 64), torch.nn.GELU()
        torch.nn.init.normal_(self.norm.weight)
        torch.nn.init.normal_(self.norm.bias)

    def forward(self, x):
        return self.act(self.fc(self.norm(x)))


def _export_tiny(exporter: str, opset: int) -> onnx.ModelProto:
    return export_module(_Tiny(), torch.randn(1, 10, 32), exporter, opset)


@pytest.mark.parametrize("exporter, opset, matches", [("torchscript", 17, 1), ("dynamo", 18, 1), ("dynamo", 20, 0)])
def test_both_exporters(exporter, opset, matches):
    out = apply_pass(PASS, _export_tiny(exporter, opset))
    assert out.matches == matches  # dynamo at opset 20 already emits Gelu
    assert out.count("Erf") == 0 and out.count("Gelu") == 1 and _domains(out.after) == {""}
    assert out.parity.within(1e-4)


def test_efficientformer_l1_gets_edgevit_gelu():
    model = export(resolve("efficientformer_l1"), (224, 224), samples=1).model
    out = apply_pass(PASS, model, samples=1)
    # its final token mean is a ReduceMean with an axes attribute, so the graph stays at opset 17
    assert out.matches == 15 and out.count("Erf") == 0 and _domains(out.after) == {"edgevit"}
    assert out.parity.within(1e-4), out.parity
