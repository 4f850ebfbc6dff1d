"""Resource limits and path safety (issue #9 item 5): oversized models are refused up front with the
number and the bound; external data must stay in the model's folder; names derived from model files
never escape the output folder; an output folder that is not an earlier output is never replaced."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgevit.artifacts import atomic_dir, check_output_dir, sweep_stale, write_report
from edgevit.errors import EdgevitError
from edgevit.frontend.source import resolve, safe_name
from edgevit.ir import graph as G
from edgevit.ir import limits

from . import fuzzing as F


def _conv(size=8):
    return F.base_conv(np.random.default_rng(0)) if size == 8 else _sized(size)


def _sized(size):
    m = F.base_conv(np.random.default_rng(0))
    for vi in (m.graph.input[0], m.graph.output[0]):
        for d in vi.type.tensor_type.shape.dim[2:]:
            d.dim_value = size
    return m


def test_macs_params_activation_bounds(monkeypatch):
    m = _conv()
    limits.check(m)  # within the defaults
    monkeypatch.setenv("EDGEVIT_MAX_MACS", "1K")
    with pytest.raises(EdgevitError, match=r"needs 6\.91K MACs \(6912\), over the limit of 1K \(\$EDGEVIT_MAX_MACS\)"):
        limits.check(m)
    monkeypatch.delenv("EDGEVIT_MAX_MACS")
    monkeypatch.setenv("EDGEVIT_MAX_PARAMS", "100")
    with pytest.raises(EdgevitError, match="112 parameters, over the limit of 100"):
        limits.check(m)
    monkeypatch.delenv("EDGEVIT_MAX_PARAMS")
    with pytest.raises(EdgevitError, match=r"input 'x' \[1, 3, 30000, 30000\].*activation limit of 1GiB"):
        limits.check(_sized(30000))
    with pytest.raises(EdgevitError, match=r"input 1x3x20000x20000 float32 needs 4\.47GiB"):
        limits.check_input(1, (20000, 20000))
    monkeypatch.setenv("EDGEVIT_MAX_MACS", "lots")
    with pytest.raises(EdgevitError, match="give a number"):
        limits.bounds()


def test_computed_allocation_bomb_is_refused_before_running():
    m = F.base_conv(np.random.default_rng(0))
    m.graph.initializer.append(numpy_helper.from_array(np.array([60000, 60000], np.int64), "shape"))
    m.graph.node.append(helper.make_node("ConstantOfShape", ["shape"], ["big"],
                                         value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])))
    m.graph.output.append(helper.make_tensor_value_info("big", TensorProto.FLOAT, [60000, 60000]))
    with pytest.raises(EdgevitError, match=r"activation 'big' \(60000x60000 float\) needs 13\.4GiB"):
        limits.check(m)


def _external_model(tmp_path, location, blob_at=None):
    m = F.base_conv(np.random.default_rng(0))
    w = m.graph.initializer[0]
    raw = numpy_helper.to_array(w).tobytes()
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value=location)
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    if blob_at is not None:
        blob_at.parent.mkdir(parents=True, exist_ok=True)
        blob_at.write_bytes(raw)
    path = folder / "m.onnx"
    path.write_bytes(m.SerializeToString())
    return path, raw


def test_external_data_inside_the_folder_loads(tmp_path):
    path, raw = _external_model(tmp_path, "weights/w.bin", tmp_path / "model" / "weights" / "w.bin")
    model = G.load_onnx(path)
    assert numpy_helper.to_array(model.graph.initializer[0]).tobytes() == raw


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/hostname", "weights/../../secret.bin", "link.bin"])
def test_external_data_outside_the_folder_is_refused(tmp_path, location):
    path, _ = _external_model(tmp_path, location, tmp_path / "secret.bin")
    if location == "link.bin":
        (tmp_path / "model" / "link.bin").symlink_to(tmp_path / "secret.bin")
    with pytest.raises(EdgevitError, match="outside the model's folder"):
        G.load_onnx(path)


def test_external_data_range_and_missing_file(tmp_path):
    path, _ = _external_model(tmp_path, "missing.bin")
    with pytest.raises(EdgevitError, match="not found beside the model"):
        G.load_onnx(path)
    path, raw = _external_model(tmp_path, "w.bin", tmp_path / "model" / "w.bin")
    m = onnx.load_from_string(path.read_bytes())
    m.graph.initializer[0].external_data.add(key="offset", value=str(len(raw) * 10))
    path.write_bytes(m.SerializeToString())
    with pytest.raises(EdgevitError, match="lies outside 'w.bin'"):
        G.load_onnx(path)


def test_initializer_data_must_match_its_dims(tmp_path):
    m = F.base_conv(np.random.default_rng(0))
    m.graph.initializer[0].dims[0] = 5
    (tmp_path / "m.onnx").write_bytes(m.SerializeToString())
    with pytest.raises(EdgevitError, match=r"tensor 'w': dims \[5, 3, 3, 3\] need 540 bytes of FLOAT data, the file holds 432"):
        G.load_onnx(tmp_path / "m.onnx")


def test_names_from_model_files_stay_in_the_output_folder(tmp_path):
    assert safe_name("..") == "model" and safe_name(".hidden") == "hidden"
    assert safe_name("a b/../c") == "a_b_.._c" and "/" not in safe_name("x/../../y")
    weird = tmp_path / "..onnx"
    weird.write_bytes(b"x")
    assert resolve(str(weird)).name == "model"
    assert resolve(str(tmp_path / "...onnx") if (tmp_path / "...onnx").write_bytes(b"x") else "").name == "model"


def test_output_folder_that_is_not_an_earlier_output_is_refused(tmp_path, monkeypatch):
    precious = tmp_path / "src"
    precious.mkdir()
    (precious / "notes.txt").write_text("mine")
    with pytest.raises(EdgevitError, match="not an earlier edgevit output"):
        check_output_dir(precious)
    monkeypatch.chdir(precious)
    with pytest.raises(EdgevitError, match="current folder"):
        check_output_dir(precious.parent)
    (tmp_path / "file").write_text("x")
    with pytest.raises(EdgevitError, match="is a file"):
        check_output_dir(tmp_path / "file")
    earlier = tmp_path / "out"
    with atomic_dir(earlier) as d:
        write_report(d / "m.onnx", "compile", {}, "# x")
    check_output_dir(earlier)  # an earlier output: replaced
    check_output_dir(tmp_path / "new")  # missing: fine
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty")


def test_stale_temporaries_of_dead_runs_are_swept(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    final = tmp_path / "out"
    stale = tmp_path / f".out.{dead}.abcd1234.part"
    stale.mkdir()
    (stale / "half.c").write_text("/* half")
    live = tmp_path / f".out.{os.getppid()}.efgh5678.part"  # a live process: left alone
    live.mkdir()
    other = tmp_path / f".outer.{dead}.abcd1234.part"  # another output's temp: left alone
    other.mkdir()
    interrupted = tmp_path / f".out.{dead}.ijkl9012.old"  # swap cut between its two renames
    (interrupted / "previous").mkdir(parents=True)
    (interrupted / "previous" / "model.c").write_text("old output")
    assert sorted(p.name for p in sweep_stale(final)) == sorted([stale.name, interrupted.name])
    assert (final / "model.c").read_text() == "old output"  # moved back into place
    assert live.exists() and other.exists()
