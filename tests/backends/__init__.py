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


def gemm_model(width: int = 14, channels: int = 32, out_channels: int | None = None) -> onnx.ModelProto:
    """An EfficientFormer-style MLP on 1xCxWxW: 1x1 conv C→2C, GELU (Erf), 1x1 conv 2C→C' plus, when C' = C, the
    residual; then the tokens through MatMul (C'→C', weights [K, N]) + bias. The GEMM micro-kernels' shapes."""
    rng = np.random.default_rng(0)
    c, h = channels, 2 * channels
    o = out_channels or channels

    def const(name, *shape):
        fan_in = shape[0] if len(shape) == 2 else shape[1] if len(shape) == 4 else 1
        return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32), name)

    inits = [const("w1", h, c, 1, 1), const("b1", h), const("w2", o, h, 1, 1), const("b2", o), const("wm", o, o),
             const("bm", o), numpy_helper.from_array(np.array([0.70710677], np.float32), "rsqrt2"),
             numpy_helper.from_array(np.array([1.0], np.float32), "one"),
             numpy_helper.from_array(np.array([0.5], np.float32), "half"),
             numpy_helper.from_array(np.array([1, o, width * width], np.int64), "tokens")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"]),
             helper.make_node("Mul", ["h", "rsqrt2"], ["hs"]), helper.make_node("Erf", ["hs"], ["he"]),
             helper.make_node("Add", ["he", "one"], ["h1"]), helper.make_node("Mul", ["h", "h1"], ["hg"]),
             helper.make_node("Mul", ["hg", "half"], ["g"]),
             helper.make_node("Conv", ["g", "w2", "b2"], ["y2"])]
    if o == c:
        nodes.append(helper.make_node("Add", ["y2", "x"], ["r"]))
    nodes += [helper.make_node("Reshape", ["r" if o == c else "y2", "tokens"], ["t"]),
              helper.make_node("Transpose", ["t"], ["tt"], perm=[0, 2, 1]),
              helper.make_node("MatMul", ["tt", "wm"], ["m"]), helper.make_node("Add", ["m", "bm"], ["y"])]
    graph = helper.make_graph(nodes, "gemm_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, width, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width * width, o])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def window_conv_model(stride: int, width: int = 14, channels: int = 32, out_channels: int = 128,
                      groups: int = 1) -> onnx.ModelProto:
    """Conv 3x3 (pad 1, `stride`, `groups`) + bias + Relu on 1xCxWxW: a downsampling embedding's shape."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((out_channels, channels // groups, 3, 3)) / np.sqrt(9 * channels))
                                .astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(out_channels).astype(np.float32), "b")
    out = (width + 2 - 3) // stride + 1
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[stride, stride], group=groups),
         helper.make_node("Relu", ["c"], ["y"])],
        "window_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, width, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, out_channels, out, out])], [w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def conv_mlp_model(width: int = 14, channels: int = 32, ratio: int = 4, activation: str = "Gelu") -> onnx.ModelProto:
    """An EfficientFormer Meta4D MLP on 1xCxWxW, as canonicalize-gelu leaves it: 1x1 conv C→rC + bias, Gelu (opset
    20; or `activation` "Relu"), 1x1 conv rC→C + bias, plus the input (the residual)."""
    rng = np.random.default_rng(0)
    c, h = channels, ratio * channels

    def const(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(shape[1] if len(shape) > 1 else 1))
                                       .astype(np.float32), name)

    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"]), helper.make_node(activation, ["h"], ["g"]),
             helper.make_node("Conv", ["g", "w2", "b2"], ["y2"]), helper.make_node("Add", ["y2", "x"], ["y"])]
    graph = helper.make_graph(nodes, "conv_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, width, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, width, width])],
                              [const("w1", h, c, 1, 1), const("b1", h), const("w2", c, h, 1, 1), const("b2", c)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def pool_mixer_model(width: int = 14, channels: int = 32, pool: str = "AveragePool") -> onnx.ModelProto:
    """PoolFormer's / EfficientFormer's token mixer on 1xCxWxW, after a 3x3 conv (which puts it in the target's conv
    layout): x + s·(pool(x) - x) with a per-channel scale s, `pool` "AveragePool" (3x3, stride 1, pad 1, padding not
    counted); or "MaxPool" (3x3, stride 2, pad 1) alone, the output half the size."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((channels, channels, 3, 3)) / np.sqrt(9 * channels))
                                .astype(np.float32), "w")
    conv = helper.make_node("Conv", ["i", "w"], ["x"], pads=[1, 1, 1, 1])
    i = helper.make_tensor_value_info("i", TensorProto.FLOAT, [1, channels, width, width])
    if pool == "MaxPool":
        out = (width - 1) // 2 + 1
        nodes = [conv, helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2])]
        graph = helper.make_graph(nodes, "max_pool", [i],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, out, out])], [w])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    s = numpy_helper.from_array(rng.standard_normal((channels, 1, 1)).astype(np.float32), "s")
    nodes = [conv, helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                    strides=[1, 1], count_include_pad=0),
             helper.make_node("Sub", ["p", "x"], ["d"]), helper.make_node("Mul", ["d", "s"], ["m"]),
             helper.make_node("Add", ["x", "m"], ["y"])]
    graph = helper.make_graph(nodes, "pool_mixer", [i],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, width, width])], [w, s])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
