"""Run aarch64 TVM artifacts on an x86 host: an emulated arm64 Debian userland under qemu-aarch64.

So ARM builds are *executed* in tests and on CI, not just linked. The userland (bookworm minbase +
python3.11 + the aarch64 TVM/numpy wheels, ≈520 MB) is built once by scripts/arm64_userland.sh into the
edgevit cache (`$EDGEVIT_CACHE` or ~/.cache/edgevit), outside the checkout, keyed by the script's hash so
a fresh clone reuses it and a changed script rebuilds it. Emulated timings say nothing about board speed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from ...errors import EdgevitError

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "arm64_userland.sh"
APT_HINT = "apt-get install -y --no-install-recommends qemu-user debootstrap"
_KEY_FILE = ".edgevit-userland-key"
# qemu's own binfmt entry for aarch64 ELF executables (scripts/qemu-binfmt-conf.sh in QEMU).
_BINFMT_MAGIC = r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"
_BINFMT_MASK = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"
_BINFMT = Path("/proc/sys/fs/binfmt_misc")


def userland_dir() -> Path:
    root = os.environ.get("EDGEVIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "edgevit")
    return Path(root) / "arm64-userland"


def _qemu() -> str:
    qemu = shutil.which("qemu-aarch64")
    if not qemu:
        raise EdgevitError(f"qemu-aarch64 not found; install it with: {APT_HINT}")
    return qemu


def ensure_userland(root: Path | None = None) -> Path:
    """The emulated userland at `root` (default: the cache), built first if missing or stale."""
    root = Path(root or userland_dir())
    key = hashlib.sha256(SCRIPT.read_bytes()).hexdigest()
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test workers build it once
        key_file = root / _KEY_FILE
        if key_file.is_file() and key_file.read_text().strip() == key:
            return root
        _qemu()
        missing = [t for t in ("debootstrap", "dpkg-deb") if not shutil.which(t)]
        if missing:
            raise EdgevitError(f"{', '.join(missing)} not found (needed once to build the arm64 userland); "
                               f"install with: {APT_HINT}")
        proc = subprocess.run(["bash", str(SCRIPT), str(root)], capture_output=True, text=True,
                              env={**os.environ, "PYTHON": sys.executable})
        if proc.returncode != 0:
            tail = " | ".join(line for line in proc.stderr.strip().splitlines()[-3:])
            raise EdgevitError(f"building the arm64 userland failed ({SCRIPT.name} exit {proc.returncode}): {tail}")
        key_file.write_text(key + "\n")
    return root


def guest_env(root: Path) -> dict[str, str]:
    """Environment for guest python: libraries from `root`, bytecode cached, TVM runtime only."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONHOME")}
    env.update(QEMU_LD_PREFIX=str(root), PYTHONPATH=str(root / "opt" / "site"), TVM_USE_RUNTIME_LIB="1")
    return env


def run_python(root: Path, args: list[str], timeout: float = 600, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python3.11 ARGS` inside the emulated userland (host paths work as they are)."""
    cmd = [_qemu(), str(root / "usr" / "bin" / "python3.11"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=guest_env(root), cwd=cwd)


def enable_binfmt() -> str | None:
    """Let the kernel run aarch64 ELF files through qemu; None when done, else why it is not possible.

    TVM's RPC server re-executes its own interpreter for worker processes, which only works when aarch64
    executables run transparently. Registration is kernel-wide and left in place (it is idempotent).
    """
    if (_BINFMT / "qemu-aarch64").exists():
        return None
    if os.geteuid() != 0:
        return "registering qemu-aarch64 with binfmt_misc needs root"
    if not (_BINFMT / "register").exists():
        mount = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(_BINFMT)],
                               capture_output=True, text=True)
        if mount.returncode != 0:
            return f"cannot mount binfmt_misc: {mount.stderr.strip() or mount.returncode}"
    try:
        (_BINFMT / "register").write_text(f":qemu-aarch64:M::{_BINFMT_MAGIC}:{_BINFMT_MASK}:{_qemu()}:\n")
    except OSError as exc:
        return f"cannot register qemu-aarch64 with binfmt_misc: {exc}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def rpc_server(root: Path, startup_timeout: float = 180) -> Iterator[tuple[str, int]]:
    """A TVM RPC server running under emulation on 127.0.0.1; yields (host, port), stops it afterwards."""
    reason = enable_binfmt()
    if reason:
        raise EdgevitError(f"cannot run the TVM RPC server under emulation: {reason}")
    port = _free_port()
    cmd = [_qemu(), str(root / "usr" / "bin" / "python3.11"), "-m", "tvm.exec.rpc_server",
           "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1)]
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=guest_env(root),
                                start_new_session=True)
        try:
            deadline = time.monotonic() + startup_timeout
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise EdgevitError(f"the emulated TVM RPC server exited ({proc.returncode}): "
                                       f"{' | '.join(log.read().strip().splitlines()[-3:])}")
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
                if time.monotonic() > deadline:
                    raise EdgevitError(f"the emulated TVM RPC server did not listen on port {port} "
                                       f"within {startup_timeout:.0f} s")
                time.sleep(0.5)
            yield "127.0.0.1", port
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # the server and its popen workers: our session only
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
