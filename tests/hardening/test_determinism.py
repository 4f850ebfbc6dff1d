"""Deterministic artifacts (issue #9 item 3): compiling the same model for the same target twice gives
byte-identical files.

- Core ML (.mlpackage): coremltools 9.0 writes random UUIDs as the item identifiers of Manifest.json and
  serializes the spec's protobuf maps (metadata, MIL attributes) in hash order, so two saves differ.
  `edgevit compile` normalises both (artifacts.normalize_mlpackage: UUIDv5 of the item path, deterministic
  serialization — the same message); weight.bin was already reproducible. The result must still load.
- TVM (x86-avx2 .so): byte-identical as built (no timestamps or build paths embedded by TVM 0.27 + the
  system linker here).
- The compile report (`<name>.compile.json`) records how long each step took ("seconds"), which cannot
  repeat; "created" follows $SOURCE_DATE_EPOCH when set. Everything else in it must match.
The MCU C folder's determinism is checked in tests/backends/mcu/test_compile.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.backends import tiny_conv_model

from . import fuzzing as F


def _compile_twice(model_path: Path, target: str, a: Path, b: Path) -> None:
    """Two independent processes (so per-process hash seeds differ), run side by side."""
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    procs = [subprocess.Popen([sys.executable, "-m", "edgevit", "compile", "--target", target, str(model_path),
                               "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
             for out in (a, b)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err


def _drop_timings(obj):
    if isinstance(obj, dict):
        return {k: _drop_timings(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [_drop_timings(v) for v in obj]
    return obj


def _assert_identical(a: Path, b: Path) -> None:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        x, y = (a / rel).read_bytes(), (b / rel).read_bytes()
        if rel.name.endswith(".compile.json"):
            x, y = _drop_timings(json.loads(x)), _drop_timings(json.loads(y))
        assert x == y, f"{rel} differs between two identical compiles"


def test_coreml_package_is_byte_identical(tmp_path):
    path = tmp_path / "attn.onnx"
    path.write_bytes(F.base_attention(np.random.default_rng(0)).SerializeToString())
    _compile_twice(path, "iphone12", tmp_path / "a", tmp_path / "b")
    _assert_identical(tmp_path / "a", tmp_path / "b")
    package = tmp_path / "a" / "attn.mlpackage"
    manifest = json.loads((package / "Manifest.json").read_text())
    assert manifest["rootModelIdentifier"] in manifest["itemInfoEntries"]
    from edgevit.backends.coreml import coremltools
    from edgevit.backends.coreml.evaluate import load_package

    ct = coremltools()
    spec = ct.models.MLModel(str(package), skip_model_load=True).get_spec()  # still a valid package
    assert spec.description.metadata.userDefined["edgevit.model"] == "attn"
    assert load_package(package) is not None


def test_tvm_library_is_byte_identical(tmp_path):
    path = tmp_path / "tiny.onnx"
    path.write_bytes(tiny_conv_model(8).SerializeToString())
    _compile_twice(path, "x86-avx2", tmp_path / "a", tmp_path / "b")
    _assert_identical(tmp_path / "a", tmp_path / "b")
