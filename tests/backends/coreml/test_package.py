"""The Core ML package: round trip through MLModel(skip_model_load=True), image input + labels, compression,
the Neural-Engine report, the macOS gate, and user errors through the real CLI."""

from __future__ import annotations

import json
import sys
from argparse import Namespace

import numpy as np
import onnx
import pytest

from edgevit import targets
from edgevit.backends.coreml import coremltools, compile_model, macos
from edgevit.backends.coreml.evaluate import load_package, op_histogram
from edgevit.errors import EdgevitError

from . import tiny_classifier
from .. import unconvertible_model
from ...conftest import assert_one_line_error, run_cli

ct = coremltools()
IPHONES = ("iphone12", "iphone13", "iphone14", "iphone15")


def _args(**kw):
    base = dict(precision=None, image_input=False, labels=None, weights=None, input_size=None, batch=None)
    return Namespace(**{**base, **kw})


def _compile(tmp_path, target="iphone12", model=None, **kw):
    out = tmp_path / "out"
    out.mkdir()
    result = compile_model(model or tiny_classifier(), targets.load(target), out, "tiny", _args(**kw))
    return out, result.report["coreml"]


def test_iphone_targets_declare_deployment_target_and_compute_units():
    for name in IPHONES:
        t = targets.load(name)
        assert (t.backend, t.kind) == ("coreml", "ios")
        assert t.options["minimum_deployment_target"] in ("iOS16", "iOS17")
        assert t.options["compute_units"] == "ALL" and t.options["chips"]


@pytest.mark.parametrize("target", ["iphone12", "iphone15"])
def test_package_round_trip_matches_report(tmp_path, target):
    out, r = _compile(tmp_path, target)
    package = out / "tiny.mlpackage"
    model = ct.models.MLModel(str(package), skip_model_load=True)
    spec = model.get_spec()
    assert spec.WhichOneof("Type") == "mlProgram"
    assert [(f.name, list(f.type.multiArrayType.shape)) for f in spec.description.input] == \
        [(i["name"], i["shape"]) for i in r["inputs"]] == [("x", [1, 3, 16, 16])]
    assert [f.name for f in spec.description.output] == [o["name"] for o in r["outputs"]] == ["logits"]
    func = spec.mlProgram.functions["main"]
    ops = {}
    for op in func.block_specializations[func.opset].operations:
        if op.type != "const":
            ops[op.type] = ops.get(op.type, 0) + 1
    assert ops == r["ops"] == op_histogram(load_package(package))
    assert r["precision"] == "fp16" and ops.get("cast") == 2  # fp32 I/O around an fp16 program
    assert r["minimum_deployment_target"] == targets.load(target).options["minimum_deployment_target"]
    assert spec.description.metadata.author == "edgevit"
    assert spec.description.metadata.userDefined["edgevit.target"] == target
    assert r["numerics"]["samples"] == 4 and r["numerics"]["relative_to_range"] < 1e-2
    assert r["device"]["status"].startswith("skipped")  # Linux: no Core ML runtime


def test_fp32_program_parity_and_ane_says_gpu_cpu(tmp_path):
    _, r = _compile(tmp_path, precision="fp32")
    assert r["numerics"]["relative_to_range"] <= 1e-4
    assert "cast" not in r["ops"]
    ne = r["neural_engine"]
    assert ne["likely_fallback"] == ne["ops_considered"] and "GPU/CPU" in ne["verdict"]
    assert ne["fallback_by_rule"] == {"fp16-only": ne["ops_considered"]}


def test_image_input_and_labels(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"class {i}" for i in range(10)) + "\n")
    out, r = _compile(tmp_path, image_input=True, labels=str(labels), precision="fp32")
    spec = ct.models.MLModel(str(out / "tiny.mlpackage"), skip_model_load=True).get_spec()
    (inp,) = spec.description.input
    assert inp.type.WhichOneof("Type") == "imageType" and inp.type.imageType.width == 16
    assert spec.description.predictedFeatureName == "classLabel"
    assert [o["type"] for o in r["outputs"]] == ["stringType", "dictionaryType"]
    assert r["image_input"]["mean"] == [0.485, 0.456, 0.406]
    kinds = {x["rewrite"] for x in r["neural_engine"]["rewrites"]}
    assert {"normalization", "classifier"} <= kinds  # 1/std folded into the stem conv, softmax appended
    assert r["numerics"]["compared_on"] == "class probabilities"
    assert r["numerics"]["relative_to_range"] <= 1e-4 and r["numerics"]["top1_agreement"] == 1.0


@pytest.mark.parametrize("mode", ["int8", "palettize4", "palettize6"])
def test_compression_shrinks_package_and_is_rechecked(tmp_path, mode):
    out, r = _compile(tmp_path, weights=mode)
    c = r["compression"]
    assert c["package_bytes_after"] < c["package_bytes_before"]
    op = {"int8": "constexpr_affine_dequantize"}.get(mode, "constexpr_lut_to_dense")
    program = load_package(out / "tiny.mlpackage")
    assert any(o.op_type == op for o in program.functions["main"].operations)
    assert c["numerics"]["samples"] == 4 and np.isfinite(c["numerics"]["max_abs"])
    assert c["numerics"]["relative_to_range"] < 0.1  # dequantized weights, evaluated vs onnxruntime


def test_ane_report_flags_gather_and_lists_rules(tmp_path):
    from . import node_model

    model = node_model("Gather", {"x": [1, 8, 4, 4]}, {"i": np.array([3, 0, 5], np.int64)}, axis=1)
    _, r = _compile(tmp_path, model=model)
    ne = r["neural_engine"]
    assert ne["fallback_types"] == {"gather": 1} and ne["fallback_by_rule"] == {"unsupported-op": 1}
    assert all(rule["source"] and rule["kind"] in ("published", "inferred") for rule in ne["rules"])


def test_labels_count_must_match_classes(tmp_path):
    labels = tmp_path / "three.txt"
    labels.write_text("a\nb\nc\n")
    with pytest.raises(EdgevitError, match="3 labels but the model has 10 classes"):
        _compile(tmp_path, labels=str(labels))


def test_macos_code_is_gated():
    assert macos.available() is (sys.platform == "darwin")
    if not macos.available():
        with pytest.raises(RuntimeError, match="macOS"):
            macos.measure("x.mlpackage", {})


# ----------------------------------------------------------------------------------------------- CLI
def test_cli_unsupported_op_one_line_no_output(tmp_path):
    src = tmp_path / "bad.onnx"
    onnx.save(unconvertible_model(), str(src))
    out = tmp_path / "out"
    proc = run_cli("compile", "--target", "iphone12", str(src), "-o", str(out))
    assert_one_line_error(proc, 2, "Celu", "node")
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_cli_missing_labels_fails_before_model_work(tmp_path):
    proc = run_cli("compile", "--target", "iphone13", "shvit_s1", "--labels", str(tmp_path / "nope.txt"))
    assert_one_line_error(proc, 2, "--labels", "no such file")
    assert "export" not in proc.stderr


def test_cli_compile_writes_package_and_report(tmp_path):
    src = tmp_path / "tiny.onnx"
    onnx.save(tiny_classifier(), str(src))
    out = tmp_path / "out"
    proc = run_cli("compile", "--target", "iphone14", str(src), "-o", str(out), "--weights", "int8")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "tiny.compile.json").read_text())
    assert report["backend"] == "coreml" and report["coreml"]["compression"]["mode"] == "int8"
    assert (out / "tiny.mlpackage").is_dir() and (out / "tiny.compile.md").exists()
    assert "Running MIL" not in proc.stderr  # coremltools' progress bars are silenced
