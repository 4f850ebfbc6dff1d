"""Backend tests. Small ONNX graphs shared by the TVM tests and the script that made their fixture database."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tiny_conv_model(size: int = 8) -> onnx.ModelProto:
    """Conv 3→8 (3x3) + Relu on a 1x3xSxS input: two TIR tasks, fast to tune."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "tiny_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, size, size])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def unconvertible_model() -> onnx.ModelProto:
    """Runs in onnxruntime, but TVM's ONNX importer has no converter for Celu nor Det."""
    shape = numpy_helper.from_array(np.array([12, 2, 2], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Celu", ["x"], ["c"]), helper.make_node("Reshape", ["c", "shape"], ["r"]),
         helper.make_node("Det", ["r"], ["y"])],
        "unconvertible", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [12])], [shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
