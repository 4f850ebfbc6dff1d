"""fold-batchnorm: BatchNormalization next to a Conv / ConvTranspose / Gemm / MatMul → that node alone.

In inference form BatchNormalization is a per-channel affine map on axis 1, y = s·x + t with
s = γ/√(var+ε) and t = β − mean·s. A linear node's weights absorb it (math in _conv_math):

* BN after Conv, ConvTranspose, Gemm, or a MatMul with a constant 2-D weight whose output is 2-D (N, C):
  their output channel is axis 1. A batched MatMul (…, T, C) has its channel last, so BN's axis 1 is
  T and the fold is refused.
* BN before Conv (no padding, any group: each weight slot is scaled by the channel it reads), before
  Gemm (transA = 0) and before a 2-D MatMul (→ Gemm, which takes the shifted bias). A padded Conv is
  refused: its border taps read zero padding where the unfolded graph had t.

Refused too: training-mode BN (batch statistics), BN parameters or weights that are not constants
(graph inputs included), and any match whose intermediate value has other consumers (the rewriter
only replaces nodes nothing else reads). onnxscript's fuse_batchnorm_into_{conv,conv_transpose,gemm}
rules cover three producers but fold a training-mode BN as if it were inference; the rules here
generalize them, and fold-layer-scale and reparameterize-branches build on the same two rule bases.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter._basics import MatchResult
from onnxscript.rewriter._rewrite_rule import RewriteRuleClassBase

from ._conv_math import (
    LINEAR_OPS,
    Linear,
    Site,
    const_array,
    fold_after,
    fold_before,
    folding_pass,
    input_site,
    output_site,
    read_linear,
)


def bn_scale_shift(node: ir.Node) -> tuple[np.ndarray, np.ndarray] | str:
    """An inference-mode BatchNormalization as per-channel (s, t) in float64, or why it is not one."""
    if node.attributes.get_int("training_mode", 0):
        return "BatchNormalization is in training mode (normalizes by batch statistics)"
    if any(o.uses() or o.is_graph_output() for o in node.outputs[1:]):
        return "BatchNormalization's running-statistics outputs are used"
    params = [const_array(v) for v in node.inputs[1:5]]
    if len(params) != 4 or any(p is None for p in params):
        return "BatchNormalization scale/bias/mean/var are not all constants"
    if any(p.ndim != 1 or p.shape != params[0].shape for p in params):
        return "BatchNormalization parameters are not equal-length vectors"
    gamma, beta, mean, var = (p.astype(np.float64) for p in params)
    s = gamma / np.sqrt(var + node.attributes.get_float("epsilon", 1e-5))
    return s, beta - mean * s


def bn_on_site(node: ir.Node, site: Site) -> tuple[np.ndarray, np.ndarray] | str:
    """(s, t) of a BatchNormalization acting on the channel axis `site` describes, or why not."""
    if site.axis != 1:
        return f"BatchNormalization acts on axis 1; the channels here are axis {site.axis} of rank {site.rank}"
    st = bn_scale_shift(node)
    if not isinstance(st, str) and len(st[0]) != site.channels:
        return f"BatchNormalization has {len(st[0])} channels, the tensor {site.channels}"
    return st


def _verdict(plan) -> MatchResult:
    return MatchResult().fail(plan) if isinstance(plan, str) else MatchResult()


class FoldAfter(RewriteRuleClassBase):
    """Base rule: a per-channel map `out = a(prod)` right after `prod = P(x, W[, b])` → P'(x).

    Subclasses give the pattern of `a` (naming its output "out") and its (s, t) at P's output channel axis.
    """

    def __init__(self, producer: str, tag: str = ""):
        super().__init__(name=f"{type(self).__name__}{tag}({producer})")
        self.producer = producer

    def linear(self, op, x):
        return getattr(op, self.producer)(x, _allow_other_inputs=True, _outputs=["prod"])

    def scale_shift(self, node: ir.Node, data: ir.Value, site: Site):
        raise NotImplementedError

    def plan(self, prod: ir.Value, out: ir.Value, **_) -> Linear | str:
        lin = read_linear(prod.producer())
        if isinstance(lin, str):
            return lin
        site = output_site(lin)
        if isinstance(site, str):
            return site
        st = self.scale_shift(out.producer(), prod, site)
        return st if isinstance(st, str) else fold_after(lin, *st)

    def check(self, context, prod, out, **bindings):
        return _verdict(self.plan(prod, out, **bindings))

    def rewrite(self, op, x, prod, out, **bindings):
        return self.plan(prod, out, **bindings).emit(op, x)


class FoldBefore(RewriteRuleClassBase):
    """Base rule: `out = P(a(x), W[, b])` with a per-channel map `mid = a(x)` → P'(x).

    Subclasses give the pattern of `a` (naming its output "mid") and its (s, t) at P's input channel axis.
    """

    def __init__(self, consumer: str, tag: str = ""):
        super().__init__(name=f"{type(self).__name__}{tag}({consumer})")
        self.consumer = consumer

    def linear(self, op, v):
        return getattr(op, self.consumer)(v, _allow_other_inputs=True, _outputs=["out"])

    def scale_shift(self, node: ir.Node, data: ir.Value, site: Site):
        raise NotImplementedError

    def plan(self, x: ir.Value, mid: ir.Value, out: ir.Value) -> Linear | str:
        lin = read_linear(out.producer())
        if isinstance(lin, str):
            return lin
        site = input_site(lin)
        if isinstance(site, str):
            return site
        st = self.scale_shift(mid.producer(), x, site)
        return st if isinstance(st, str) else fold_before(lin, *st)

    def check(self, context, x, mid, out, **_):
        return _verdict(self.plan(x, mid, out))

    def rewrite(self, op, x, mid, out, **_):
        return self.plan(x, mid, out).emit(op, x)


class BatchNormAfter(FoldAfter):
    def pattern(self, op, x):
        return op.BatchNormalization(self.linear(op, x), _allow_other_inputs=True, _outputs=["out"])

    def scale_shift(self, node, data, site):
        return bn_on_site(node, site)


class BatchNormBefore(FoldBefore):
    def pattern(self, op, x):
        return self.linear(op, op.BatchNormalization(x, _allow_other_inputs=True, _outputs=["mid"]))

    def scale_shift(self, node, data, site):
        return bn_on_site(node, site)


# The rewriter visits nodes in order, so a BN between two linear nodes reaches its producer's rule first
# (legal whatever the padding) before the consumer's.
RULES = [BatchNormAfter.rule(p) for p in LINEAR_OPS] + [
    BatchNormBefore.rule(c) for c in ("Conv", "Gemm", "MatMul")
]

PASS = folding_pass(
    "fold-batchnorm",
    "fold inference BatchNormalization into the adjacent Conv/ConvTranspose/Gemm/MatMul weights",
    RULES,
)
