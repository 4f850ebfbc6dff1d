"""Architectures the literature has but timm lacks, defined in-project and registered in the zoo.

Each module adds `ProjectModel` entries to `PROJECT_MODELS`; `edgevit.zoo` lists them beside timm's.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class ProjectModel:
    name: str
    family: str
    paper: str
    input_size: tuple[int, int]
    factory: Callable[..., object]  # factory(input_size=(H, W)) -> torch.nn.Module


_MODULES: list[str] = ["mcu_vit"]  # e.g. "mcu_vit", "casvit" — modules defining ProjectModel entries


def project_models() -> dict[str, ProjectModel]:
    found: dict[str, ProjectModel] = {}
    for module in _MODULES:
        for m in importlib.import_module(f"{__package__}.{module}").MODELS:
            found[m.name] = m
    return found
