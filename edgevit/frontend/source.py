"""The three forms of MODEL on the command line: a zoo name, a user's `.onnx`, or `file.py:factory`."""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import zoo
from ..errors import EdgevitError


@dataclass
class ModelSource:
    kind: str  # "zoo" | "onnx" | "python"
    name: str  # short name used for output files and reports
    spec: str  # what the user typed
    path: Path | None = None
    factory: str | None = None

    @property
    def is_torch(self) -> bool:
        return self.kind in ("zoo", "python")

    def default_input_size(self) -> tuple[int, int] | None:
        if self.kind == "zoo":
            return zoo.lookup(self.name).input_size
        return None

    def torch_module(self, input_size: tuple[int, int] | None):
        """The eval-mode torch module (zoo or user factory)."""
        if self.kind == "zoo":
            return zoo.create(self.name, input_size)
        if self.kind == "python":
            return _call_factory(self.path, self.factory)
        raise EdgevitError(f"{self.spec} is an ONNX file, not a PyTorch model")


_PY_SPEC = re.compile(r"^(?P<path>.+\.py):(?P<factory>[A-Za-z_][A-Za-z0-9_]*)$")


def safe_name(stem: str) -> str:
    """A model's short name as used in output file names: only [A-Za-z0-9._-], never hidden or `..`.

    The name comes from a file name the user may not have chosen (a download); whatever it holds, the
    files named after it must stay inside the output folder.
    """
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).lstrip(".")
    return name[:100] or "model"


def resolve(spec: str) -> ModelSource:
    m = _PY_SPEC.match(spec)
    if m:
        path = Path(m["path"])
        if not path.is_file():
            raise EdgevitError(f"{path}: no such Python file (MODEL form is path/to/file.py:factory)")
        return ModelSource("python", safe_name(f"{path.stem}_{m['factory']}"), spec, path, m["factory"])
    if spec.endswith(".py"):
        raise EdgevitError(f"{spec}: name the factory function too, as {spec}:make_model")
    path = Path(spec)
    if spec.lower().endswith(".onnx") or path.is_file():
        if not path.exists():
            raise EdgevitError(f"{spec}: no such file")
        return ModelSource("onnx", safe_name(path.stem), spec, path)
    zoo.lookup(spec)  # raises with the closest names
    return ModelSource("zoo", spec, spec)


def _call_factory(path: Path, factory: str):
    import torch

    module_name = f"_edgevit_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = mod
    try:
        spec.loader.exec_module(mod)
    except Exception as exc:
        raise EdgevitError(f"{path}: importing it failed: {type(exc).__name__}: {exc}") from None
    fn = getattr(mod, factory, None)
    if not callable(fn):
        raise EdgevitError(f"{path}: has no function '{factory}'")
    try:
        model = fn()
    except Exception as exc:
        raise EdgevitError(f"{path}:{factory}() raised {type(exc).__name__}: {exc}") from None
    if not isinstance(model, torch.nn.Module):
        raise EdgevitError(f"{path}:{factory}() returned {type(model).__name__}, expected a torch.nn.Module")
    return model.eval()
