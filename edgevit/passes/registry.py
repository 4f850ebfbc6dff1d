"""The pipeline's passes, in the order they run. One module per pass, each exporting `PASS`.

Order matters: canonicalize first (so later patterns see one shape of graph, whichever exporter made
it), reparameterize branches while their BatchNorms still mark them, fold the remaining BatchNorms and
layer scales into weights, then fuse attention and merge classifier heads on the simplified graph.
"""

from __future__ import annotations

import importlib

from .base import Pass

ORDER = [
    "eliminate_identity",
    "canonicalize_layernorm",  # first: its ReduceMeans would block the opset bump native Gelu needs
    "canonicalize_gelu",
    "reparameterize_branches",
    "fold_batchnorm",
    "fold_layer_scale",
    "fuse_attention",
    "merge_classifier_heads",
]


def all_passes() -> list[Pass]:
    return [importlib.import_module(f"{__package__}.{module}").PASS for module in ORDER]
