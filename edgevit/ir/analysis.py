"""Graph analysis: op histogram, parameters, MACs per node, activation sizes, largest tensors.

MACs are counted for the ops that do multiply-accumulate work (Conv, ConvTranspose, MatMul, Gemm,
Attention, Einsum is not counted); elementwise ops count zero MACs, as in the literature's tables.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx.numpy_helper

from ..errors import EdgevitError
from . import graph as G


@dataclass
class NodeCost:
    name: str
    op: str
    macs: int
    params: int
    output_bytes: int


@dataclass
class Analysis:
    nodes: list[NodeCost]
    op_histogram: dict[str, int]
    params: int
    param_bytes: int
    macs: int
    macs_by_op: dict[str, int]
    tensors: dict[str, dict]  # name → {shape, dtype, bytes}
    inputs: dict[str, list[int]] = field(default_factory=dict)
    outputs: dict[str, list[int]] = field(default_factory=dict)

    def largest_tensors(self, n: int = 10) -> list[tuple[str, dict]]:
        return sorted(self.tensors.items(), key=lambda kv: -kv[1]["bytes"])[:n]

    def as_dict(self, top: int = 10) -> dict:
        return {
            "nodes": len(self.nodes),
            "params": self.params,
            "param_bytes": self.param_bytes,
            "macs": self.macs,
            "op_histogram": self.op_histogram,
            "macs_by_op": self.macs_by_op,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "activation_bytes_total": sum(t["bytes"] for t in self.tensors.values()),
            "largest_tensors": [{"name": k, **v} for k, v in self.largest_tensors(top)],
            "per_node": [vars(n) for n in self.nodes],
            "tensors": self.tensors,
        }


def _shape_of(vi: onnx.ValueInfoProto) -> list[int] | None:
    dims = G.value_shape(vi)
    return dims if all(isinstance(d, int) for d in dims) else None


def _numel(shape) -> int:
    return int(math.prod(shape)) if shape is not None else 0


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def node_macs(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> int:
    """Multiply-accumulates of one node, from static input/output shapes (0 if unknown or not MAC work)."""
    op = node.op_type
    ins = [shapes.get(i) for i in node.input]
    out = shapes.get(node.output[0]) if node.output else None
    if out is None:
        return 0
    if op == "Conv" and len(ins) > 1 and ins[1] is not None:
        w = ins[1]  # (Cout, Cin/group, k...)
        return _numel(out) * _numel(w[1:])
    if op == "ConvTranspose" and ins[0] is not None and ins[1] is not None:
        w = ins[1]  # (Cin, Cout/group, k...)
        return _numel(ins[0]) * _numel(w[1:])
    if op in ("MatMul", "MatMulInteger", "QLinearMatMul") and ins[0] is not None:
        k = ins[0][-1] if len(ins[0]) else 1
        return _numel(out) * k
    if op == "Gemm" and ins[0] is not None:
        k = ins[0][0] if _attr(node, "transA", 0) else ins[0][-1]
        return _numel(out) * k
    if op == "Attention" and node.domain == "edgevit" and ins[0] is not None and len(ins) > 1 and ins[1]:
        # edgevit.Attention(Q, Kᵀ, V): Q·Kᵀ is |Q|·S_kv MACs, P·V (or V·Pᵀ) is |out|·S_kv.
        return (_numel(ins[0]) + _numel(out)) * ins[1][-1]
    if op == "Attention" and node.domain in ("", "ai.onnx") and ins[0] is not None and len(ins) > 2 \
            and ins[1] is not None and ins[2] is not None:
        # opset-23 Attention on (B, H, S, D) or (B, S, H*D): QKᵀ and ·V, each S_q·S_kv·D per head.
        q, k, v = ins[0], ins[1], ins[2]
        if len(q) == 4:
            return _numel(q[:-1]) * k[-2] * q[-1] + _numel(q[:-1]) * k[-2] * v[-1]
        return _numel(q) * k[-2] + _numel(q[:-1]) * k[-2] * v[-1]
    return 0


def analyze(model: onnx.ModelProto) -> Analysis:
    if not G.is_static(model):
        raise EdgevitError("the graph has dynamic input dimensions; export it first with `edgevit export` "
                           "(or give --input-size) so shapes are static")
    inferred = G.infer_shapes(model)
    graph = inferred.graph
    inits = G.initializer_arrays(inferred)
    # Constant nodes holding weights (some exporters emit them instead of initializers) are parameters too.
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            inits[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)

    shapes: dict[str, list[int]] = {}
    tensors: dict[str, dict] = {}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        shape = _shape_of(vi)
        if shape is None:
            continue
        shapes[vi.name] = shape
        if vi.name in inits:
            continue
        elem = vi.type.tensor_type.elem_type
        itemsize = np.dtype(G.ONNX_TO_NUMPY.get(elem, np.float32)).itemsize
        tensors[vi.name] = {"shape": shape, "dtype": onnx.TensorProto.DataType.Name(elem).lower(),
                            "bytes": _numel(shape) * itemsize}
    for name, arr in inits.items():
        shapes[name] = list(arr.shape)

    params = 0
    param_bytes = 0
    for arr in inits.values():
        if np.issubdtype(arr.dtype, np.floating) or arr.dtype in (np.int8, np.uint8):
            params += arr.size
            param_bytes += arr.nbytes

    nodes = []
    for i, node in enumerate(graph.node):
        out_bytes = sum(tensors.get(o, {}).get("bytes", 0) for o in node.output)
        node_params = sum(inits[x].size for x in node.input if x in inits)
        nodes.append(NodeCost(node.name or f"{node.op_type}_{i}", node.op_type, node_macs(node, shapes),
                              node_params, out_bytes))
    macs_by_op = Counter()
    for n in nodes:
        macs_by_op[n.op] += n.macs
    return Analysis(
        nodes=nodes,
        op_histogram=dict(Counter(n.op for n in nodes).most_common()),
        params=params,
        param_bytes=param_bytes,
        macs=sum(n.macs for n in nodes),
        macs_by_op={k: v for k, v in macs_by_op.most_common() if v},
        tensors=tensors,
        inputs={vi.name: shapes.get(vi.name) for vi in G.graph_inputs(inferred)},
        outputs={vi.name: shapes.get(vi.name) for vi in graph.output},
    )
