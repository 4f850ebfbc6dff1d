"""Remove ops that compute nothing at inference, collapse redundant layout chains, drop dead nodes.

Rules (onnxscript's common rules where they exist):
  - x·1, 1·x, x+0, 0+x, x-0, x/1 (scalar constants only, so nothing broadcasts) → x
  - Dropout in inference (no training_mode input, or a constant false one; mask unused) → x
  - Cast to x's own type, Expand to x's own shape, Transpose by the identity permutation → x
  - Reshape whose output shape equals its input shape → x
  - Transpose(Transpose(x)) → one Transpose (or x);  Reshape(Reshape(x), s) → Reshape(x, s)
  - Identity nodes → their input (onnx_ir IdentityEliminationPass; kept when both ends are graph I/O)
  - nodes and initializers that no graph output depends on → removed
Each rewrite is an algebraic identity on the values involved; shape-dependent rules require static,
equal shapes, so they cannot change an output's shape or type.
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter import pattern
from onnxscript.rewriter.rules import common as R

from . import _match as M
from .base import Pass, rule_pass


class DropoutInference(pattern.RewriteRuleClassBase):
    def pattern(self, op, x):
        return op.Dropout(x, _allow_other_inputs=True, _outputs=["y"])

    def check(self, context, x, y, **_) -> pattern.MatchResult:
        result = pattern.MatchResult()
        node = y.producer()
        if len(node.outputs) > 1 and node.outputs[1].uses():
            return result.fail("the dropout mask is used", node)
        training = node.inputs[2] if len(node.inputs) > 2 else None
        if training is None:
            return result  # absent training_mode means inference
        flag = M.constant(training)
        if flag is None or flag.any():
            return result.fail("training_mode is not a constant false", training)
        return result

    def rewrite(self, op, x, **_):
        return op.Identity(x)


class ReshapeToSameShape(pattern.RewriteRuleClassBase):
    def pattern(self, op, x, target):
        return op.Reshape(x, target, _outputs=["y"])

    def check(self, context, x, target, y, **_) -> pattern.MatchResult:
        result = pattern.MatchResult()
        before, after = M.shape(x), M.shape(y)
        if before is None or before != after:
            return result.fail(f"reshape {before} → {after} is not a static no-op", y)
        return result

    def rewrite(self, op, x, **_):
        return op.Identity(x)


_RULES = rule_pass("eliminate-identity", "", [
    *R.mul_by_1_rule.commute(), *R.add_0_rule.commute(), R.sub_0_rule, R.div_by_1_rule,
    DropoutInference.rule(), R.no_op_cast_rule, R.no_op_expand_rule, R.no_op_transpose_rule,
    ReshapeToSameShape.rule(), R.transpose_transpose_rule, R.reshape_reshape_rule,
])


def _identities(model: ir.Model) -> int:
    return sum(1 for n in model.graph if n.op_type == "Identity" and n.domain == "")


def run(model: ir.Model) -> int:
    M.infer_shapes(model)
    present = _identities(model)
    count = _RULES.run(model)
    ir.passes.common.IdentityEliminationPass()(model)
    count += max(0, present - _identities(model))  # the rules' own Identity nodes are counted above
    return count + M.remove_dead(model)


PASS = Pass("eliminate-identity", "no-op ops, Identity/Dropout, redundant Reshape/Transpose pairs, dead nodes", run)
