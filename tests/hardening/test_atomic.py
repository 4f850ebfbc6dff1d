"""Atomic outputs (issue #9 item 4): a compile killed midway (SIGKILL or SIGINT) after it started writing
leaves the previous output untouched and no partial new one. A SIGKILLed run cannot remove its
temporary folder; the next run writing the same output does (artifacts.sweep_stale: the pid in the
temporary name is dead), which is tested here too."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from edgevit.artifacts import atomic_dir, write_report
from edgevit.backends.mcu import toolchain as tc

pytestmark = pytest.mark.skipif(not tc.have_host_toolchain(), reason="gcc/make missing")


def _previous_output(out):
    with atomic_dir(out) as d:
        (d / "model.c").write_text("/* the previous, good build */\n")
        write_report(d / "mcu_former.onnx", "compile", {"model": "mcu_former"}, "# previous")
    return {p.name: p.read_bytes() for p in out.iterdir()}


def _kill_while_writing(tmp_path, sig) -> tuple[subprocess.Popen, list]:
    out = tmp_path / "OUT"
    # a shell's background job (`cmd &`) inherits SIGINT ignored, and Python then keeps it ignored: restore it,
    # as an interactive Ctrl-C would find it
    proc = subprocess.Popen([sys.executable, "-m", "edgevit", "compile", "--target", "stm32f746", "mcu_former",
                             "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    seen = []
    while time.monotonic() < deadline and proc.poll() is None:
        parts = [p for p in tmp_path.iterdir() if p.name.startswith(f".OUT.{proc.pid}.") and p.name.endswith(".part")]
        if parts and len(list(parts[0].iterdir())) >= 3:  # the backend is writing the C folder
            seen = parts
            proc.send_signal(sig)
            break
        time.sleep(0.02)
    assert seen, f"never saw the temporary folder (exit {proc.poll()}: {proc.stderr.read() if proc.poll() else ''})"
    proc.wait(timeout=60)
    return proc, seen


def test_sigkill_midway_keeps_previous_output_and_next_run_sweeps(tmp_path):
    before = _previous_output(tmp_path / "OUT")
    proc, parts = _kill_while_writing(tmp_path, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert {p.name: p.read_bytes() for p in (tmp_path / "OUT").iterdir()} == before
    assert parts[0].exists()  # SIGKILL: nobody could clean up ...
    with atomic_dir(tmp_path / "OUT") as d:  # ... the next run writing OUT removes the dead run's folder
        (d / "model.c").write_text("/* next */\n")
        write_report(d / "mcu_former.onnx", "compile", {}, "# next")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["OUT"]


def test_sigint_midway_cleans_up_and_keeps_previous_output(tmp_path):
    before = _previous_output(tmp_path / "OUT")
    proc, parts = _kill_while_writing(tmp_path, signal.SIGINT)
    assert proc.returncode == 130, proc.stderr.read()
    assert {p.name: p.read_bytes() for p in (tmp_path / "OUT").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["OUT"]


def test_swap_is_atomic_exchange(tmp_path):
    """Replacing an existing folder is one renameat2(RENAME_EXCHANGE): no instant without OUT."""
    from edgevit.artifacts import _exchange

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    (b / "x").write_text("b")
    if not _exchange(a, b):
        pytest.skip("filesystem without RENAME_EXCHANGE (atomic_dir falls back to two renames + sweep repair)")
    assert (a / "x").read_text() == "b" and (b / "x").read_text() == "a"
