"""The pipeline itself: per-pass report, rollback of passes that break numerics or raise."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from edgevit.errors import EdgevitError
from edgevit.passes import pipeline
from edgevit.passes.base import Pass

from .helpers import model_from_text

MODEL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 4] x) => (float[1, 4] y) <float[4] s = {2.0, 2.0, 2.0, 2.0}> {
    a = Identity(x)
    y = Mul(a, s)
}
"""


def _drop_identity(model: ir.Model) -> int:
    count = 0
    for node in list(model.graph):
        if node.op_type == "Identity":
            node.outputs[0].replace_all_uses_with(node.inputs[0])
            model.graph.remove(node, safe=True)
            count += 1
    return count


def _corrupt_scale(model: ir.Model) -> int:
    init = model.graph.initializers["s"]
    init.const_value = ir.tensor(np.full(4, 3.0, dtype=np.float32))
    return 1


def _explode(model: ir.Model) -> int:
    raise ValueError("bug in a rule")


def test_report_and_rollbacks():
    passes = [Pass("drop-identity", "", _drop_identity), Pass("corrupt", "", _corrupt_scale),
              Pass("explode", "", _explode), Pass("nothing", "", lambda m: 0)]
    model = model_from_text(MODEL)
    out, report = pipeline.run(model, passes)
    status = {r.name: r.status for r in report.passes}
    assert status["drop-identity"] == "applied"
    assert status["corrupt"].startswith("rolled back: max abs error")
    assert status["explode"] == "rolled back: ValueError: bug in a rule"
    assert status["nothing"] == "no-match"
    assert [n.op_type for n in out.graph.node] == ["Mul"]  # only the verified rewrite survived
    assert report.input.nodes == 2 and report.output.nodes == 1
    assert report.parity.max_abs == 0.0
    assert report.passes[0].before.nodes == 2 and report.passes[0].after.nodes == 1


def test_select_rejects_unknown_pass():
    with pytest.raises(EdgevitError, match="unknown pass 'fold-everything'"):
        pipeline.select(["fold-everything"])
