"""TVM backend on the host (x86-avx2): CLI compile, metadata, numerics vs onnxruntime, user errors, schedules."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgevit import targets
from edgevit.errors import EdgevitError
from edgevit.ir import graph as G
from edgevit.ir.numerics import Parity, run_ort
from ..conftest import assert_one_line_error, run_cli

from . import tiny_conv_model, unconvertible_model

TOLERANCE = 1e-4  # × output range
SIZE = (64, 64)  # reduced input size: keeps export + compile of shvit_s1 within seconds
DB = Path(__file__).parent / "data" / "schedules"


@pytest.fixture(scope="module")
def x86_build(tmp_path_factory):
    """`edgevit compile shvit_s1 --target x86-avx2` once for the module, untuned (an empty schedules root, not
    the shipped databases): (out dir, CLI process)."""
    root = tmp_path_factory.mktemp("tvm-x86")
    out = root / "out"
    with pytest.MonkeyPatch.context() as mp:  # the child process inherits it
        mp.setenv("EDGEVIT_SCHEDULES", str(root / "no-schedules"))
        proc = run_cli("compile", "shvit_s1", "--target", "x86-avx2", "--input-size", *map(str, SIZE), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    return out, proc


@pytest.fixture(scope="module")
def reference():
    """The unoptimized export: the compiled library must still match it (passes are checked to 1e-4)."""
    from edgevit.frontend.export import export
    from edgevit.frontend.source import resolve

    return export(resolve("shvit_s1"), SIZE, samples=1).model


def test_out_folder_holds_library_metadata_and_runner(x86_build):
    out, proc = x86_build
    assert {"shvit_s1.so", "shvit_s1.tvm.json", "run.py", "shvit_s1.compile.json", "shvit_s1.compile.md"} <= {
        p.name for p in out.iterdir()}
    assert "TVM build: untuned" in proc.stderr


def test_metadata_json(x86_build):
    out, _ = x86_build
    meta = json.loads((out / "shvit_s1.tvm.json").read_text())
    assert meta["library"] == "shvit_s1.so" and "embedded" in meta["weights"]
    assert meta["inputs"] == [{"name": "input", "shape": [1, 3, *SIZE], "dtype": "float32"}]
    assert [(o["shape"], o["dtype"]) for o in meta["outputs"]] == [([1, 1000], "float32")]
    assert meta["target"]["name"] == "x86-avx2"
    assert meta["target"]["tvm"] == targets.load("x86-avx2").options["target"]
    assert meta["target"]["runtime_arch"] == "x86_64"
    assert meta["versions"] == {"tvm": "0.27.0.post1", "tvm_ffi": "0.1.14.post1"}
    gemm = meta["schedules"].pop("gemm_microkernel_prim_funcs")  # x86-avx2's 1x1 convs/matmuls: no tuning needed
    assert meta["schedules"] == {"status": "untuned", "database": None, "sha256": None} and gemm > 0
    report = json.loads((out / "shvit_s1.compile.json").read_text())
    assert report["tvm"]["parity"]["max_abs"] <= TOLERANCE * report["tvm"]["parity"]["ref_range"]


def test_library_and_runner_match_onnxruntime(x86_build, reference, tmp_path):
    """The .so in the VM and run.py (as a user runs it) against onnxruntime on the same seeded input."""
    from edgevit.backends.tvm import adapter

    out, _ = x86_build
    feeds = G.seeded_inputs(reference, {"input": [1, 3, *SIZE]}, seed=1)
    ref = run_ort(reference, feeds)
    vm = Parity()
    for r, g in zip(ref, adapter.run_local(out / "shvit_s1.so", list(feeds.values()))):
        vm.update(r, g)
    np.save(tmp_path / "x.npy", feeds["input"])
    proc = subprocess.run([sys.executable, str(out / "run.py"), "--input", str(tmp_path / "x.npy"), "--repeat", "2",
                           "--save", str(tmp_path / "res")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "latency median" in proc.stdout
    runner = Parity()
    runner.update(ref[0], np.load(tmp_path / "res" / "output_0.npy"))
    print(f"x86 max abs error: VM {vm.max_abs:.3g}, run.py {runner.max_abs:.3g} (range {vm.ref_range:.3g})")
    assert vm.within(TOLERANCE) and runner.within(TOLERANCE), (vm, runner)


def test_unknown_target_is_one_line_error(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("compile", "shvit_s1", "--target", "rpi9", "-o", str(out))
    assert_one_line_error(proc, 2, "unknown target 'rpi9'", "rpi4")
    assert not out.exists()


def test_unconvertible_ops_listed_before_compiling(tmp_path):
    model_path = tmp_path / "bad.onnx"
    onnx.save(unconvertible_model(), str(model_path))
    out = tmp_path / "out"
    proc = run_cli("compile", str(model_path), "--target", "x86-avx2", "-o", str(out))
    assert_one_line_error(proc, 2, "cannot convert 2 op type(s): Celu, Det")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]  # no out/, no .part folder


def test_custom_domain_op_is_unconvertible(tmp_path):
    """A custom op without a local function body must not be taken for a TVM-known op of the same name."""
    from edgevit.backends.tvm import compile_model

    model = tiny_conv_model()
    model.graph.node[1].domain = "edgevit"
    model.graph.node[1].op_type = "Attention"
    model.opset_import.append(onnx.helper.make_opsetid("edgevit", 1))
    with pytest.raises(EdgevitError, match=r"cannot convert 1 op type\(s\): edgevit.Attention"):
        compile_model(model, targets.load("x86-avx2"), tmp_path, name="m")
    assert not list(tmp_path.iterdir())


def test_schedules_database_is_applied(tmp_path, monkeypatch):
    """The committed 2-trial database (tests/backends/make_tiny_db.py) schedules every PrimFunc."""
    from edgevit.backends.tvm import compile_model

    monkeypatch.setenv("EDGEVIT_SCHEDULES", str(DB))
    result = compile_model(tiny_conv_model(), targets.load("x86-avx2"), tmp_path, name="tiny_conv")
    sched = json.loads((tmp_path / "tiny_conv.tvm.json").read_text())["schedules"]
    folder = DB / "x86-avx2" / "tiny_conv"
    digest = hashlib.sha256((folder / "database_workload.json").read_bytes()
                            + (folder / "database_tuning_record.json").read_bytes()).hexdigest()
    assert sched["status"] == "tuned" and sched["sha256"] == digest
    assert sched["scheduled_prim_funcs"] == sched["prim_funcs"] > 0
    assert result.report["tvm"]["parity"]["max_abs"] <= TOLERANCE * result.report["tvm"]["parity"]["ref_range"]


def test_database_for_another_size_leaves_build_untuned(tmp_path, monkeypatch):
    from edgevit.backends.tvm import compile_model

    monkeypatch.setenv("EDGEVIT_SCHEDULES", str(DB))
    compile_model(tiny_conv_model(size=16), targets.load("x86-avx2"), tmp_path, name="tiny_conv")
    sched = json.loads((tmp_path / "tiny_conv.tvm.json").read_text())["schedules"]
    assert sched["status"] == "untuned" and sched["scheduled_prim_funcs"] == 0 and sched["database"]


def test_target_needing_cpu_features_the_host_lacks(tmp_path, monkeypatch):
    """A library for CPU features this host lacks (AVX-512 on an AVX2 machine) is built but never run here: compile
    says so instead of dying on SIGILL in the parity check, and tune/bench refuse before any model work."""
    import dataclasses

    from edgevit.backends.tvm import compile_model, host_mismatch

    x86 = targets.load("x86-avx2")
    assert host_mismatch(x86) is None
    lacking = dataclasses.replace(x86, options={**x86.options, "cpu_flags": ["avx2", "no_such_isa"]})
    assert host_mismatch(lacking) == "needs CPU features this host lacks (no_such_isa)"
    result = compile_model(tiny_conv_model(), lacking, tmp_path, name="tiny_conv")
    assert result.report["tvm"]["parity"] is None and (tmp_path / "tiny_conv.so").exists()
    assert "not run here (target needs CPU features this host lacks (no_such_isa))" in result.summary

    folder = tmp_path / "targets"
    folder.mkdir()
    text = targets.load("x86-avx512").path.read_text().replace('"avx512f"', '"no_such_isa", "avx512f"')
    (folder / "x86-future.toml").write_text(text.replace('name = "x86-avx512"', 'name = "x86-future"'))
    monkeypatch.setenv("EDGEVIT_TARGETS", str(folder))
    for command in ("tune", "bench"):
        proc = run_cli(command, "no_such_model.onnx", "--target", "x86-future", timeout=60)
        assert_one_line_error(proc, 2, "target x86-future needs CPU features this host lacks (no_such_isa", "--rpc")


def test_avx512_target_runs_where_the_cpu_has_it(tmp_path):
    """x86-avx512 builds everywhere; on a host with AVX-512 (these development machines) it runs and matches
    onnxruntime, elsewhere compile reports it was not run. Either way the library is written."""
    from edgevit.backends.tvm import compile_model, host_mismatch

    target = targets.load("x86-avx512")
    result = compile_model(tiny_conv_model(), target, tmp_path, name="tiny_conv")
    assert (tmp_path / "tiny_conv.so").exists()
    parity = result.report["tvm"]["parity"]
    if host_mismatch(target) is None:
        assert parity["max_abs"] <= TOLERANCE * parity["ref_range"]
    else:
        assert parity is None and "needs CPU features" in result.summary


def test_count_cores_counts_hyperthreads_once():
    from edgevit.backends.tvm import count_cores

    smt = "\n\n".join(f"processor\t: {i}\nphysical id\t: 0\ncore id\t\t: {i % 2}" for i in range(4))  # 2 cores x 2
    assert count_cores(smt, {0, 1, 2, 3}) == 2
    assert count_cores(smt, {0, 2}) == 1  # both hyper-threads of core 0
    no_smt = "\n\n".join(f"processor\t: {i}\nphysical id\t: 0\ncore id\t\t: {i}" for i in range(2))
    assert count_cores(no_smt, {0, 1}) == 2
    assert count_cores("processor\t: 0\n\nprocessor\t: 1\n\nprocessor\t: 2", {0, 1, 2}) == 3  # no topology given


def test_tvm_runs_one_thread_per_physical_core():
    """TVM alone sizes its pool to half the logical CPUs on x86 (it assumes hyper-threading): on these 2-core
    machines without SMT that was ONE thread, for every kernel, in bench and in tuning. The adapter sets one per core.
    (On a host with hyper-threading TVM's own default already equals the core count: there this cannot fail.)"""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}
    code = ("import tvm; from edgevit.backends.tvm import adapter, host_cores; "
            "print(adapter.runtime_threads(), host_cores())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    threads, cores = map(int, out.stdout.split())
    assert threads == cores >= 1
    for variable in ("TVM_NUM_THREADS", "OMP_NUM_THREADS"):  # the user's setting wins
        out = subprocess.run([sys.executable, "-c", code], env={**env, variable: "1"}, capture_output=True, text=True,
                             timeout=120, check=True)
        assert out.stdout.split()[0] == "1"
