"""The float graph the quantizer works on: an ONNX model lowered to a flat list of standard ops.

Fused forms from the pass pipeline are lowered back here, so the quantizer sees one vocabulary whether
or not the passes ran: `edgevit.Attention` becomes MatMul → Mul(scale) → [Add bias] → Softmax →
MatMul (channels-first: Transpose of the probabilities, then MatMul(V, Pᵀ)), with its scores and
probabilities as named tensors that calibration can observe; `edgevit.Gelu` becomes `Gelu`. The
quantizer then re-fuses what the integer kernels fuse (scale into the QKᵀ requantization).

`to_onnx` writes the graph back (Gelu as the erf chain below opset 20) — used for calibration in
onnxruntime and as the body of the QDQ model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import EdgevitError
from ..ir.graph import node_attributes

# Ops with an integer semantics in integer_ops (after the fusions in quantize.py).
SUPPORTED = {
    "Conv", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Pow",
    "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Gelu", "Tanh", "Erf", "LeakyRelu", "Neg",
    "Softmax", "LayerNormalization", "AveragePool", "GlobalAveragePool", "ReduceMean", "MaxPool",
    "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Transpose", "Gather", "Slice", "Split",
    "Concat",
}


@dataclass
class Node:
    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)


@dataclass
class FloatGraph:
    nodes: list[Node]
    consts: dict[str, np.ndarray]
    input: str
    input_shape: list[int]
    outputs: list[str]
    opset: int

    def consumers(self) -> dict[str, list[Node]]:
        found: dict[str, list[Node]] = {}
        for node in self.nodes:
            for name in node.inputs:
                found.setdefault(name, []).append(node)
        return found


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        return {}
    vis = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    return {vi.name: len(vi.type.tensor_type.shape.dim) for vi in vis if vi.type.tensor_type.HasField("shape")}


def _lower_attention(node: onnx.NodeProto, attrs: dict, ranks: dict[str, int], consts: dict) -> list[Node]:
    name = node.name or node.output[0]
    q, kt, v = node.input[:3]
    bias = node.input[3] if len(node.input) > 3 and node.input[3] else None
    scale_name = f"{name}/scale"
    consts[scale_name] = np.array(attrs.get("scale", 1.0), np.float32)
    nodes = [Node("MatMul", f"{name}/qk", [q, kt], [f"{name}/scores"]),
             Node("Mul", f"{name}/scale", [f"{name}/scores", scale_name], [f"{name}/scaled"])]
    logits = f"{name}/scaled"
    if bias:
        nodes.append(Node("Add", f"{name}/bias", [logits, bias], [f"{name}/biased"]))
        logits = f"{name}/biased"
    nodes.append(Node("Softmax", f"{name}/softmax", [logits], [f"{name}/probs"], {"axis": -1}))
    if attrs.get("channels_first", 0):
        rank = ranks.get(q)
        if rank is None:
            raise EdgevitError(f"cannot quantize edgevit.Attention node '{name}': rank of its query unknown")
        perm = [*range(rank - 2), rank - 1, rank - 2]
        nodes += [Node("Transpose", f"{name}/probs_t", [f"{name}/probs"], [f"{name}/probs_t"], {"perm": perm}),
                  Node("MatMul", f"{name}/pv", [v, f"{name}/probs_t"], [node.output[0]])]
    else:
        nodes.append(Node("MatMul", f"{name}/pv", [f"{name}/probs", v], [node.output[0]]))
    return nodes


def from_onnx(model: onnx.ModelProto) -> FloatGraph:
    """Lower a static-shape ONNX model; unknown ops are refused with a one-line error."""
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in consts]
    if len(inputs) != 1:
        raise EdgevitError(f"the int8 quantizer takes models with one image input, this one has {len(inputs)}")
    shape = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    if not shape or any(d <= 0 for d in shape):
        raise EdgevitError("the model input has dynamic dimensions; export it with a fixed --input-size first")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    ranks = None
    nodes: list[Node] = []
    for i, n in enumerate(model.graph.node):
        attrs = node_attributes(n)
        label = n.name or f"#{i}"
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
            if "value" not in attrs:
                raise EdgevitError(f"cannot quantize Constant node '{label}': only tensor `value` is supported")
            consts[n.output[0]] = attrs["value"]
        elif n.domain == "edgevit" and n.op_type == "Attention":
            ranks = _ranks(model) if ranks is None else ranks
            nodes += _lower_attention(n, attrs, ranks, consts)
        elif n.domain == "edgevit" and n.op_type == "Gelu" or n.domain in ("", "ai.onnx") and n.op_type == "Gelu":
            if attrs.get("approximate", "none") != "none":
                raise EdgevitError(f"cannot quantize Gelu node '{label}': approximate='{attrs['approximate']}'")
            nodes.append(Node("Gelu", n.name or n.output[0], list(n.input), list(n.output)))
        elif n.domain in ("", "ai.onnx") and n.op_type in SUPPORTED:
            nodes.append(Node(n.op_type, n.name or n.output[0], list(n.input), list(n.output), attrs))
        else:
            op = f"{n.domain}.{n.op_type}" if n.domain else n.op_type
            raise EdgevitError(f"cannot quantize op {op} (node '{label}'): no int8 semantics for it")
    return FloatGraph(nodes, consts, inputs[0].name, shape, [o.name for o in model.graph.output], opset)


def _gelu_chain(node: Node, opset: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    if opset >= 20:
        return [helper.make_node("Gelu", node.inputs, node.outputs, name=node.name)], []
    x, y, p = node.inputs[0], node.outputs[0], f"{node.outputs[0]}/gelu"
    inits = [numpy_helper.from_array(np.array(v, np.float32), f"{p}/{k}")
             for k, v in (("root2", np.sqrt(2.0)), ("one", 1.0), ("half", 0.5))]
    return [helper.make_node("Div", [x, f"{p}/root2"], [f"{p}/scaled"]),
            helper.make_node("Erf", [f"{p}/scaled"], [f"{p}/erf"]),
            helper.make_node("Add", [f"{p}/erf", f"{p}/one"], [f"{p}/one_plus"]),
            helper.make_node("Mul", [x, f"{p}/one_plus"], [f"{p}/x_times"]),
            helper.make_node("Mul", [f"{p}/x_times", f"{p}/half"], [y])], inits


def to_onnx(graph: FloatGraph, nodes: list[Node] | None = None, consts: dict[str, np.ndarray] | None = None,
            outputs: list[str] | None = None, input_dtype: int = onnx.TensorProto.FLOAT) -> onnx.ModelProto:
    """An ONNX model of `nodes` (default: the graph's) with `consts` as initializers.

    `outputs` lists extra tensors to expose (calibration reads every activation this way).
    """
    nodes = graph.nodes if nodes is None else nodes
    consts = graph.consts if consts is None else consts
    protos, inits = [], []
    for node in nodes:
        if node.op == "Gelu":
            p, extra = _gelu_chain(node, graph.opset)
            protos += p
            inits += extra
        else:
            protos.append(helper.make_node(node.op, node.inputs, node.outputs, name=node.name, **node.attrs))
    used = {i for p in protos for i in p.input}
    inits += [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items() if k in used]
    names = list(dict.fromkeys(graph.outputs + (outputs or [])))
    g = helper.make_graph(protos, "quant", [helper.make_tensor_value_info(graph.input, input_dtype, graph.input_shape)],
                          [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", graph.opset)])
    model.ir_version = 8
    return model
