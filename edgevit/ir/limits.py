"""Resource bounds: a model too big to handle sanely is refused up front, before anything allocates.

A compiler fed strangers' files must not try to materialise a 40 GB activation or spend hours on a
10¹⁵-MAC graph because a dim said so. `check` runs ONNX shape inference on the static graph (cheap: no
tensor is allocated) and refuses, with the number and the bound, a model whose

  - total MACs exceed EDGEVIT_MAX_MACS (default 1T; the zoo's largest model is ~20G at 224²),
  - parameters exceed EDGEVIT_MAX_PARAMS (default 1G),
  - largest single activation exceeds EDGEVIT_MAX_ACTIVATION_BYTES (default 1G bytes; parity checks hold
    a few such tensors at once).

The environment variables take plain numbers or K/M/G/T suffixes (powers of 1000 for MACs/params,
1024 for bytes), e.g. `EDGEVIT_MAX_MACS=5T`.
"""

from __future__ import annotations

import os
import re

import onnx

from ..errors import EdgevitError

DEFAULTS = {"macs": 10**12, "params": 10**9, "activation_bytes": 1 << 30}
ENV = {"macs": "EDGEVIT_MAX_MACS", "params": "EDGEVIT_MAX_PARAMS", "activation_bytes": "EDGEVIT_MAX_ACTIVATION_BYTES"}


def _parse(text: str, var: str, binary: bool) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)[bB]?\s*", text)
    if not m:
        raise EdgevitError(f"${var}={text!r}: give a number, e.g. 2000000000 or 2G")
    base = 1024 if binary else 1000
    return int(float(m.group(1)) * base ** "_kmgt".index(m.group(2).lower() or "_"))


def bounds() -> dict[str, int]:
    out = {}
    for key, default in DEFAULTS.items():
        text = os.environ.get(ENV[key])
        out[key] = _parse(text, ENV[key], key.endswith("bytes")) if text else default
    return out


def _fmt(n: int, binary: bool = False) -> str:
    base = 1024 if binary else 1000
    for power, suffix in ((4, "T"), (3, "G"), (2, "M"), (1, "K")):
        if n >= base**power:
            return f"{n / base**power:.3g}{suffix}" + ("iB" if binary else "")
    return f"{n}" + (" B" if binary else "")


def check_input(batch: int, input_size: tuple[int, int] | None, channels: int = 3) -> None:
    """Refuse an image input whose tensor alone exceeds the activation bound (before building anything)."""
    if input_size is None:
        return
    limit = bounds()["activation_bytes"]
    size = batch * channels * input_size[0] * input_size[1] * 4
    if size > limit:
        raise EdgevitError(f"input {batch}x{channels}x{input_size[0]}x{input_size[1]} float32 needs {_fmt(size, True)}, "
                           f"over the activation limit of {_fmt(limit, True)} (${ENV['activation_bytes']})")


def _with_input_shapes(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> onnx.ModelProto:
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for vi in fixed.graph.input:
        if vi.name in shapes:
            dims = vi.type.tensor_type.shape.dim
            for d, value in zip(dims, shapes[vi.name]):
                d.Clear()
                d.dim_value = value
    return fixed


def check(model: onnx.ModelProto, input_shapes: dict[str, list[int]] | None = None) -> None:
    """Refuse `model` (with its dynamic inputs fixed to `input_shapes`) if it exceeds a bound; see above.

    A graph whose shapes cannot be inferred is left to the later stages (which fail with their own error).
    """
    from . import graph as G
    from .analysis import analyze

    limit = bounds()
    if input_shapes:
        model = _with_input_shapes(model, input_shapes)
    if not G.is_static(model):
        return
    for vi in G.graph_inputs(model):  # before shape inference: the inputs alone
        numel = 1
        for d in G.value_shape(vi):
            numel *= d
        if numel * 4 > limit["activation_bytes"]:
            raise EdgevitError(f"input '{vi.name}' {G.value_shape(vi)} holds {_fmt(numel)} elements, over the "
                               f"activation limit of {_fmt(limit['activation_bytes'], True)} "
                               f"(${ENV['activation_bytes']})")
    a = analyze(model)
    if a.macs > limit["macs"]:
        raise EdgevitError(f"the model needs {_fmt(a.macs)} MACs ({a.macs}), over the limit of {_fmt(limit['macs'])} "
                           f"(${ENV['macs']}); refusing it")
    if a.params > limit["params"]:
        raise EdgevitError(f"the model has {_fmt(a.params)} parameters, over the limit of {_fmt(limit['params'])} "
                           f"(${ENV['params']}); refusing it")
    if a.tensors:
        name, t = max(a.tensors.items(), key=lambda kv: kv[1]["bytes"])
        if t["bytes"] > limit["activation_bytes"]:
            raise EdgevitError(f"activation '{name}' ({'x'.join(map(str, t['shape']))} {t['dtype']}) needs "
                               f"{_fmt(t['bytes'], True)}, over the limit of {_fmt(limit['activation_bytes'], True)} "
                               f"(${ENV['activation_bytes']}); refusing the model")
