"""int8 post-training quantization for microcontrollers: integer-only ViT semantics.

`integer_ops` is the op-by-op specification (with `scheme` for the fixed-point primitives) that the
generated C runtime must match bit for bit; `reference` executes it. `quantize_model` quantizes an ONNX
graph; `run_quantize` is the `edgevit quantize` command's body.
"""

from .command import quantize_model, run_quantize
from .reference import QNode, QuantizedModel
from .scheme import QParams

__all__ = ["QNode", "QParams", "QuantizedModel", "quantize_model", "run_quantize"]
