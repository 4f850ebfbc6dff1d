"""Export: parity vs PyTorch across families, the three MODEL forms, and every error path via the CLI."""

from __future__ import annotations

import json
import textwrap

import onnx
import pytest

from edgevit.frontend.export import export
from edgevit.frontend.source import resolve
from edgevit.ir import graph as G

from .conftest import assert_one_line_error, run_cli

# One model per family, at a reduced input size (their resolution-bound parts accept it).
PARITY_MODELS = [
    ("efficientformerv2_s0", 64),
    ("shvit_s1", 64),
    ("lowformer_b0", 64),
    ("fastvit_t8", 64),
    ("mobileone_s0", 64),
    ("repvit_m0_9", 64),
    ("levit_128s", 64),
    ("edgenext_xx_small", 64),
    ("poolformerv2_s12", 64),
    ("tiny_vit_5m_224", 64),
    ("pvt_v2_b0", 64),
    ("mobilevit_xxs", 64),
    ("deit_tiny_patch16_224", 64),
    ("efficientvit_m0", 64),
    ("starnet_s050", 64),
]


@pytest.mark.parametrize("name,size", PARITY_MODELS, ids=[m for m, _ in PARITY_MODELS])
def test_export_matches_pytorch(name, size):
    result = export(resolve(name), (size, size), samples=2)
    onnx.checker.check_model(result.model, full_check=True)
    assert G.is_static(result.model)
    assert result.input_shapes == {"input": [1, 3, size, size]}
    assert result.parity.samples == 2 and result.parity.ref_range > 0.05  # outputs are not degenerate
    assert result.parity.within(1e-4), result.parity


def test_export_batch_and_opset():
    result = export(resolve("shvit_s1"), (64, 64), batch=2, opset=18, samples=1)
    assert result.input_shapes == {"input": [2, 3, 64, 64]}
    assert {o.version for o in result.model.opset_import if o.domain in ("", "ai.onnx")} == {18}


def test_dynamo_exporter_gives_native_ops():
    result = export(resolve("deit_tiny_patch16_224"), (32, 32), opset=20, exporter="dynamo", samples=1)
    ops = {n.op_type for n in result.model.graph.node}
    assert "LayerNormalization" in ops and "Erf" not in ops
    assert result.parity.within(1e-4)


# ---------------------------------------------------------------------------------- the three forms
FACTORY = textwrap.dedent("""
    import torch

    def make_model():
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.GELU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10))

    def broken():
        raise ValueError("no weights here")
""")


@pytest.fixture(scope="module")
def factory_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("user") / "net.py"
    path.write_text(FACTORY)
    return path


def _report(output):
    return json.loads(output.with_name(output.stem + ".export.json").read_text())


def test_cli_export_zoo_name_then_reexport_the_onnx(tmp_path):
    out = tmp_path / "shvit.onnx"
    proc = run_cli("export", "shvit_s1", "-o", str(out), "--input-size", "64", "64")
    assert proc.returncode == 0, proc.stderr
    assert "max abs error" in proc.stderr
    report = _report(out)
    assert report["model_kind"] == "zoo" and report["inputs"] == {"input": [1, 3, 64, 64]}
    assert report["parity"]["max_abs"] <= 1e-4 * report["parity"]["ref_range"]
    assert (tmp_path / "shvit.export.md").read_text().startswith("# edgevit export")

    again = tmp_path / "again.onnx"
    proc = run_cli("export", str(out), "-o", str(again))
    assert proc.returncode == 0, proc.stderr
    assert _report(again)["model_kind"] == "onnx"
    onnx.checker.check_model(onnx.load(str(again)), full_check=True)


def test_cli_export_python_factory(tmp_path, factory_file):
    out = tmp_path / "user.onnx"
    proc = run_cli("export", f"{factory_file}:make_model", "-o", str(out), "--input-size", "32", "48")
    assert proc.returncode == 0, proc.stderr
    report = _report(out)
    assert report["model_kind"] == "python" and report["inputs"] == {"input": [1, 3, 32, 48]}
    assert report["parity"]["max_abs"] <= 1e-4 * report["parity"]["ref_range"]


def test_user_onnx_with_dynamic_batch_is_made_static(tmp_path, factory_file):
    import torch

    from edgevit.frontend.source import _call_factory

    dyn = tmp_path / "dyn.onnx"
    torch.onnx.export(_call_factory(factory_file, "make_model"), (torch.zeros(1, 3, 16, 16),), str(dyn),
                      dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "n"}})
    result = export(resolve(str(dyn)), batch=3, samples=1)
    assert result.input_shapes == {"x": [3, 3, 16, 16]}


# ---------------------------------------------------------------------------------------- errors
def test_unknown_model_names_closest(tmp_path):
    proc = run_cli("export", "efficientformer_l11", "-o", str(tmp_path / "x.onnx"))
    assert_one_line_error(proc, 2, "unknown model 'efficientformer_l11'", "efficientformer_l1")
    assert not list(tmp_path.iterdir())


def test_not_onnx_file(tmp_path):
    bad = tmp_path / "notes.onnx"
    bad.write_text("this is not a model\n" * 50)
    assert_one_line_error(run_cli("export", str(bad), "-o", str(tmp_path / "o.onnx")), 2, "notes.onnx", "ONNX")
    assert_one_line_error(run_cli("analyze", str(bad)), 2, "notes.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.onnx"]


def test_truncated_onnx(tmp_path):
    good = tmp_path / "good.onnx"
    assert run_cli("export", "shvit_s1", "-o", str(good), "--input-size", "64", "64").returncode == 0
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for cmd in ("export", "analyze", "optimize"):
        args = [cmd, str(cut)] + (["-o", str(tmp_path / f"{cmd}.onnx")] if cmd != "analyze" else [])
        assert_one_line_error(run_cli(*args), 2, "cut.onnx", "truncated")
        assert not (tmp_path / f"{cmd}.onnx").exists()


def test_failed_parity_leaves_no_output(tmp_path):
    out = tmp_path / "m.onnx"
    proc = run_cli("export", "shvit_s1", "-o", str(out), "--input-size", "64", "64", "--tolerance", "0")
    assert_one_line_error(proc, 1, "parity check failed", "no file written")
    assert list(tmp_path.iterdir()) == []


def test_bad_python_factories(tmp_path, factory_file):
    assert_one_line_error(run_cli("export", f"{factory_file}:nope", "-o", str(tmp_path / "a.onnx")), 2,
                          "has no function 'nope'")
    assert_one_line_error(run_cli("export", f"{factory_file}:broken", "-o", str(tmp_path / "a.onnx")), 2,
                          "ValueError", "no weights here")
    assert_one_line_error(run_cli("export", str(tmp_path / "missing.py:f"), "-o", str(tmp_path / "a.onnx")), 2,
                          "no such Python file")
    assert list(tmp_path.iterdir()) == []


def test_bad_options(tmp_path):
    assert_one_line_error(run_cli("export", "shvit_s1", "-o", str(tmp_path / "a.txt")), 2, "must end in .onnx")
    assert_one_line_error(run_cli("export", "efficientformer_l1", "-o", str(tmp_path / "a.onnx"),
                                  "--input-size", "100", "100"), 2, "does not run at input size 100x100")
    assert list(tmp_path.iterdir()) == []
