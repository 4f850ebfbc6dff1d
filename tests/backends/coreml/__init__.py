"""Core ML backend tests: small ONNX graphs shared by the op-by-op, package and CLI tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def node_model(op: str, inputs: dict[str, list[int]], consts: dict[str, np.ndarray] | None = None,
               n_outputs: int = 1, opset: int = 17, input_order: list[str] | None = None, **attrs) -> onnx.ModelProto:
    """One ONNX node: graph inputs (float32, given shapes) and constant initializers, in `input_order`."""
    consts = consts or {}
    order = input_order or [*inputs, *consts]
    node = helper.make_node(op, order, [f"y{i}" for i in range(n_outputs)], name=f"the_{op.lower()}", **attrs)
    graph = helper.make_graph(
        [node], f"one_{op}", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None) for i in range(n_outputs)],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in consts.items() if n])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def tiny_classifier(classes: int = 10, size: int = 16) -> onnx.ModelProto:
    """Conv 3→32 (3x3, pad 1) → Relu → Conv 1x1 32→128 → GlobalAveragePool → Flatten → Gemm(128→classes): a small image classifier
    with weights large enough (>2048 elements) for coremltools' weight compression to apply."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((32, 3, 3, 3)) * 0.3).astype(np.float32), "w")
    b = numpy_helper.from_array((rng.standard_normal(32) * 0.1).astype(np.float32), "b")
    w2 = numpy_helper.from_array((rng.standard_normal((128, 32, 1, 1)) * 0.2).astype(np.float32), "w2")
    fc = numpy_helper.from_array((rng.standard_normal((classes, 128)) * 0.3).astype(np.float32), "fc")
    fcb = numpy_helper.from_array(np.zeros(classes, np.float32), "fcb")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="stem"),
             helper.make_node("Relu", ["c"], ["r"], name="act"),
             helper.make_node("Conv", ["r", "w2"], ["c2"], name="expand"),
             helper.make_node("GlobalAveragePool", ["c2"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], transB=1, name="head")]
    graph = helper.make_graph(nodes, "tiny_classifier",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
                              [w, b, w2, fc, fcb])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model
