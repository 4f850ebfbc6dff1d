"""The zoo: coverage of the literature, computed params/MACs, and the `models` command."""

from __future__ import annotations

import json

import pytest

from edgevit import zoo
from edgevit.errors import EdgevitError
from edgevit.frontend.export import export
from edgevit.frontend.source import resolve
from edgevit.ir.analysis import analyze

from .conftest import assert_one_line_error, run_cli


def test_zoo_covers_the_efficient_vit_literature():
    entries = zoo.entries()
    assert len(entries) >= 40
    assert len(zoo.families()) >= 15
    for family in ("efficientformer", "efficientformerv2", "shvit", "nextvit", "lowformer", "fastvit",
                   "mobileone", "repvit", "levit", "edgenext", "poolformer", "tinyvit", "swin", "pvtv2",
                   "mobilevit", "deit"):
        assert family in zoo.families(), family
    assert entries["mobilevit_xs"].input_size == (256, 256)  # taken from timm's config, not typed in


def test_unknown_name_suggests_closest():
    with pytest.raises(EdgevitError, match="closest: shvit_s1"):
        zoo.lookup("shvit_s11")


def test_stats_are_computed_and_agree_with_the_onnx_analyzer():
    stats = zoo.stats("shvit_s1", (128, 128))
    model = zoo.create("shvit_s1", (128, 128))
    assert stats["params"] == sum(p.numel() for p in model.parameters())
    onnx_macs = analyze(export(resolve("shvit_s1"), (128, 128), samples=1).model).macs
    # Two independent counters (torch dispatch vs ONNX shapes) must agree closely.
    assert abs(stats["macs"] - onnx_macs) / onnx_macs < 0.02, (stats["macs"], onnx_macs)


def test_random_weights_are_not_degenerate():
    """BN statistics and layer scales are re-drawn, so parity checks see O(1) outputs."""
    import torch

    model = zoo.create("repvit_m0_9", (64, 64))
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert 0.1 < float(out.max() - out.min()) < 1e3


def test_models_command_lists_a_family_as_json():
    proc = run_cli("models", "--family", "shvit", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["name"] for r in rows] == ["shvit_s1", "shvit_s2", "shvit_s3", "shvit_s4"]
    assert all(r["params"] > 1e6 and r["macs"] > 1e8 for r in rows)
    assert all(r["params"] < r["int8_weight_bytes"] < 1.1 * r["params"] for r in rows)
    assert rows[0]["macs"] < rows[-1]["macs"]


def test_mcu_family_fits_stm32_flash():
    proc = run_cli("models", "--family", "mcu", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) >= 3
    assert all(r["int8_weight_bytes"] < 1024 * 1024 for r in rows)  # STM32F746: 1 MB flash


def test_models_command_rejects_unknown_family():
    assert_one_line_error(run_cli("models", "--family", "nosuch"), 2, "unknown family", "shvit")
