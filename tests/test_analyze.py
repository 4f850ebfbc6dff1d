"""Graph analysis: exact MAC counts on a hand-built graph, and the analyze command's reports."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgevit.ir.analysis import analyze

from .conftest import run_cli


def _conv_matmul_gemm() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "w")
    dw = numpy_helper.from_array(rng.standard_normal((16, 1, 3, 3)).astype(np.float32), "dw")
    m = numpy_helper.from_array(rng.standard_normal((8, 12)).astype(np.float32), "m")
    g = numpy_helper.from_array(rng.standard_normal((10, 16 * 8 * 12)).astype(np.float32), "g")
    shape = numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),  # 1x16x8x8
        helper.make_node("Conv", ["c", "dw"], ["d"], pads=[1, 1, 1, 1], group=16),  # depthwise
        helper.make_node("MatMul", ["d", "m"], ["mm"]),  # 1x16x8x12
        helper.make_node("Reshape", ["mm", "shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "g"], ["y"], transB=1),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                              initializer=[w, dw, m, g, shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_macs_params_and_tensors_are_exact():
    a = analyze(_conv_matmul_gemm())
    conv = 16 * 8 * 8 * 3 * 3 * 3
    dwconv = 16 * 8 * 8 * 1 * 3 * 3
    matmul = 16 * 8 * 12 * 8
    gemm = 10 * 16 * 8 * 12
    assert a.macs_by_op == {"Conv": conv + dwconv, "Gemm": gemm, "MatMul": matmul}
    assert a.macs == conv + dwconv + matmul + gemm
    assert a.params == 16 * 27 + 16 * 9 + 96 + 10 * 1536  # the int64 shape constant is not a parameter
    assert a.op_histogram == {"Conv": 2, "MatMul": 1, "Reshape": 1, "Gemm": 1}
    assert a.largest_tensors(1)[0][1]["bytes"] == 16 * 8 * 12 * 4  # 'mm' / 'flat', float32
    assert a.tensors["c"]["shape"] == [1, 16, 8, 8]


def test_analyze_command_writes_reports(tmp_path):
    path = tmp_path / "tiny.onnx"
    onnx.save(_conv_matmul_gemm(), str(path))
    proc = run_cli("analyze", str(path), "-o", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    written = json.loads((tmp_path / "tiny.analysis.json").read_text())
    assert printed["macs"] == written["macs"] == analyze(_conv_matmul_gemm()).macs
    assert written["largest_tensors"][0]["bytes"] == 16 * 8 * 12 * 4
    assert "Conv" in proc.stderr and "largest activations" in proc.stderr
    assert (tmp_path / "tiny.analysis.md").exists()


def test_analyze_a_zoo_name(tmp_path):
    proc = run_cli("analyze", "mobileone_s0", "--input-size", "64", "64", "-o", str(tmp_path / "m.onnx"))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "m.analysis.json").read_text())
    assert report["op_histogram"]["BatchNormalization"] > 0 and report["macs"] > 1e7


def test_fused_attention_keeps_its_mac_count():
    import onnx_ir as ir

    from edgevit.passes.fuse_attention import PASS

    from .passes.helpers import model_from_text

    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2, 3, 5, 4] q, float[2, 3, 4, 7] kt, float[2, 3, 7, 6] v) => (float[2, 3, 5, 6] y) {
            s = MatMul(q, kt)
            p = Softmax<axis = -1>(s)
            y = MatMul(p, v)
        }""")
    fused = ir.from_proto(model)
    assert PASS.run(fused) == 1
    fused = ir.to_proto(fused)
    assert [n.op_type for n in fused.graph.node] == ["Attention"]
    assert analyze(fused).macs == analyze(model).macs == 2 * 3 * 5 * 7 * (4 + 6)
