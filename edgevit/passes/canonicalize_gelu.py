"""Replace the erf-GELU chain x·½·(1 + erf(x/√2)) by one GELU node.

Rules (each commuted, x/√2 also as x·(1/√2)):
  1. Mul(Mul(x, 1 + erf(x/√2)), ½)    TorchScript exporter
  2. Mul(x, Mul(1 + erf(x/√2), ½))    dynamo exporter below opset 20
  3. Mul(Mul(x, ½), 1 + erf(x/√2))    hand-written 0.5 * x * (…)
The tanh approximation does not occur in the zoo's exports (no zoo model uses gelu_tanh), so it is
not matched.

Legal because it is the definition of GELU (ONNX Gelu-20, approximate="none"). The constants must be
scalars (size 1, rank ≤ rank of x, so nothing broadcasts to a new shape) within 1e-6 of ½, 1, √2.

Which op: `Gelu` exists from opset 20. If the graph is older, we raise its opset import to 20 only
when no node uses an op whose meaning changed on the way (see `_match.opset_bump_blocker`: e.g.
ReduceMean with an `axes` attribute, which became an input at 18); a bump is then a pure relabelling.
Otherwise we emit `edgevit.Gelu` (same semantics) with a model-local function body that spells out
the erf chain, so the graph still checks and runs unchanged while backends see one activation.
"""

from __future__ import annotations

import math

import onnx_ir as ir
from onnxscript.rewriter import pattern

from . import _match as M
from .base import Pass, rule_pass

GELU_OPSET = 20
_MIN_OPSET = 15  # the edgevit.Gelu body uses CastLike

_BODY = """Gelu (x) => (y) {
    root2 = Constant <value_float: float = 1.4142135623730951> ()
    one = Constant <value_float: float = 1.0> ()
    half = Constant <value_float: float = 0.5> ()
    root2_t = CastLike(root2, x)
    one_t = CastLike(one, x)
    half_t = CastLike(half, x)
    scaled = Div(x, root2_t)
    erf = Erf(scaled)
    one_plus = Add(erf, one_t)
    x_times = Mul(x, one_plus)
    y = Mul(x_times, half_t)
}"""


class ErfGelu(pattern.RewriteRuleClassBase):
    def __init__(self, order: int, native: bool):
        super().__init__(f"ErfGelu{order}")
        self._order, self._native = order, native

    def pattern(self, op, x, root2, one, half):
        scaled = pattern.OrValue([op.Div(x, root2), op.Mul(x, root2)], tag_var="scaling", tag_values=["Div", "Mul"])
        one_plus_erf = op.Add(op.Erf(scaled), one)
        if self._order == 1:
            return op.Mul(op.Mul(x, one_plus_erf), half)
        if self._order == 2:
            return op.Mul(x, op.Mul(one_plus_erf, half))
        return op.Mul(op.Mul(x, half), one_plus_erf)

    def check(self, context, x, root2, one, half, scaling, **_) -> pattern.MatchResult:
        result = pattern.MatchResult()
        if not self._native and M.default_opset(context.model) < _MIN_OPSET:
            return result.fail(f"opset < {_MIN_OPSET}: the edgevit.Gelu body needs CastLike")
        if x.dtype not in (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE, ir.DataType.BFLOAT16):
            return result.fail("x is not a float tensor", x)
        expected = {"half": 0.5, "one": 1.0, "root2": math.sqrt(2) if scaling == "Div" else 1 / math.sqrt(2)}
        for name, value in (("root2", root2), ("one", one), ("half", half)):
            array = M.constant(value)
            if array is None or array.size != 1 or array.ndim > (M.rank(x) or 0):
                return result.fail(f"{name} is not a constant scalar that keeps x's shape", value)
            if not math.isclose(float(array.reshape(())), expected[name], rel_tol=1e-6):
                return result.fail(f"{name} = {float(array.reshape(()))}, not {expected[name]:.7g}", value)
        return result

    def rewrite(self, op, x, **_):
        if self._native:
            return op.Gelu(x)
        return op.Gelu(x, _domain=M.EDGEVIT, _version=1)


def _rules(native: bool):
    return rule_pass("canonicalize-gelu", "", pattern.RewriteRuleSet(
        [ErfGelu.rule(order, native) for order in (1, 2, 3)], commute=True))


_NATIVE, _FUNCTION = _rules(True), _rules(False)


def run(model: ir.Model) -> int:
    M.infer_shapes(model)
    native = M.opset_bump_blocker(model, GELU_OPSET) is None
    count = (_NATIVE if native else _FUNCTION).run(model)
    if count and native:
        M.raise_opset(model, GELU_OPSET)
    elif count:
        M.add_function(model, _BODY)
    if count:
        M.remove_dead(model)  # constants only the chains used
    return count


PASS = Pass("canonicalize-gelu", "erf-GELU chains → Gelu (opset 20) or edgevit.Gelu", run)
