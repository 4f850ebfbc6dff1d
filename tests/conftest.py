"""Shared helpers: run the real CLI in a subprocess and check its one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`edgevit ARGS` in a fresh process, as a user would run it."""
    return subprocess.run([sys.executable, "-m", "edgevit", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "160"})


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    """A user error: the expected exit code, no traceback, and the error as the last stderr line.

    Progress lines of steps that succeeded may come before it (e.g. a parity failure after export).
    """
    err = proc.stderr.strip()
    assert proc.returncode == code, (proc.returncode, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("edgevit: error:"), err
    assert sum(line.startswith("edgevit: error") for line in lines) == 1, err
    for f in fragments:
        assert f in lines[-1], (f, err)
