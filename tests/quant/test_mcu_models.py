"""The MCU-sized zoo models: listed, within the STM32F746 flash budget, and quantizable end to end."""

from __future__ import annotations

import pytest

from edgevit import zoo
from edgevit.frontend.export import export
from edgevit.frontend.source import resolve
from edgevit.passes import pipeline
from edgevit.quant import quantize_model

MCU = ["mcu_deit", "mcu_former", "mcu_shvit"]
FLASH_PARAMS = 700_000  # int8 weights + int32 biases + code in 1 MB
SRAM = 320 * 1024


def test_zoo_lists_the_mcu_family():
    assert sorted(n for n, e in zoo.entries().items() if e.family == "mcu") == sorted(MCU)


@pytest.mark.parametrize("name", MCU)
def test_mcu_model_fits_and_quantizes(name):
    assert zoo.stats(name)["params"] <= FLASH_PARAMS
    model, _ = pipeline.run(export(resolve(name), samples=1).model, samples=1)
    qmodel = quantize_model(model)
    param_bytes = sum(v.nbytes for n in qmodel.nodes for v in n.params.values())
    assert param_bytes < 1024 * 1024 - 200 * 1024  # leaves ≥ 200 KB of flash for code
    assert qmodel.peak_activation_bytes()["peak_bytes"] < SRAM // 4  # naive, unplanned
    assert "softmax" in {n.op for n in qmodel.nodes}  # every one has real self-attention
