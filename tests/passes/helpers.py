"""Shared checks for pass tests: run one pass on a small model, verify with onnx.checker + onnxruntime."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_ir as ir

from edgevit.ir import graph as G
from edgevit.ir.numerics import Parity, run_ort
from edgevit.passes.base import Pass


@dataclass
class Outcome:
    matches: int
    before: onnx.ModelProto
    after: onnx.ModelProto
    parity: Parity

    def ops(self) -> list[str]:
        return [n.op_type for n in self.after.graph.node]

    def count(self, op_type: str) -> int:
        return self.ops().count(op_type)


def model_from_text(text: str) -> onnx.ModelProto:
    """An ONNX model from ONNX text syntax (onnx.parser), checked."""
    model = onnx.parser.parse_model(text)
    onnx.checker.check_model(model, full_check=True)
    return model


def apply_pass(p: Pass, model: onnx.ModelProto, samples: int = 3) -> Outcome:
    """Run `p` on a copy of `model`; the result must pass onnx.checker and match onnxruntime."""
    irm = ir.from_proto(model)
    matches = p.run(irm)
    after = ir.to_proto(irm)
    onnx.checker.check_model(after, full_check=True)
    shapes = G.static_input_shapes(model)
    parity = Parity()
    for seed in range(samples):
        feeds = G.seeded_inputs(model, shapes, seed)
        for r, g in zip(run_ort(model, feeds), run_ort(after, feeds)):
            parity.update(r, g)
    return Outcome(matches, model, after, parity)


def assert_refused(p: Pass, model: onnx.ModelProto) -> None:
    """`p` must leave `model` exactly as it was."""
    before = [n.op_type for n in model.graph.node]
    out = apply_pass(p, model)
    assert out.matches == 0 and out.ops() == before
    assert out.parity.max_abs == 0.0


def export_module(module, example, exporter: str, opset: int) -> onnx.ModelProto:
    """A small torch module through the project's exporter + onnxsim (either exporter's graph shape)."""
    import tempfile
    from pathlib import Path

    from edgevit.frontend.export import simplify, torch_to_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        torch_to_onnx(module.eval(), example, opset, exporter, path)
        return simplify(onnx.load(str(path)))


def random_weight(shape, seed=0, scale=0.5) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)
