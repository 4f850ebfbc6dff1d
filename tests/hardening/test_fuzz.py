"""Hostile inputs (issue #9 item 1): generated/corrupted ONNX models end in a one-line error or a valid
result — never a traceback, a hang or a crash. A short run here; the long run is scripts/fuzz.py."""

from __future__ import annotations

import collections

import onnx
import pytest

from tests.conftest import assert_one_line_error, run_cli

from . import fuzzing as F

SHORT_RUN = range(0, 80)  # seeds; scripts/fuzz.py runs 1,200 from 0


@pytest.fixture(scope="module")
def warm():
    F.preload()


def test_short_fuzz_run(warm):
    outcomes = collections.Counter()
    failures = []
    for seed in SHORT_RUN:
        r = F.run_case(F.make_case(seed), timeout=30)
        outcomes[r["outcome"]] += 1
        if r["outcome"] not in ("ok", "error") or (r["outcome"] == "error" and not r["one_line"]):
            failures.append(r)
    assert not failures, failures
    assert outcomes["ok"] >= 3 and outcomes["error"] >= 40, outcomes  # both paths exercised


def test_generator_is_deterministic_and_covers_the_issue_list():
    assert F.make_case(123).data == F.make_case(123).data
    seen = {m for seed in range(600) for m in F.make_case(seed).mutations}
    for needed in ("truncate", "init_dtype", "input_dtype", "dangling_input", "cycle", "huge_dim",
                   "zero_or_negative_dim", "unknown_op", "init_shape", "external_data", "allocation_bomb"):
        assert needed in seen, needed


def _write(tmp_path, seed_or_model, name="bad.onnx"):
    path = tmp_path / name
    if isinstance(seed_or_model, onnx.ModelProto):
        path.write_bytes(seed_or_model.SerializeToString())
    else:
        F.write_case(seed_or_model, tmp_path)
        (tmp_path / "model" / "model.onnx").rename(path)
    return path


def _no_output_left(folder, *names):
    for n in names:
        assert not (folder / n).exists(), n
    assert not [p for p in folder.rglob("*") if p.name.endswith((".part", ".old"))]


def test_cli_optimize_truncated_file(tmp_path):
    data = F.base_classifier(__import__("numpy").random.default_rng(0)).SerializeToString()
    (tmp_path / "bad.onnx").write_bytes(data[: len(data) // 2])
    proc = run_cli("optimize", str(tmp_path / "bad.onnx"), "-o", str(tmp_path / "x.onnx"), timeout=120)
    assert_one_line_error(proc, 2, "not a valid ONNX file")
    _no_output_left(tmp_path, "x.onnx", "x.optimize.json")


@pytest.mark.parametrize("target,mutate,fragment", [
    ("rpi4", "external_data", "outside the model's folder"),
    ("iphone12", "cycle", "invalid ONNX model"),
    ("stm32f746", "huge_init", "over the limit"),
])
def test_cli_compile_hostile_model(tmp_path, target, mutate, fragment):
    import numpy as np

    model = F.base_conv(np.random.default_rng(0))
    if mutate == "external_data":
        t = model.graph.initializer[0]
        t.ClearField("raw_data")
        t.data_location = onnx.TensorProto.EXTERNAL
        t.external_data.add(key="location", value="../secret.bin")
        (tmp_path / "secret.bin").write_bytes(b"\0" * 432)
        (tmp_path / "m").mkdir()
        path = tmp_path / "m" / "bad.onnx"
        path.write_bytes(model.SerializeToString())
    else:
        if mutate == "cycle":
            model.graph.node[0].input[0] = model.graph.node[1].output[0]
        else:
            model.graph.initializer.append(F.huge_tensor("bomb"))
        path = _write(tmp_path, model)
    proc = run_cli("compile", "--target", target, str(path), "-o", str(tmp_path / "out"), timeout=180)
    assert_one_line_error(proc, 2, fragment)
    _no_output_left(tmp_path, "out")
