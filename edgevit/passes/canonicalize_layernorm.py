"""Replace decomposed LayerNorm by LayerNormalization (opset 17) and absorb the affine ops after it.

Rules:
  1. Decomposed:  d = x - ReduceMean(x);  d / Sqrt(ReduceMean(d²) + eps)   (d² as Pow(d, 2) or d·d;
                  the division also as d · Reciprocal(…))  → LayerNormalization(x, 1, axis=-k, eps)
  2. Scale:       Mul(LayerNormalization(x, γ0[, β0]), γ)  → LayerNormalization(x, γ0·γ[, β0·γ])
  3. Bias:        Add(LayerNormalization(x, γ0[, β0]), β)  → LayerNormalization(x, γ0, β0 + β)
Rule 1 fires on the division; rules 2 and 3 then take in the γ/β that exporters (TorchScript below
opset 17, hand-written norms) leave as separate Mul and Add.

Legality: rule 1 is the definition of LayerNormalization when both ReduceMeans reduce the same
trailing axes with keepdims=1 and eps is a constant scalar; a norm over a leading or middle axis (e.g.
channels-first over axis 1 of NCHW) is not a LayerNormalization and is refused. Rules 2 and 3 are
distributivity: (n·γ0 + β0)·γ = n·(γ0γ) + β0γ. They need constant γ/β that vary only along the
normalized axes and broadcast into x's shape (otherwise they are not a per-feature affine map).
LayerNormalization computes in float (stash_type=1), double for double inputs.

Opset: a graph below 17 gets its import raised to 17 only if no node's meaning changes on the way
(`_match.opset_bump_blocker`; nothing changed from 14 to 17 except RoiAlign); otherwise rule 1 refuses.
"""

from __future__ import annotations


import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern

from . import _match as M
from .base import Pass, rule_pass

LAYERNORM_OPSET = 17
_FLOATS = (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE)


def _reduced_axes(node: ir.Node, rank: int) -> list[int] | None:
    """Sorted non-negative axes a keepdims ReduceMean reduces, or None if unknown or not keepdims."""
    if node.attributes.get_int("keepdims", 1) != 1:
        return None
    if "axes" in node.attributes:  # opset < 18
        axes = list(node.attributes.get_ints("axes"))
    elif len(node.inputs) > 1 and node.inputs[1] is not None:
        array = M.constant(node.inputs[1])
        if array is None:
            return None
        axes = array.reshape(-1).tolist()
    else:
        axes = [] if node.attributes.get_int("noop_with_empty_axes", 0) else list(range(rank))
    return sorted(a % rank for a in axes) or None


class DecomposedLayerNorm(pattern.RewriteRuleClassBase):
    def __init__(self, reciprocal: bool):
        super().__init__("DecomposedLayerNormReciprocal" if reciprocal else "DecomposedLayerNorm")
        self._reciprocal = reciprocal

    def pattern(self, op, x, two, eps):
        mean = op.ReduceMean(x, _allow_other_inputs=True, _outputs=["mean"])
        d = op.Sub(x, mean)
        square = pattern.OrValue([op.Pow(d, two), op.Mul(d, d)], tag_var="square", tag_values=["Pow", "Mul"])
        var = op.ReduceMean(square, _allow_other_inputs=True, _outputs=["var"])
        std = op.Sqrt(op.Add(var, eps))
        return op.Mul(d, op.Reciprocal(std)) if self._reciprocal else op.Div(d, std)

    def check(self, context, x, two, eps, mean, var, square, **_) -> pattern.MatchResult:
        result = pattern.MatchResult()
        if (blocker := M.opset_bump_blocker(context.model, LAYERNORM_OPSET)) is not None:
            return result.fail(f"LayerNormalization needs opset {LAYERNORM_OPSET}: {blocker}")
        if x.dtype not in _FLOATS:
            return result.fail("x is not a float tensor", x)
        shape = M.shape(x)
        if shape is None:
            return result.fail("x has no static shape: cannot name the normalized axes", x)
        axes = _reduced_axes(mean.producer(), len(shape))
        if axes is None or axes != _reduced_axes(var.producer(), len(shape)):
            return result.fail("mean and variance reduce different or unknown axes (or drop them)")
        if axes != list(range(len(shape) - len(axes), len(shape))):
            return result.fail(f"normalizes axes {axes} of a rank-{len(shape)} tensor: not the trailing axes")
        if square == "Pow" and M.scalar(two) != 2.0:
            return result.fail("the square is not Pow(d, 2)", two)
        epsilon = M.constant(eps)
        if epsilon is None or epsilon.size != 1 or epsilon.ndim > len(shape):
            return result.fail("eps is not a constant scalar", eps)
        self._axis, self._epsilon = -len(axes), float(epsilon.reshape(()))
        self._normalized = shape[-len(axes):]
        self._name = context.output_values[0].name
        return result

    def rewrite(self, op, x, **_):
        stash = ir.DataType.DOUBLE if x.dtype == ir.DataType.DOUBLE else ir.DataType.FLOAT
        ones = M.initializer(op, np.ones(self._normalized, x.dtype.numpy()), f"{self._name}/ln_scale")
        return op.LayerNormalization(x, ones, axis=self._axis, epsilon=self._epsilon, stash_type=int(stash))


def _per_feature(array: np.ndarray | None, x_shape: tuple[int, ...], axis: int) -> np.ndarray | None:
    """`array` as a tensor of the normalized shape, if it broadcasts into x and is constant over the
    leading (not normalized) axes; else None."""
    if array is None or array.ndim > len(x_shape):
        return None
    full = array.reshape((1,) * (len(x_shape) - array.ndim) + array.shape)
    if any(d != 1 for d in full.shape[:axis]):
        return None
    try:
        return np.broadcast_to(full.reshape(full.shape[axis:]), x_shape[axis:]).copy()
    except ValueError:
        return None


class AbsorbAffine(pattern.RewriteRuleClassBase):
    """Fold a following Mul (scale) or Add (bias) by a per-feature constant into LayerNormalization."""

    def __init__(self, op_type: str):
        super().__init__(f"LayerNormAbsorb{op_type}")
        self._op_type = op_type

    def pattern(self, op, x, gamma, other):
        ln = op.LayerNormalization(x, gamma, _allow_other_inputs=True, _outputs=["ln"])
        return op.Mul(ln, other) if self._op_type == "Mul" else op.Add(ln, other)

    def check(self, context, x, gamma, other, ln, **_) -> pattern.MatchResult:
        result = pattern.MatchResult()
        node = ln.producer()
        shape = M.shape(x)
        if len(node.outputs) != 1 or shape is None:
            return result.fail("LayerNormalization has statistics outputs or x has no static shape")
        axis = node.attributes.get_int("axis", -1) % len(shape)
        beta = node.inputs[2] if len(node.inputs) > 2 else None
        scale, bias = _per_feature(M.constant(gamma), shape, axis), _per_feature(M.constant(beta), shape, axis)
        value = _per_feature(M.constant(other), shape, axis)
        if scale is None or (beta is not None and bias is None):
            return result.fail("LayerNormalization's scale/bias are not constant", node)
        if value is None:
            return result.fail(f"the {self._op_type} operand is not a per-feature constant", other)
        if bias is None:
            bias = np.zeros_like(scale)
        if self._op_type == "Mul":
            scale, bias = scale * value, bias * value
        else:
            bias = bias + value
        self._scale, self._bias, self._attributes = scale, bias, node.attributes
        self._name = context.output_values[0].name
        return result

    def rewrite(self, op, x, **_):
        scale = M.initializer(op, self._scale, f"{self._name}/ln_scale")
        bias = M.initializer(op, self._bias, f"{self._name}/ln_bias")
        return op.LayerNormalization(x, scale, bias, **{k: a.value for k, a in self._attributes.items()})


_RULES = rule_pass("canonicalize-layernorm", "", pattern.RewriteRuleSet(
    [DecomposedLayerNorm.rule(False), DecomposedLayerNorm.rule(True), AbsorbAffine.rule("Mul"),
     AbsorbAffine.rule("Add")], commute=True))


def run(model: ir.Model) -> int:
    M.infer_shapes(model)
    count = _RULES.run(model)
    if count:
        M.raise_opset(model, LAYERNORM_OPSET)  # rule 1 only fired if this is allowed
        M.remove_dead(model)
    return count


PASS = Pass("canonicalize-layernorm", "decomposed LayerNorm (+ following γ/β) → LayerNormalization", run)
