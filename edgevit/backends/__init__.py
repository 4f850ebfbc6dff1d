"""Backends lower the optimized ONNX for one target class each.

Each backend package exposes `compile_model(model, target, out_dir, name, args) -> BackendResult`
writing its artifacts into `out_dir` (a temporary folder the CLI moves into place on success).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BackendResult:
    summary: str  # one line for the terminal
    report: dict = field(default_factory=dict)  # merged into <model>.compile.json
    markdown: str = ""  # <model>.compile.md
