"""`edgevit bench` through the CLI: predicted iPhone reports, resumable --zoo runs, host per-op breakdown."""

from __future__ import annotations

import json
from ..conftest import assert_one_line_error, run_cli

PNG = b"\x89PNG\r\n\x1a\n"
FACTORY = '''import torch


def net():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 1),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4))
'''


def test_iphone_bench_on_linux_is_a_labelled_prediction(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("bench", "--target", "iphone12", "mcu_former", "--input-size", "64", "64", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "PREDICTED" in proc.stderr
    report = json.loads((out / "mcu_former.bench.json").read_text())
    assert report["status"].startswith("predicted") and report["measured_ms"] is None
    lo, hi = report["band_ms"]
    assert 0 < lo < report["predicted_ms"] < hi < 100
    assert report["inputs"] == {"input": [1, 3, 64, 64]} and report["chip"] == "A14"
    assert report["predictor"]["loo_mape_pct"] > 0
    ops = report["by_op"]
    assert abs(sum(r["ms"] for r in ops) - report["predicted_ms"]) < 1e-2 * report["predicted_ms"] + 1e-3
    assert any(r["op"].startswith("MatMul") or r["op"].startswith("Conv") for r in ops)
    assert (out / "mcu_former.ops.png").read_bytes()[:8] == PNG
    md = (out / "mcu_former.bench.md").read_text()
    assert "PREDICTED" in md and "Leave-one-out" in md and "mcu_former.ops.png" in md


def test_zoo_run_is_resumable(tmp_path, monkeypatch, capsys):
    from edgevit import cli

    out = tmp_path / "zoo"
    monkeypatch.setenv("EDGEVIT_CACHE", str(tmp_path / "cache"))
    args = ("bench", "--zoo", "--target", "iphone12", "--models", "mcu_former,mcu_shvit", "-o", str(out))
    first = run_cli(*args)  # as a user runs it
    assert first.returncode == 0, first.stderr
    assert "0 from an earlier run" in first.stderr
    files = {p.name: p.stat().st_mtime_ns for p in (out / "models").iterdir()}
    assert set(files) == {"mcu_former.json", "mcu_shvit.json"}
    table = json.loads((out / "zoo.bench.json").read_text())
    assert len(table["rows"]) == 2 and table["rows"][0]["predicted_ms"] <= table["rows"][1]["predicted_ms"]
    assert all(r["predicted_ms"] > 0 and r["band_ms"][0] < r["predicted_ms"] < r["band_ms"][1] for r in table["rows"])
    assert (out / "zoo.png").read_bytes()[:8] == PNG and "predicted" in (out / "zoo.bench.md").read_text()

    # the reruns in-process (same code path, no interpreter start-up): everything done → nothing recomputed
    capsys.readouterr()
    assert cli.main(list(args)) == 0
    assert "2 from an earlier run" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in (out / "models").iterdir()} == files

    (out / "models" / "mcu_shvit.json").unlink()  # as if interrupted before the second model finished
    assert cli.main(list(args)) == 0
    assert "1 from an earlier run" in capsys.readouterr().err
    assert (out / "models" / "mcu_former.json").stat().st_mtime_ns == files["mcu_former.json"]
    assert json.loads((out / "models" / "mcu_shvit.json").read_text())["predicted_ms"] > 0


def test_host_bench_reports_a_per_op_breakdown(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEVIT_SCHEDULES", str(tmp_path / "schedules"))
    (tmp_path / "tiny.py").write_text(FACTORY)
    out = tmp_path / "host"
    proc = run_cli("bench", f"{tmp_path / 'tiny.py'}:net", "--target", "x86-avx2", "--input-size", "16", "16",
                   "--runs", "3", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "tiny_net.bench.json").read_text())
    tvm_ops, ort_ops = report["op_breakdown_tvm"], report["op_breakdown_onnxruntime"]
    assert report["op_breakdown"] == tvm_ops  # the edgevit build's own breakdown comes first
    assert tvm_ops["runs"] == 3 and ort_ops["runs"] == 3 and tvm_ops["total_ms"] > 0 and ort_ops["total_ms"] > 0
    assert "conv2d" in [r["op"] for r in tvm_ops["by_op"]] and "Conv" in [r["op"] for r in ort_ops["by_op"]]
    for ops in (tvm_ops, ort_ops):
        assert abs(sum(r["share"] for r in ops["by_op"]) - 1) < 0.01
    assert (out / "tiny_net.ops.png").read_bytes()[:8] == PNG
    md = (out / "tiny_net.bench.md").read_text()
    assert "Per-op breakdown" in md and "Heaviest TVM kernels" in md and "tiny_net.ops.png" in md


def test_bench_option_errors_are_one_line(capsys):
    from edgevit import cli

    assert_one_line_error(run_cli("bench", "--target", "iphone12"), 2, "needs MODEL")
    for argv, fragment in ((["shvit_s1", "--models", "a"], "--zoo"), (["--zoo", "--models", "nosuchnet"], "nosuchnet"),
                           (["shvit_s1", "--rpc", "h:1"], "--rpc"), (["--zoo", "shvit_s1"], "not both")):
        assert cli.main(["bench", "--target", "iphone12", *argv]) == 2
        err = capsys.readouterr().err
        assert "edgevit: error:" in err and fragment in err and "Traceback" not in err
