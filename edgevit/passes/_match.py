"""Helpers shared by the rewrite passes: constant values, shapes, opset bumps and model-local functions.

Passes match on `onnx_ir` graphs with onnxscript's pattern rewriter; what they need beyond it lives
here so each check reads as a statement of the precondition it enforces.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx.reference import ReferenceEvaluator

EDGEVIT = "edgevit"  # domain of our own ops; each comes with a model-local FunctionProto body

# Ops whose meaning or signature changed, keyed by the opset that changed them. Every other change
# from opset 14 to 20 only adds types, or inputs/attributes whose defaults keep the old behaviour
# (ONNX Changelog), so a node of any other op reads the same under the newer opset import.
_BREAKING_AT = {
    16: {"RoiAlign"},  # default coordinate_transformation_mode changed
    18: {"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
         "ReduceMin", "ReduceProd", "ReduceSumSquare"},  # `axes` attribute became an input
    20: {"DFT", "GridSample"},  # DFT `axis` became an input; GridSample mode names changed
}
_OLDEST_BUMPABLE = 14  # below this, Softmax/Split/Squeeze… changed too: not worth tabulating


def default_opset(model_or_graph: ir.Model | ir.Graph | ir.Function) -> int:
    imports = model_or_graph.opset_imports
    return imports.get("", imports.get("ai.onnx", 0))


def opset_bump_blocker(model: ir.Model, version: int) -> str | None:
    """Why the default-domain opset import cannot be raised to `version`, or None if every node keeps
    its meaning under it (always None when the model is already there)."""
    current = default_opset(model)
    if current >= version:
        return None
    if current < _OLDEST_BUMPABLE:
        return f"opset {current} is older than {_OLDEST_BUMPABLE}"
    breaking = set().union(*(ops for v, ops in _BREAKING_AT.items() if current < v <= version))
    graphs = [model.graph, *model.functions.values()]
    used = {n.op_type for g in graphs for n in ir.traversal.RecursiveGraphIterator(g) if n.domain in ("", "ai.onnx")}
    clash = sorted(used & breaking)
    if clash:
        return f"{', '.join(clash)} changed between opset {current} and {version}"
    return None


def raise_opset(model: ir.Model, version: int) -> None:
    """Set the default-domain import to `version` (callers check `opset_bump_blocker` first).

    Model-local functions follow: onnx.checker requires them to import the model's version.
    """
    for owner in (model, *model.functions.values()):
        if default_opset(owner) < version:
            owner.opset_imports.pop("ai.onnx", None)
            owner.opset_imports[""] = version


def add_function(model: ir.Model, text: str, overload: str = "") -> None:
    """Add a model-local function given in ONNX text syntax (without its header) unless present.

    The body imports the model's default opset, so it runs wherever the rest of the graph does.
    """
    header = f'domain: "{EDGEVIT}", opset_import: ["": {default_opset(model)}], overload: "{overload}"'
    proto = onnx.parser.parse_function(f"<{header}>\n{text}")
    if (proto.domain, proto.name, proto.overload) in model.functions:
        return
    function = ir.serde.deserialize_function(proto)
    model.functions[function.identifier()] = function
    model.opset_imports.setdefault(EDGEVIT, 1)


def constant(value: ir.Value | None, depth: int = 8) -> np.ndarray | None:
    """`value` as an array if it is computed from constants alone, else None.

    Small constant subgraphs are evaluated (onnx.reference), e.g. torch's Cast→Sqrt→Div→Sqrt chain
    for the SDPA scale, which onnxsim leaves in place. Graph inputs never count as constants, even
    when they have an initializer (the caller may feed another value).
    """
    if value is None or value.is_graph_input():
        return None
    if value.const_value is not None:
        return value.const_value.numpy()
    node = value.producer()
    if node is None or depth == 0 or node.domain not in ("", "ai.onnx"):
        return None
    if not node.inputs and node.op_type != "Constant":
        return None  # RandomNormal and friends have no inputs but are not constants
    args = [None if v is None else constant(v, depth - 1) for v in node.inputs]
    if any(a is None for v, a in zip(node.inputs, args) if v is not None):
        return None
    body = onnx.helper.make_function(
        "local", "fold", [v.name if v is not None else "" for v in node.inputs], [v.name for v in node.outputs],
        [ir.serde.serialize_node(node)], [onnx.helper.make_opsetid("", default_opset(node.graph))])
    feeds = {v.name: a for v, a in zip(node.inputs, args) if v is not None}
    outputs = ReferenceEvaluator(body).run(None, feeds, attributes={})
    return np.asarray(outputs[list(node.outputs).index(value)])


def scalar(value: ir.Value | None) -> float | None:
    """The single element of a constant one-element tensor, else None."""
    array = constant(value)
    return float(array.reshape(())) if array is not None and array.size == 1 else None


def shape(value: ir.Value | None) -> tuple[int, ...] | None:
    """The static shape of `value`, or None if its rank or any dim is unknown."""
    if value is None or value.shape is None or not value.shape.is_static():
        return None
    return tuple(int(d) for d in value.shape)


def rank(value: ir.Value | None) -> int | None:
    return None if value is None or value.shape is None else len(value.shape)


def infer_shapes(model: ir.Model) -> None:
    """Fill value shapes (ONNX shape inference) for checks that need ranks and broadcast results."""
    ir.passes.common.ShapeInferencePass()(model)


def remove_dead(model: ir.Model) -> int:
    """Drop nodes and initializers nothing uses any more; return how many nodes went."""
    before = sum(1 for _ in model.graph)
    ir.passes.common.RemoveUnusedNodesPass()(model)
    return before - sum(1 for _ in model.graph)


def initializer(op, array: np.ndarray, name: str) -> ir.Value:
    """A new initializer from inside a rewrite (`op` is the rewriter's builder)."""
    return op.initializer(ir.tensor(np.ascontiguousarray(array), name=name))
