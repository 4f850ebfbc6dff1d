"""Deployment targets are data: one TOML file per device in targets/ (name, backend, backend options)."""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import EdgevitError

BACKENDS = ("tvm", "coreml", "mcu")


def targets_dir() -> Path:
    """targets/ beside the package (the repository checkout), or $EDGEVIT_TARGETS."""
    return Path(os.environ.get("EDGEVIT_TARGETS") or Path(__file__).resolve().parent.parent / "targets")


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    backend: str
    kind: str  # linux | ios | mcu
    options: dict[str, Any] = field(default_factory=dict)  # the [<backend>] table
    path: Path | None = None


def _load(path: Path) -> Target:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise EdgevitError(f"{path}: cannot read target file: {exc}") from None
    for key in ("name", "description", "backend", "kind"):
        if key not in data:
            raise EdgevitError(f"{path}: target file lacks '{key}'")
    if data["backend"] not in BACKENDS:
        raise EdgevitError(f"{path}: backend '{data['backend']}' is not one of {', '.join(BACKENDS)}")
    return Target(data["name"], data["description"], data["backend"], data["kind"],
                  data.get(data["backend"], {}), path)


def all_targets() -> dict[str, Target]:
    found = {}
    for path in sorted(targets_dir().glob("*.toml")):
        t = _load(path)
        found[t.name] = t
    return found


def load(name: str) -> Target:
    """The target called `name`, or a one-line error listing the known targets."""
    known = all_targets()
    if name in known:
        return known[name]
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise EdgevitError(f"unknown target '{name}'{hint}; targets: {', '.join(known)}")
