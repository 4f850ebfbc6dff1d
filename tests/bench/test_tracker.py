"""Board benchmarking through a TVM RPC tracker: the library runs on a device the tracker hands out for a key.

Here the "device" is a native RPC server registered with a local tracker (an ARM board does the same with
`python -m tvm.exec.rpc_server --tracker HOST:9190 --key rpi4`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from edgevit import targets
from ..backends import tiny_conv_model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tracker():
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port),
                               "--port-end", str(port + 1)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)]
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            assert procs[0].poll() is None, "the TVM RPC tracker did not start"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.3)
        server = _free_port()
        procs.append(subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1",
                                       "--port", str(server), "--port-end", str(server + 1), "--tracker", f"127.0.0.1:{port}", "--key", "edgevit-test"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
        yield port
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)


@pytest.mark.slow
def test_run_rpc_through_a_tracker(tracker, tmp_path):
    from edgevit.backends.tvm import adapter, compile_model
    from edgevit.ir import graph as G
    from edgevit.ir.numerics import run_ort

    model = tiny_conv_model()
    compile_model(model, targets.load("x86-avx2"), tmp_path, name="tiny")
    feeds = G.seeded_inputs(model, G.static_input_shapes(model), 0)
    deadline = time.time() + 90
    while True:  # the server registers with the tracker a moment after it starts
        try:
            outputs, median = adapter.run_rpc(tmp_path / "tiny.so", list(feeds.values()), "127.0.0.1", tracker,
                                              repeat=3, key="edgevit-test")
            break
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(1)
    assert median > 0
    np.testing.assert_allclose(outputs[0], run_ort(model, feeds)[0], atol=1e-4)
