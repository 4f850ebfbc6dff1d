"""eliminate-identity: no-op ops and redundant layout chains disappear; shape-changing look-alikes stay."""

from __future__ import annotations

import pytest

from edgevit.frontend.export import export
from edgevit.frontend.source import resolve
from edgevit.passes.eliminate_identity import PASS

from .helpers import apply_pass, model_from_text


def _model(body: str, inputs="float[2,3,4] x", outputs="float[2,3,4] y", inits="") -> object:
    return model_from_text(f"""<ir_version: 8, opset_import: ["": 17]>
g ({inputs}) => ({outputs}) <float one = {{1.0}}, float zero = {{0.0}}, int64[3] same = {{2, 3, 4}},
    int64[2] flat = {{6, 4}}{inits}> {{
    {body}
}}""")


def test_removes_all_no_ops_and_dead_nodes():
    body = """a = Identity(x)
    b = Dropout(a)
    c = Mul(b, one)
    d = Add(zero, c)
    e = Reshape(d, same)
    f = Transpose <perm = [0, 2, 1]> (e)
    g = Transpose <perm = [0, 2, 1]> (f)
    h = Reshape(g, flat)
    i = Reshape(h, same)
    unused = Relu(i)
    y = Sub(i, zero)"""
    out = apply_pass(PASS, _model(body))
    assert out.ops() in ([], ["Identity"])  # x → y directly (an Identity only if I/O must both stay)
    assert out.parity.max_abs == 0.0
    assert out.matches >= 9


def test_transpose_pair_that_is_not_inverse_becomes_one_transpose():
    body = "a = Transpose <perm = [1, 0, 2]> (x)\n    y = Transpose <perm = [0, 2, 1]> (a)"
    out = apply_pass(PASS, _model(body, outputs="float[3,4,2] y"))
    assert out.ops() == ["Transpose"] and out.parity.max_abs == 0.0


@pytest.mark.parametrize("case, body, outputs, inits", [
    ("mul by ones that broadcast to rank 4", "y = Mul(x, ones)", "float[1,2,3,4] y", ", float[1,1,1,1] ones = {1.0}"),
    ("dropout in training mode", "y = Dropout(x, ratio, on)", "float[2,3,4] y", ", float ratio = {0.0}, bool on = {1}"),
    ("reshape to another shape", "y = Reshape(x, flat)", "float[6,4] y", ""),
    ("add of a non-zero constant", "y = Add(x, one)", "float[2,3,4] y", ""),
])
def test_keeps_ops_that_compute_something(case, body, outputs, inits):
    out = apply_pass(PASS, _model(body, outputs=outputs, inits=inits))
    assert out.matches == 0 and len(out.ops()) == 1


def test_shvit_export_is_unchanged_and_exact():
    model = export(resolve("shvit_s1"), (128, 128), samples=1).model
    out = apply_pass(PASS, model, samples=1)
    # onnxsim already removed the exporter's no-ops: nothing left to do, and nothing may break
    assert len(out.ops()) <= len(model.graph.node) and out.parity.max_abs == 0.0
