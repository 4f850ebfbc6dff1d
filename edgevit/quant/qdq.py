"""The quantized model as QDQ ONNX, so onnxruntime (or any ONNX tool) can cross-check it.

Every int8 activation tensor t of the QuantizedModel is written as producer → t/f (float) →
QuantizeLinear → t/q (int8) → DequantizeLinear → t, with its scale and zero point; weights, biases and
constant operands are int8/int32 initializers behind a DequantizeLinear (per output channel for
weights and biases). Tensors the integer kernels fuse away (the MatMul before its bias Add, the
attention scores before the 1/√d scale) get no Q/DQ, exactly as in the integer model. The ops between
DQ and Q run in float, so this graph reproduces the quantization grid but not the integer
approximations of softmax/LayerNorm/rounding: it agrees with the reference executor to a few output
LSBs, not bit for bit (the C runtime is the bit-exact check).
"""

from __future__ import annotations

import numpy as np
import onnx

from .graph import FloatGraph, Node, to_onnx
from .reference import QuantizedModel


def to_qdq(graph: FloatGraph, qmodel: QuantizedModel, qdq_consts: dict[str, tuple]) -> onnx.ModelProto:
    consts = {k: v for k, v in graph.consts.items() if k not in qdq_consts}
    nodes: list[Node] = []

    def dq(name: str, q: np.ndarray, scale, zero_point, axis) -> None:
        scale = np.asarray(scale, np.float32)
        consts[f"{name}/q"], consts[f"{name}/scale"] = q, scale
        consts[f"{name}/zp"] = np.full(scale.shape, zero_point, q.dtype)
        attrs = {} if axis is None else {"axis": axis}
        nodes.append(Node("DequantizeLinear", f"{name}/dq", [f"{name}/q", f"{name}/scale", f"{name}/zp"],
                          [name], attrs))

    def qdq(float_name: str, out: str, qp) -> None:
        consts[f"{out}/scale"] = np.array(qp.scale, np.float32)
        consts[f"{out}/zp"] = np.array(qp.zero_point, np.int8)
        nodes.append(Node("QuantizeLinear", f"{out}/quant", [float_name, f"{out}/scale", f"{out}/zp"], [f"{out}/q"]))
        nodes.append(Node("DequantizeLinear", f"{out}/dequant", [f"{out}/q", f"{out}/scale", f"{out}/zp"], [out]))

    for name, (q, scale, zero_point, axis) in qdq_consts.items():
        dq(name, q, scale, zero_point, axis)
    rename = {graph.input: f"{graph.input}/dq"}
    qdq(graph.input, rename[graph.input], qmodel.tensors[graph.input])
    for node in graph.nodes:
        inputs = [rename.get(i, i) for i in node.inputs]
        outputs = [f"{o}/f" if o in qmodel.tensors else o for o in node.outputs]
        nodes.append(Node(node.op, node.name, inputs, outputs, node.attrs))
        for o in node.outputs:
            if o in qmodel.tensors:
                qdq(f"{o}/f", o, qmodel.tensors[o])
    return to_onnx(graph, nodes, consts)
