"""Merge two averaged classifier heads, (Gemm₁ + Gemm₂)/2, into one Gemm.

Distilled models (EfficientFormer, LeViT, DeiT-distilled) keep a class head and a distillation head
and average them at inference. What timm exports (TorchScript, opset 17, after onnxsim):
  - efficientformer_l1:  Div(Add(Gemm(x, W1, b1), Gemm(x, W2, b2)), 2)          same input
  - levit_128s:          Div(Add(Gemm(BN1(x), W1, b1), Gemm(BN2(x), W2, b2)), 2)  a BatchNorm per head
  - deit_tiny_distilled: Div(Add(Gemm(x_cls, W1, b1), Gemm(x_dist, W2, b2)), 2)  different tokens
Rules (Div by 2 or Mul by ½, each commuted):
  - same input x (after folding each head's BatchNorm): Gemm(x, (W1 + W2)/2, (b1 + b2)/2)
  - different inputs:  Gemm(Concat(x1, x2, axis=1), [W1 | W2]/2, (b1 + b2)/2)

Legal because Gemm is linear in its weights: ½(xW1ᵀ + b1) + ½(xW2ᵀ + b2) = x(½(W1 + W2))ᵀ + ½(b1 + b2),
and for two inputs ½(x1W1ᵀ + x2W2ᵀ) = [x1 x2]·[W1 W2]ᵀ/2. An inference BatchNorm before a head is the
per-feature affine map x·a + t, folded as W·diag(a) and b + W·t. Refused: any factor other than ½
(a weighted mix is not "the two heads averaged"), non-constant weights/biases/BN statistics, transA,
BatchNorm in training mode, heads with different output widths.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern

from . import _match as M
from .base import Pass, rule_pass


def _head(op, x, weight, i: int):
    """Gemm(x, W[, b]) optionally preceded by a BatchNormalization of x."""
    bn = op.BatchNormalization(x, _allow_other_inputs=True, _outputs=[f"bn{i}"])
    source = pattern.OrValue([bn, x], tag_var=f"has_bn{i}", tag_values=[True, False])
    return op.Gemm(source, weight, _allow_other_inputs=True, _outputs=[f"gemm{i}"])


def _linear(gemm: ir.Node, bn: ir.Node | None) -> tuple[np.ndarray, np.ndarray] | str:
    """(W, b) with y = x·Wᵀ + b for the head's own input x (BatchNorm folded), or why not."""
    a = gemm.attributes
    if a.get_int("transA", 0):
        return "Gemm has transA"
    weight = M.constant(gemm.inputs[1])
    if weight is None:
        return "Gemm weight is not constant"
    has_bias = len(gemm.inputs) > 2 and gemm.inputs[2] is not None
    bias = M.constant(gemm.inputs[2]) if has_bias else np.zeros(1, weight.dtype)
    if bias is None:
        return "Gemm bias is not constant"
    weight = (weight if a.get_int("transB", 0) else weight.T) * a.get_float("alpha", 1.0)
    bias = bias * a.get_float("beta", 1.0)
    if bn is None:
        return weight, bias
    if bn.attributes.get_int("training_mode", 0) or len(bn.outputs) > 1:
        return "BatchNormalization is in training mode"
    stats = [M.constant(v) for v in bn.inputs[1:5]]
    if any(s is None for s in stats):
        return "BatchNormalization parameters are not constant"
    gamma, beta, mean, var = stats
    scale = gamma / np.sqrt(var + bn.attributes.get_float("epsilon", 1e-5))
    return weight * scale, bias + weight @ (beta - mean * scale)


class AveragedHeads(pattern.RewriteRuleClassBase):
    def __init__(self, op_type: str):
        super().__init__(f"AveragedHeads{op_type}")
        self._op_type = op_type  # Div (by 2) or Mul (by ½)

    def pattern(self, op, x1, x2, w1, w2, factor):
        total = op.Add(_head(op, x1, w1, 1), _head(op, x2, w2, 2))
        return op.Div(total, factor) if self._op_type == "Div" else op.Mul(total, factor)

    def check(self, context, x1, x2, factor, gemm1, gemm2, **b) -> pattern.MatchResult:
        result = pattern.MatchResult()
        value = M.constant(factor)
        expected = 2.0 if self._op_type == "Div" else 0.5
        if value is None or value.size != 1 or value.ndim > 2 or not math.isclose(value.item(), expected, rel_tol=1e-6):
            return result.fail(f"heads are not averaged: {self._op_type} by {value}, not {expected}", factor)
        heads = [_linear(g.producer(), b[f"bn{i}"].producer() if b.get(f"has_bn{i}") else None)
                 for i, g in ((1, gemm1), (2, gemm2))]
        if reason := next((h for h in heads if isinstance(h, str)), None):
            return result.fail(reason)
        (w1, b1), (w2, b2) = heads
        if w1.shape[0] != w2.shape[0]:
            return result.fail(f"heads have different widths {w1.shape[0]} and {w2.shape[0]}")
        self._shared = x1 is x2
        rows = [(M.shape(x) or (None,))[0] for x in (x1, x2)]
        if not self._shared and (None in rows or rows[0] != rows[1]):
            return result.fail(f"head inputs have unknown or different batch sizes {rows}: cannot concatenate")
        dtype = M.constant(gemm1.producer().inputs[1]).dtype
        self._weight = (((w1 + w2) if self._shared else np.concatenate([w1, w2], axis=1)) / 2).astype(dtype)
        self._bias = ((b1 + b2) / 2).astype(dtype)
        self._name = context.output_values[0].name
        return result

    def rewrite(self, op, x1, x2, **_):
        source = x1 if self._shared else op.Concat(x1, x2, axis=1)
        weight = M.initializer(op, self._weight, f"{self._name}/merged_weight")
        bias = M.initializer(op, self._bias, f"{self._name}/merged_bias")
        return op.Gemm(source, weight, bias, transB=1)


_RULES = rule_pass("merge-classifier-heads", "", pattern.RewriteRuleSet(
    [AveragedHeads.rule("Div"), AveragedHeads.rule("Mul")], commute=True))


def run(model: ir.Model) -> int:
    M.infer_shapes(model)
    return _RULES.run(model)


PASS = Pass("merge-classifier-heads", "(Gemm₁ + Gemm₂)/2 → one Gemm (class + distillation heads)", run)
