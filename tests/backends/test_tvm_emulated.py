"""TVM backend for rpi4 (aarch64), executed on x86 under qemu-aarch64: run.py directly, and over TVM RPC.

Not skipped on CI: the emulated userland is built on first use (≈1 min, Debian mirror + PyPI only) and
cached outside the checkout. Needs the Debian packages g++-aarch64-linux-gnu libc6-dev-arm64-cross
qemu-user debootstrap; the RPC test also needs root (to register qemu-aarch64 with binfmt_misc).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from edgevit import targets
from edgevit.backends.tvm import compile_model, emulation
from edgevit.ir import graph as G
from edgevit.ir.numerics import Parity, run_ort

TOLERANCE = 1e-4  # × output range
SIZE = (64, 64)
# Resolved at collection time, before conftest points EDGEVIT_CACHE at a per-run folder: the ≈520 MB
# userland must be reused across runs, not rebuilt for each.
USERLAND = emulation.userland_dir()


@pytest.fixture(scope="module")
def rpi4_build(tmp_path_factory):
    """shvit_s1 (unoptimized export, 64x64) compiled for rpi4: (model, out dir, seeded feeds)."""
    from edgevit.frontend.export import export
    from edgevit.frontend.source import resolve

    model = export(resolve("shvit_s1"), SIZE, samples=1).model
    out = tmp_path_factory.mktemp("tvm-rpi4")
    compile_model(model, targets.load("rpi4"), out, name="shvit_s1")
    return model, out, G.seeded_inputs(model, {"input": [1, 3, *SIZE]}, seed=1)


@pytest.fixture(scope="module")
def userland():
    return emulation.ensure_userland(USERLAND)


def test_rpi4_library_is_aarch64(rpi4_build):
    _, out, _ = rpi4_build
    header = (out / "shvit_s1.so").read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 0xB7  # EM_AARCH64
    meta = json.loads((out / "shvit_s1.tvm.json").read_text())
    assert meta["target"]["runtime_arch"] == "aarch64" and meta["target"]["cross_compiler"] == "aarch64-linux-gnu-g++"


def test_runner_under_qemu_matches_onnxruntime(rpi4_build, userland, tmp_path):
    model, out, feeds = rpi4_build
    np.save(tmp_path / "x.npy", feeds["input"])
    proc = emulation.run_python(userland, [str(out / "run.py"), "--input", str(tmp_path / "x.npy"),
                                           "--repeat", "1", "--save", str(tmp_path / "res")], timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "latency median" in proc.stdout and "aarch64" in proc.stdout
    p = Parity()
    p.update(run_ort(model, feeds)[0], np.load(tmp_path / "res" / "output_0.npy"))
    print(f"aarch64 (qemu, run.py) max abs error {p.max_abs:.3g} (range {p.ref_range:.3g})")
    assert p.within(TOLERANCE), p


def test_rpc_server_under_qemu_matches_onnxruntime(rpi4_build, userland):
    from edgevit.backends.tvm import adapter

    if os.geteuid() != 0:
        pytest.skip("TVM RPC under emulation needs root to register qemu-aarch64 with binfmt_misc")
    model, out, feeds = rpi4_build
    with emulation.rpc_server(userland) as (host, port):
        outputs, seconds = adapter.run_rpc(out / "shvit_s1.so", list(feeds.values()), host, port, repeat=1)
    p = Parity()
    p.update(run_ort(model, feeds)[0], outputs[0])
    print(f"aarch64 (qemu, RPC) max abs error {p.max_abs:.3g} (range {p.ref_range:.3g}), {1e3 * seconds:.0f} ms")
    assert p.within(TOLERANCE) and seconds > 0, p
