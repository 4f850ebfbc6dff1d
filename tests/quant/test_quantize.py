"""Quantizing whole (tiny) graphs: agreement with fp32, fused vs unfused forms, files, refusals."""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgevit.errors import EdgevitError
from edgevit.ir.numerics import ort_session
from edgevit.passes import pipeline
from edgevit.quant import QuantizedModel, quantize_model, run_quantize
from edgevit.quant.calibrate import load_calibration, synthetic
from edgevit.quant.qdq import to_qdq

TINY_VIT = '''
import torch
from torch import nn
from edgevit.models.mcu_vit import Block


class TinyViT(nn.Module):
    """16 tokens × 16 dims, 2 heads: patch-embed conv, one transformer block, mean pool, head."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 4, 4)
        self.block = Block(16, 2)
        self.norm, self.head = nn.LayerNorm(16), nn.Linear(16, 5)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        return self.head(self.norm(self.block(x)).mean(dim=1))


def tiny_vit():
    torch.manual_seed(0)
    return TinyViT().eval()
'''


class TinyHybrid(nn.Module):
    """Conv/BN/ReLU6, depthwise conv, Hardswish, avg pool, concat, split: the conv-side ops."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU6())
        self.dw = nn.Conv2d(8, 8, 3, 1, 1, groups=8)
        self.pool = nn.AvgPool2d(2)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = self.stem(x)
        a, b = torch.split(x, [4, 4], dim=1)
        x = torch.cat([nn.functional.hardswish(self.dw(x))[:, :4] * 0.5, a + b, torch.sigmoid(b) * a, b], 1)
        x = nn.functional.max_pool2d(self.pool(x), 2)
        return self.head(x.mean(dim=(2, 3)))


def to_onnx(module: nn.Module, size=(16, 16)) -> onnx.ModelProto:
    from edgevit.frontend.export import simplify

    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notices
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), torch.zeros(1, 3, *size), buf, opset_version=17, dynamo=False,
                          input_names=["input"])
    return simplify(onnx.load_from_string(buf.getvalue()), {"input": [1, 3, *size]})


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tinyvit")
    (folder / "tiny.py").write_text(TINY_VIT)
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny", folder / "tiny.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    raw = to_onnx(mod.tiny_vit())
    fused, _ = pipeline.run(raw, samples=1)
    unfused, _ = pipeline.run(raw, pipeline.select(skip=["fuse-attention"]), samples=1)
    return folder, raw, fused, unfused


def agreement(model: onnx.ModelProto, qmodel: QuantizedModel, n=32) -> tuple[float, float]:
    """(top-1 agreement, max |error| / output range) of int8 vs fp32 on seeded inputs."""
    sess = ort_session(model)
    xs = synthetic([1, 3, 16, 16], n, seed=1)
    agree, err = 0, 0.0
    for x in xs:
        ref = sess.run(None, {"input": x[None]})[0]
        got = qmodel.run_float(x[None])[0]
        agree += int(ref.argmax() == got.argmax())
        err = max(err, float(np.abs(ref - got).max() / np.ptp(ref)))
    return agree / n, err


def test_fused_and_unfused_attention_quantize_to_the_same_integers(vit):
    _, _, fused, unfused = vit
    assert {"Attention", "Gelu"} <= {n.op_type for n in fused.graph.node}  # edgevit-domain fused ops
    assert "Softmax" in {n.op_type for n in unfused.graph.node}
    q_raw, q_fused = quantize_model(unfused), quantize_model(fused)
    x = q_raw.quantize_input(synthetic([1, 3, 16, 16], 2, seed=3)[:1])
    assert [n.op for n in q_raw.nodes] == [n.op for n in q_fused.nodes]
    out_raw, out_fused = q_raw.run(x), q_fused.run(x)
    assert all(np.array_equal(a, b) for a, b in zip(out_raw.values(), out_fused.values()))
    ops = [n.op for n in q_fused.nodes]
    assert {"softmax", "layernorm", "lut", "matmul", "linear", "conv2d", "reduce_mean"} <= set(ops)


@pytest.mark.parametrize("method", ["minmax", "percentile", "mse"])
def test_vit_int8_agrees_with_fp32(vit, method):
    fused = vit[2]
    qmodel = quantize_model(fused, method=method)
    top1, err = agreement(fused, qmodel)
    assert top1 >= 0.9 and err < 0.1, (top1, err)


def test_exported_graph_without_passes_quantizes_too(vit):
    """The erf-GELU chain of the raw export runs as primitive int8 ops (table Erf, add, mul)."""
    raw = vit[1]
    top1, err = agreement(raw, quantize_model(raw))
    assert top1 >= 0.9 and err < 0.15, (top1, err)


def test_conv_ops_int8_agrees_with_fp32():
    torch.manual_seed(0)
    model, _ = pipeline.run(to_onnx(TinyHybrid()), samples=1)
    qmodel = quantize_model(model)
    ops = {n.op for n in qmodel.nodes}
    assert {"conv2d", "lut", "add", "mul", "avgpool", "maxpool", "concat", "split", "slice", "reduce_mean"} <= ops
    top1, err = agreement(model, qmodel)
    assert top1 >= 0.9 and err < 0.1, (top1, err)


def test_run_quantize_writes_files_that_reload_bit_exactly(vit, tmp_path):
    folder = vit[0]
    payload = run_quantize(f"{folder / 'tiny.py'}:tiny_vit", tmp_path / "q", None, "minmax", (16, 16))
    out = tmp_path / "q"
    names = sorted(p.name for p in out.iterdir())
    stem = "tiny_tiny_vit"  # the file.py:factory source's name
    assert names == [f"{stem}.{s}" for s in ("int8.json", "int8.npz", "qdq.onnx", "quantize.json", "quantize.md")]
    report = json.loads((out / f"{stem}.quantize.json").read_text())
    assert report["command"] == "quantize" and report["layers"] and payload["activations"]["peak_bytes"] > 0
    assert report["cross_check"]["top1_agreement_qdq_vs_int8"] >= 0.75
    loaded = QuantizedModel.load(out, stem)
    graph = json.loads((out / f"{stem}.int8.json").read_text())
    assert graph["nodes"][0]["params"]["weight"][1] == "int8"
    x = loaded.quantize_input(synthetic([1, 3, 16, 16], 1, seed=5))
    qdq = onnx.load(str(out / f"{stem}.qdq.onnx"))
    assert sum(n.op_type == "QuantizeLinear" for n in qdq.graph.node) >= len(loaded.nodes) // 2
    again = QuantizedModel.load(out, stem).run(x)
    assert all(np.array_equal(a, b) for a, b in zip(loaded.run(x).values(), again.values()))


def test_qdq_onnx_tracks_the_reference(vit):
    fused = vit[2]
    qmodel = quantize_model(fused)
    sess = ort_session(to_qdq(qmodel.float_graph, qmodel, qmodel.qdq_consts))
    out = qmodel.tensors[qmodel.outputs[0]]
    for x in synthetic([1, 3, 16, 16], 4, seed=7):
        diff = np.abs(sess.run(None, {"input": x[None]})[0] - qmodel.run_float(x[None])[0]).max()
        assert diff <= 6 * out.scale


def test_calibration_sources_and_methods(vit, tmp_path):
    from PIL import Image

    fused = vit[2]
    data = synthetic([1, 3, 16, 16], 8)
    np.save(tmp_path / "c.npy", data.transpose(0, 2, 3, 1))  # NHWC is accepted too
    loaded, where = load_calibration(tmp_path / "c.npy", [1, 3, 16, 16])
    assert np.array_equal(loaded, data) and "npy" in where
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(3):
        Image.fromarray((np.random.default_rng(i).random((20, 24, 3)) * 255).astype(np.uint8)).save(images / f"{i}.png")
    loaded, _ = load_calibration(images, [1, 3, 16, 16])
    assert loaded.shape == (3, 3, 16, 16)
    assert np.array_equal(synthetic([1, 3, 16, 16]), synthetic([1, 3, 16, 16]))  # seeded
    minmax = quantize_model(fused, tmp_path / "c.npy", "minmax")
    pct = quantize_model(fused, tmp_path / "c.npy", "percentile")
    name = next(n.outputs[0] for n in minmax.nodes if n.op == "linear")
    assert pct.tensors[name].scale <= minmax.tensors[name].scale
    for bad, fragment in ((tmp_path / "none.npy", "does not exist"), (tmp_path / "c.npy", "unknown calibration")):
        with pytest.raises(EdgevitError, match=fragment):
            quantize_model(fused, bad, "minmax" if "none" in str(bad) else "kl")


def test_unknown_op_is_refused_naming_op_and_node():
    text = """<ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 4] input) => (float[1, 4] y) { y = Cos (input) }"""
    model = onnx.parser.parse_model(text)
    model.graph.node[0].name = "the_cos"
    with pytest.raises(EdgevitError) as err:
        quantize_model(model)
    assert "Cos" in str(err.value) and "the_cos" in str(err.value) and "\n" not in str(err.value)
