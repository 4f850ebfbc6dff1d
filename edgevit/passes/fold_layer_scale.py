"""fold-layer-scale: Mul / Div by a per-channel constant next to a Conv / Gemm / MatMul → new weights.

Layer scale (CaiT, ConvNeXt, PoolFormer, FastViT, EfficientFormer) multiplies a block's output by a
learned vector γ before the residual add; exported, it is Mul(P(x), γ) with P the block's last linear
node. A per-channel scale is the shift-free case of fold-batchnorm's affine map and reuses its rules:

* after P (Conv, ConvTranspose, Gemm, MatMul with a constant 2-D weight; also MatMul followed by a
  constant bias Add, the batched Linear of a transformer): output channel o's weights and bias × γ_o.
* before P (Conv of any padding and group: zero padding scaled is still zero, and each grouped weight
  slot is scaled by the channel it reads; Gemm with transA = 0; MatMul): input channel i's weights × γ_i.

Div by a constant is Mul by its reciprocal. The constant must broadcast per channel on P's channel axis
(Conv/ConvTranspose: axis 1; Gemm/MatMul: the last axis) without growing the tensor; refused are
constants that vary along another axis, non-constant (graph-input) scales, a zero divisor, and matches
whose intermediate value has other consumers. onnxscript's conv_affine_fusion_rule only takes scalar
Mul+Add after a Conv with a bias, so it does not cover layer scale.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import RewriteRuleSet

from ._conv_math import LINEAR_OPS, Site, const_array, fold_after, folding_pass, output_site, per_channel, read_linear
from .fold_batchnorm import FoldAfter, FoldBefore


def constant_scale(node: ir.Node, data: ir.Value, site: Site) -> tuple[np.ndarray, None] | str:
    """Mul(data, c) / Mul(c, data) / Div(data, c) as a per-channel scale (s, no shift) at `site`."""
    const = next((v for v in node.inputs if v is not data), None)
    if node.op_type == "Div" and node.inputs[0] is not data:
        return "Div by the data, not of it"
    c = const_array(const)
    if c is None:
        return f"{node.op_type} operand is not a constant"
    s = per_channel(c, site)
    if isinstance(s, str) or node.op_type == "Mul":
        return s if isinstance(s, str) else (s, None)
    if not np.all(s):
        return "Div by a constant containing zero"
    return 1.0 / s, None


class ScaleAfter(FoldAfter):
    def __init__(self, producer: str, op_type: str):
        super().__init__(producer, tag=f"[{op_type}]")
        self.op_type = op_type

    def pattern(self, op, x, c):
        return getattr(op, self.op_type)(self.linear(op, x), c, _outputs=["out"])

    def scale_shift(self, node, data, site):
        return constant_scale(node, data, site)


class ScaleBefore(FoldBefore):
    def __init__(self, consumer: str, op_type: str):
        super().__init__(consumer, tag=f"[{op_type}]")
        self.op_type = op_type

    def pattern(self, op, x, c):
        return self.linear(op, getattr(op, self.op_type)(x, c, _outputs=["mid"]))

    def scale_shift(self, node, data, site):
        return constant_scale(node, data, site)


class ScaleAfterBiasedMatMul(ScaleAfter):
    """Mul(Add(MatMul(x, W), b), c): a batched Linear with its bias as a separate Add."""

    def __init__(self, op_type: str):
        super().__init__("MatMul", op_type)

    def pattern(self, op, x, c, b):
        return getattr(op, self.op_type)(op.Add(self.linear(op, x), b, _outputs=["biased"]), c, _outputs=["out"])

    def plan(self, prod, out, biased, **_):
        lin = read_linear(prod.producer())
        if isinstance(lin, str):
            return lin
        site = output_site(lin)
        if isinstance(site, str):
            return site
        bias = const_array(next((v for v in biased.producer().inputs if v is not prod), None))
        bias = "the Add operand is not a constant" if bias is None else per_channel(bias, site)
        if isinstance(bias, str):
            return f"the Add after the MatMul is not a per-channel bias: {bias}"
        lin.bias = bias
        st = self.scale_shift(out.producer(), biased, site)
        return st if isinstance(st, str) else fold_after(lin, *st)


RULES = RewriteRuleSet(
    [ScaleAfterBiasedMatMul.rule(k) for k in ("Mul", "Div")]
    + [ScaleAfter.rule(p, k) for p in LINEAR_OPS for k in ("Mul", "Div")]
    + [ScaleBefore.rule(c, k) for c in ("Conv", "Gemm", "MatMul") for k in ("Mul", "Div")],
    commute=True,  # Mul(c, y) as well as Mul(y, c); Add(b, MatMul) as well as Add(MatMul, b)
)

PASS = folding_pass(
    "fold-layer-scale",
    "fold per-channel constant Mul/Div (layer scale) into the adjacent Conv/Gemm/MatMul weights",
    RULES,
)
