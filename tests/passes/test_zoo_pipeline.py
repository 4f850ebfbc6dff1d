"""Across the whole zoo: the optimized graph matches the exported one and holds no BatchNormalization.

Reduced input size (64²) keeps this fast; EfficientFormer v1's attention biases are bound to 224², so it
runs at its own size — l1 only here: l3/l7 at 224² take a minute and run in
`benchmarks/zoo_export.py --optimize` instead.
"""

from __future__ import annotations

import pytest

from edgevit import zoo
from edgevit.frontend.export import export
from edgevit.frontend.source import resolve
from edgevit.passes import pipeline

FIXED_SIZE = {"efficientformer_l1"}
TOO_SLOW_FOR_THE_SUITE = {"efficientformer_l3", "efficientformer_l7"}


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in zoo.entries() if n not in TOO_SLOW_FOR_THE_SUITE])
def test_zoo_model_optimizes_exactly_and_bn_free(name):
    entry = zoo.lookup(name)
    size = entry.input_size if name in FIXED_SIZE or min(entry.input_size) <= 64 else (64, 64)
    model = export(resolve(name), size, samples=1).model
    optimized, report = pipeline.run(model, samples=1)
    rolled_back = [p.name for p in report.passes if p.status.startswith("rolled back")]
    assert not rolled_back, [p.status for p in report.passes]
    assert report.parity.within(1e-4), report.parity
    assert "BatchNormalization" not in report.op_histogram_after
    assert report.output.macs <= report.input.macs
