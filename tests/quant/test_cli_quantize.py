"""`edgevit quantize` through the real CLI: outputs, report, and a bad calibration path."""

from __future__ import annotations

import json

import numpy as np

from ..conftest import assert_one_line_error, run_cli


def test_quantize_writes_integer_model_and_report(tmp_path):
    out = tmp_path / "q"
    proc = run_cli("quantize", "mcu_former", "-o", str(out), "--method", "percentile")
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in out.iterdir()} >= {"mcu_former.int8.npz", "mcu_former.int8.json",
                                               "mcu_former.qdq.onnx", "mcu_former.quantize.json"}
    report = json.loads((out / "mcu_former.quantize.json").read_text())
    assert report["layers"] and all({"scale", "zero_point", "clipped_fraction", "sqnr_db"} <= set(layer) for layer in report["layers"])
    with np.load(out / "mcu_former.int8.npz") as params:
        assert any(params[k].dtype == np.int8 for k in params.files)


def test_quantize_bad_calibration_path(tmp_path):
    proc = run_cli("quantize", "mcu_former", "-o", str(tmp_path / "q"), "--calib", str(tmp_path / "none.npy"))
    assert_one_line_error(proc, 2, "none.npy")
    assert not (tmp_path / "q").exists()
