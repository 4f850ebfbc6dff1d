"""A user's own ONNX goes through the same pipeline, via the real CLI; what rules don't know stays."""

from __future__ import annotations

import json

import onnx

from edgevit.frontend.export import export
from edgevit.frontend.source import resolve

from ..conftest import run_cli
from .helpers import model_from_text


def test_dynamo_export_at_opset_20_is_optimized(tmp_path):
    user = tmp_path / "user.onnx"
    onnx.save(export(resolve("deit_tiny_distilled_patch16_224"), (32, 32), opset=20, exporter="dynamo",
                     samples=1).model, str(user))
    out = tmp_path / "opt.onnx"
    proc = run_cli("optimize", str(user), "-o", str(out), "--report")
    assert proc.returncode == 0, proc.stderr
    assert "fuse-attention" in proc.stderr  # the --report table
    report = json.loads((tmp_path / "opt.optimize.json").read_text())
    applied = {p["name"] for p in report["passes"] if p["status"] == "applied"}
    assert {"fuse-attention", "merge-classifier-heads"} <= applied
    assert report["output"]["nodes"] < report["input"]["nodes"]
    assert report["parity"]["max_abs"] <= 1e-4 * report["parity"]["ref_range"]
    assert "Softmax" not in report["op_histogram_after"]


def test_unknown_ops_are_left_untouched(tmp_path):
    # A LayerNorm-like chain broken by an op no rule knows (Celu): nothing may be rewritten across it.
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 8, 16] x) => (float[1, 8, 16] y) <float[16] g = {1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
                                                                    1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0}> {
            m = ReduceMean<axes = [-1]>(x)
            d = Sub(x, m)
            c = Celu(d)
            y = Mul(c, g)
        }""")
    path = tmp_path / "odd.onnx"
    onnx.save(model, str(path))
    proc = run_cli("optimize", str(path), "-o", str(tmp_path / "o.onnx"))
    assert proc.returncode == 0, proc.stderr
    ops = [n.op_type for n in onnx.load(str(tmp_path / "o.onnx")).graph.node]
    assert ["ReduceMean", "Sub", "Celu"] == ops[:3]
