"""Targets as data, and atomic outputs (a failed step leaves the previous output as it was)."""

from __future__ import annotations

import json

import pytest

from edgevit import targets
from edgevit.artifacts import atomic_dir, atomic_path, report_paths
from edgevit.errors import EdgevitError

from .conftest import assert_one_line_error, run_cli


def test_targets_are_complete():
    known = targets.all_targets()
    for name in ("rpi4", "rpi5", "arm64-linux", "x86-avx2", "x86-avx512"):
        t = known[name]
        assert t.backend == "tvm" and t.kind == "linux"
        assert {"target", "runtime_arch", "cross_compiler"} <= set(t.options), name
        assert t.options["target"]["kind"] == "llvm"
    assert known["rpi4"].options["target"]["mcpu"] == "cortex-a72"
    assert "avx512f" in known["x86-avx512"].options["cpu_flags"]  # else an AVX-2 host would run it into SIGILL


def test_unknown_target_lists_targets():
    with pytest.raises(EdgevitError, match="did you mean rpi4.*targets: .*x86-avx2"):
        targets.load("rpi44")


def test_targets_command_and_compile_rejects_unknown_target_before_work(tmp_path):
    proc = run_cli("targets", "--json")
    assert proc.returncode == 0, proc.stderr
    assert {"rpi4", "rpi5", "arm64-linux", "x86-avx2"} <= {t["name"] for t in json.loads(proc.stdout)}
    proc = run_cli("compile", "--target", "pi4", "no_such_model", "-o", str(tmp_path / "out"))
    assert_one_line_error(proc, 2, "unknown target 'pi4'", "rpi4")  # the target is checked first
    assert not (tmp_path / "out").exists()


def test_atomic_dir_keeps_previous_output_on_failure(tmp_path):
    final = tmp_path / "out"
    with atomic_dir(final) as d:
        (d / "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as d:
            (d / "a.txt").write_text("second, half-written")
            raise RuntimeError("compile failed midway")
    assert (final / "a.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary leftovers
    with atomic_dir(final) as d:
        (d / "b.txt").write_text("third")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]


def test_atomic_path_and_report_names(tmp_path):
    target = tmp_path / "m.onnx"
    with pytest.raises(ValueError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise ValueError
    assert list(tmp_path.iterdir()) == []
    assert report_paths(target, "export") == (tmp_path / "m.export.json", tmp_path / "m.export.md")


def test_outputs_get_usual_permissions(tmp_path):
    import os
    import stat

    with atomic_path(tmp_path / "m.onnx") as tmp:
        tmp.write_text("model")
    with atomic_dir(tmp_path / "out") as d:
        (d / "x").write_text("x")
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "m.onnx").stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o777 & ~mask
