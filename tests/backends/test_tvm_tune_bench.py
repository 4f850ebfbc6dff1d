"""`edgevit tune` (chunked, committed, resumable MetaSchedule tuning) and `edgevit bench` (TVM vs ORT vs PyTorch).

A real MetaSchedule run costs ~2 min (106 s measured) even for one trial on these 2-core machines (build/run workers
import all of TVM), so the suite tests the chunk/commit/resume logic with the committed 2-trial fixture
database (tests/backends/make_tiny_db.py) and a stand-in for the measuring step; the real run is
`test_real_tuning_run`, enabled with EDGEVIT_REAL_TUNE=1.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import onnx
import pytest

from edgevit import targets
from edgevit.backends.tvm import emulation
from ..conftest import assert_one_line_error, run_cli

from . import tiny_conv_model

FIXTURE = Path(__file__).parent / "data" / "schedules" / "x86-avx2" / "tiny_conv"
FIXTURE_RECORDS = len((FIXTURE / "database_tuning_record.json").read_text().splitlines())
USERLAND = emulation.userland_dir()  # at collection time, as in test_tvm_emulated.py: reuse the cached userland
DB_FILES = ("database_workload.json", "database_tuning_record.json")
FACTORY = '''import torch


def net():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(8, 4))
'''


def _digest(folder: Path) -> str:
    return hashlib.sha256(b"".join((folder / f).read_bytes() for f in DB_FILES)).hexdigest()


@pytest.fixture
def tiny_onnx(tmp_path) -> Path:
    path = tmp_path / "tiny_conv.onnx"
    onnx.save(tiny_conv_model(), str(path))
    return path


@pytest.fixture
def schedules(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "schedules"
    root.mkdir()
    monkeypatch.setenv("EDGEVIT_SCHEDULES", str(root))
    return root


def test_tune_chunks_commit_and_resume(schedules, monkeypatch):
    """Each task's chunk lands in schedules/<target>/<model>-HxW/ with a ledger; a rerun measures nothing."""
    from edgevit.backends.tvm import adapter, compile_model
    from edgevit.backends.tvm.tune import run_tune

    calls = []

    def fake_tune_task(self, index, work_dir, trials):  # stands in for MetaSchedule's measurements
        calls.append((self.task_names()[index], trials))
        for f in DB_FILES:
            shutil.copyfile(FIXTURE / f, work_dir / f)

    monkeypatch.setattr(adapter.Tuner, "tune_task", fake_tune_task)
    target = targets.load("x86-avx2")
    first = run_tune(tiny_conv_model(), target, "tiny_conv", 2, (8, 8))
    folder = schedules / "x86-avx2" / "tiny_conv-8x8"
    names = [name for name, _ in calls]  # NHWC: the conv plus the layout transposes around it
    assert "fused_conv2d_relu" in names and calls == [(name, 2) for name in names]
    assert first["new_records"] == FIXTURE_RECORDS == first["records"] and first["database"] == str(folder)
    assert all((folder / f).stat().st_size > 0 for f in DB_FILES)
    ledger = json.loads((folder / "edgevit_tune.json").read_text())
    assert ledger["tasks"]["fused_conv2d_relu"]["trials"] == 2 and ledger["inputs"][0]["shape"] == [1, 3, 8, 8]
    assert ledger["layout"] == "NHWC"
    assert not [p for p in folder.parent.iterdir() if p.name.endswith(".part")]
    numbers = first["numbers"]  # the tuned build was run and compared with onnxruntime
    assert numbers["dropped"] == [] and numbers["max_abs"] <= 1e-4 * numbers["ref_range"] and numbers["ref_range"] > 0

    again = run_tune(tiny_conv_model(), target, "tiny_conv", 2, (8, 8))
    assert len(calls) == len(names) and again["new_records"] == 0 and again["tuned_tasks"] == 0
    assert again["numbers"] is None  # nothing tuned, nothing to check

    run_tune(tiny_conv_model(), target, "tiny_conv", 3, (8, 8))  # a bigger budget spends only the difference
    assert calls[len(names):] == [(name, 1) for name in names]

    run_tune(tiny_conv_model(), target, "tiny_conv", 5, (8, 8), top=1)  # --top 1: the heaviest task only
    assert len(calls) == 2 * len(names) + 1 and calls[-1][1] == 2

    # compile prefers <model>-<H>x<W>/ for a model of that size
    out = folder.parent / "out"
    out.mkdir()
    compile_model(tiny_conv_model(), target, out, name="tiny_conv")
    sched = json.loads((out / "tiny_conv.tvm.json").read_text())["schedules"]
    assert sched["status"] == "tuned" and sched["database"] == str(folder)


def test_tune_checks_the_tuned_build_against_onnxruntime(schedules, monkeypatch):
    """The check after tuning really runs the build: against a reference 0.5 off, even the untuned build fails."""
    from edgevit.backends.tvm import adapter, tune
    from edgevit.errors import EdgevitError

    def fake_tune_task(self, index, work_dir, trials):
        for f in DB_FILES:
            shutil.copyfile(FIXTURE / f, work_dir / f)

    monkeypatch.setattr(adapter.Tuner, "tune_task", fake_tune_task)
    real_ort = tune.run_ort
    monkeypatch.setattr(tune, "run_ort", lambda model, feeds: [r + 0.5 for r in real_ort(model, feeds)])
    with pytest.raises(EdgevitError, match="differs from onnxruntime by 0.5 .*without any tuned schedule"):
        tune.run_tune(tiny_conv_model(), targets.load("x86-avx2"), "tiny_conv", 2, (8, 8))


def test_ledger_keeps_dropped_schedules_across_runs(schedules, monkeypatch):
    """What the numeric check dropped stays listed in the ledger when a later run tunes more."""
    from edgevit.backends.tvm import adapter, tune
    from edgevit.ir.numerics import Parity

    def fake_tune_task(self, index, work_dir, trials):
        for f in DB_FILES:
            shutil.copyfile(FIXTURE / f, work_dir / f)

    drops = iter([[{"task": "fused_conv2d_relu", "seconds": 1e-5, "max_abs": 0.1, "ref_range": 1.0}], []])
    monkeypatch.setattr(adapter.Tuner, "tune_task", fake_tune_task)
    monkeypatch.setattr(tune, "verify", lambda folder, check, tol, names: (Parity(), next(drops)))
    target = targets.load("x86-avx2")
    ledger = schedules / "x86-avx2" / "tiny_conv-8x8" / "edgevit_tune.json"
    tune.run_tune(tiny_conv_model(), target, "tiny_conv", 2, (8, 8))
    assert [d["task"] for d in json.loads(ledger.read_text())["dropped"]] == ["fused_conv2d_relu"]
    tune.run_tune(tiny_conv_model(), target, "tiny_conv", 3, (8, 8))
    assert [d["task"] for d in json.loads(ledger.read_text())["dropped"]] == ["fused_conv2d_relu"]


def test_cli_tune_resumes_from_committed_database(schedules, tiny_onnx):
    """The committed database holds ≥ 1 record per task: --trials 1 reruns nothing, files unchanged."""
    folder = schedules / "x86-avx2" / "tiny_conv"
    shutil.copytree(FIXTURE, folder)
    before = _digest(folder)
    proc = run_cli("tune", str(tiny_onnx), "--target", "x86-avx2", "--trials", "1")
    assert proc.returncode == 0, proc.stderr
    assert f"tuned 0 of 3 tasks (0 new records, {FIXTURE_RECORDS} in all)" in " ".join(proc.stderr.split())
    assert _digest(folder) == before
    assert json.loads((folder / "edgevit_tune.json").read_text())["tasks"]["fused_conv2d_relu"]["trials"] == 2

    out = schedules.parent / "out"
    proc = run_cli("compile", str(tiny_onnx), "--target", "x86-avx2", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "TVM build: tuned" in proc.stderr
    assert json.loads((out / "tiny_conv.tvm.json").read_text())["schedules"]["status"] == "tuned"


def test_top_picks_the_tasks_that_weigh_most():
    """--top K: weight × best latency decides; a task without a valid record outranks every measured one."""
    from edgevit.backends.tvm.tune import heaviest

    weights, best = [6.0, 1.0, 3.0, 2.0, 1.0], [1e-3, 5e-3, 3e-3, None, 1e-4]  # 6, 5, 9, ?, 0.1 ms
    assert heaviest(weights, best, 1) == [3]
    assert heaviest(weights, best, 3) == [0, 2, 3]
    assert heaviest(weights, best, 9) == [0, 1, 2, 3, 4]


def test_cli_tune_top_must_be_positive(tiny_onnx):
    proc = run_cli("tune", str(tiny_onnx), "--target", "x86-avx2", "--top", "0", timeout=60)
    assert_one_line_error(proc, 2, "--top 0")


@pytest.mark.parametrize("command", ["tune", "bench"])
def test_unreachable_rpc_is_one_line_error(command, schedules, tiny_onnx, tmp_path):
    proc = run_cli(command, str(tiny_onnx), "--target", "rpi4", "--rpc", "127.0.0.1:1", timeout=60)
    assert_one_line_error(proc, 2, "127.0.0.1:1", "timeout")
    assert not list(schedules.iterdir())


@pytest.mark.parametrize("command", ["tune", "bench"])
def test_non_native_target_needs_rpc(command, tiny_onnx):
    proc = run_cli(command, str(tiny_onnx), "--target", "rpi4", timeout=60)
    assert_one_line_error(proc, 2, "pass --rpc HOST:PORT")


def test_bench_writes_json_markdown_and_chart(tmp_path, schedules):
    factory = tmp_path / "tiny.py"
    factory.write_text(FACTORY)
    out = tmp_path / "bench"
    proc = run_cli("bench", f"{factory}:net", "--target", "x86-avx2", "--input-size", "16", "16", "--runs", "5",
                   "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert {"tiny_net.bench.json", "tiny_net.bench.md", "tiny_net.bench.png", "build"} <= {p.name for p in out.iterdir()}
    report = json.loads((out / "tiny_net.bench.json").read_text())
    results = {r["runtime"]: r for r in report["results"]}
    assert set(results) == {"edgevit (TVM)", "onnxruntime", "onnxruntime (optimized graph)", "PyTorch"}
    assert results["onnxruntime"]["ratio_vs_onnxruntime"] == 1.0
    assert results["onnxruntime (optimized graph)"]["ratio_vs_onnxruntime_optimized_graph"] == 1.0
    for r in results.values():
        assert len(r["times_ms"]) == 5 and r["median_ms"] > 0 and r["ratio_vs_onnxruntime"] > 0
    assert results["onnxruntime (optimized graph)"]["max_abs_vs_onnxruntime"] < 1e-4 * 1.0
    range_ = 1.0
    assert results["edgevit (TVM)"]["max_abs_vs_onnxruntime"] < 1e-4 * range_
    assert results["PyTorch"]["max_abs_vs_onnxruntime"] < 1e-4 * range_  # same weights, same input
    assert report["schedules"]["status"] == "untuned" and report["inputs"] == {"input": [1, 3, 16, 16]}
    md = (out / "tiny_net.bench.md").read_text()
    assert "vs onnxruntime (optimized graph)" in md and "PyTorch" in md and "tiny_net.bench.png" in md
    assert (out / "tiny_net.bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_rpc_target_times_the_library_on_the_device(tmp_path, schedules):
    """rpi4 through the TVM RPC server running under qemu-aarch64 (see test_tvm_emulated.py)."""
    factory = tmp_path / "tiny.py"
    factory.write_text(FACTORY)
    out = tmp_path / "bench"
    userland = emulation.ensure_userland(USERLAND)
    with emulation.rpc_server(userland) as (host, port):
        proc = run_cli("bench", f"{factory}:net", "--target", "rpi4", "--input-size", "16", "16", "--runs", "2",
                       "--rpc", f"{host}:{port}", "-o", str(out), timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "tiny_net.bench.json").read_text())
    tvm = next(r for r in report["results"] if r["runtime"] == "edgevit (TVM)")
    assert tvm["device"] == f"rpi4 via RPC {host}:{port}" and tvm["median_ms"] > 0
    assert tvm["max_abs_vs_onnxruntime"] < 1e-4
    assert "measured on the device" in (out / "tiny_net.bench.md").read_text()


@pytest.mark.skipif(os.environ.get("EDGEVIT_REAL_TUNE") != "1", reason="real MetaSchedule run (~2 min): "
                    "set EDGEVIT_REAL_TUNE=1")
def test_real_tuning_run(schedules, tiny_onnx):
    proc = run_cli("tune", str(tiny_onnx), "--target", "x86-avx2", "--trials", "1", timeout=900)
    assert proc.returncode == 0, proc.stderr
    folder = schedules / "x86-avx2" / "tiny_conv"
    assert all((folder / f).stat().st_size > 0 for f in DB_FILES)
    before = _digest(folder)
    proc = run_cli("tune", str(tiny_onnx), "--target", "x86-avx2", "--trials", "1", timeout=300)
    assert proc.returncode == 0 and "0 new records" in " ".join(proc.stderr.split()), proc.stderr
    assert _digest(folder) == before
