"""fold-batchnorm: BatchNormalization next to a Conv / ConvTranspose / Gemm / MatMul → that node alone.

In inference form BatchNormalization is a per-channel affine map on axis 1, y = s·x + t with
s = γ/√(var+ε) and t = β − mean·s. A linear node's weights absorb it (math in _conv_math):

* BN after Conv, ConvTranspose, Gemm, or a MatMul with a constant 2-D weight whose output is 2-D (N, C):
  their output channel is axis 1. A batched MatMul (…, T, C) has its channel last, so BN's axis 1 is
  T and the fold is refused.
* BN before Conv (no padding, any group: each weight slot is scaled by the channel it reads), before
  Gemm (transA = 0) and before a 2-D MatMul (→ Gemm, which takes the shifted bias). A padded Conv is
  refused: its border taps read zero padding where the unfolded graph had t.

* BN1d after a flattened batched MatMul (LeViT's LinearNorm and head): MatMul(x, W) on (…, T, K) →
  Flatten / Reshape to (M, C) → BN. Legal only when the reshape merges leading axes alone, so BN's
  channel axis 1 is the MatMul's last (output-feature) axis: the output is 2-D and its last dim is the
  MatMul output's last dim (= W's columns). W's columns take s; t becomes a bias Add after the MatMul
  (the batched-Linear form the later passes know); the reshape is kept (rule FlattenedMatMulBatchNorm).

Refused too: training-mode BN (batch statistics), BN parameters or weights that are not constants
(graph inputs included), and any match whose intermediate value has other consumers (the rewriter
only replaces nodes nothing else reads).

Fallback (rule BatchNormAsMulAdd), tried only once no fold above matches anywhere: any remaining
inference-mode BN with constant parameters and a known input rank becomes `Add(Mul(x, s), t)` with
s, t shaped (C, 1, …) to broadcast on axis 1. That is exact by definition, so the pass leaves no
inference BatchNormalization behind (fold-layer-scale may still absorb the Mul). Training-mode BNs and
BNs with non-constant parameters stay. onnxscript's fuse_batchnorm_into_{conv,conv_transpose,gemm}
rules cover three producers but fold a training-mode BN as if it were inference; the rules here
generalize them, and fold-layer-scale and reparameterize-branches build on the same two rule bases.
"""

from __future__ import annotations

import abc

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import RewriteRuleSet
from onnxscript.rewriter._basics import MatchResult
from onnxscript.rewriter._rewrite_rule import RewriteRuleClassBase

from .base import Pass
from ._conv_math import (
    LINEAR_OPS,
    Linear,
    Site,
    const_array,
    fold_after,
    fold_before,
    folding_pass,
    fresh_name,
    input_site,
    output_site,
    rank_of,
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

    @abc.abstractmethod
    def scale_shift(self, node: ir.Node, data: ir.Value, site: Site):
        """(s, t) of the per-channel map at `site`, or a reason string why it is not one."""

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

    @abc.abstractmethod
    def scale_shift(self, node: ir.Node, data: ir.Value, site: Site):
        """(s, t) of the per-channel map at `site`, or a reason string why it is not one."""

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


class FlattenedMatMulBatchNorm(RewriteRuleClassBase):
    """BN(Flatten|Reshape(MatMul(x, W))) with the reshape merging only leading axes → reshape(MatMul'+Add).

    timm LeViT's LinearNorm: Linear without bias, `flatten(0, 1)` to (B·N, C), BatchNorm1d, reshape back.
    """

    def __init__(self, reshape: str):
        super().__init__(name=f"{type(self).__name__}({reshape})")
        self.reshape = reshape

    def pattern(self, op, x):
        prod = op.MatMul(x, _allow_other_inputs=True, _outputs=["prod"])
        flat = getattr(op, self.reshape)(prod, _allow_other_inputs=True, _outputs=["flat"])
        return op.BatchNormalization(flat, _allow_other_inputs=True, _outputs=["out"])

    def plan(self, prod: ir.Value, flat: ir.Value, out: ir.Value):
        lin = read_linear(prod.producer())
        if isinstance(lin, str):
            return lin
        site = output_site(lin)
        if isinstance(site, str):
            return site
        if prod.shape is None or flat.shape is None or not prod.shape.is_static() or not flat.shape.is_static():
            return "MatMul or reshaped output shape is not static"
        src, dst = list(prod.shape), list(flat.shape)
        if len(dst) != 2 or dst[1] != src[-1] or dst[1] != site.channels:
            return (f"{self.reshape} {src} → {dst} does not merge only leading axes: BN's axis 1 would not be "
                    f"the MatMul's output features")
        if int(np.prod(src)) != int(np.prod(dst)):
            return f"{self.reshape} {src} → {dst} changes the element count"
        st = bn_on_site(out.producer(), Site(1, 2, site.channels))
        if isinstance(st, str):
            return st
        s, t = st
        folded = fold_after(lin, s, None)
        folded.bias = t
        return folded

    def check(self, context, prod, flat, out, **_):
        return _verdict(self.plan(prod, flat, out))

    def rewrite(self, op, x, prod, flat, out, **_):
        lin = self.plan(prod, flat, out)
        anchor = lin.node.inputs[1]
        w = op.initializer(ir.tensor(lin.weight.astype(lin.dtype)), fresh_name(anchor, f"{anchor.name}_folded"))
        b = op.initializer(ir.tensor(lin.bias.astype(lin.dtype)), fresh_name(anchor, f"{anchor.name}_folded_bias"))
        mm = op.MatMul(x, w)
        biased = op.Add(mm, b)
        for v in (mm, biased):
            v.shape, v.type = prod.shape, prod.type
        node = flat.producer()
        return op.op(self.reshape, biased, *node.inputs[1:], **dict(node.attributes))


class BatchNormAsMulAdd(RewriteRuleClassBase):
    """Fallback: a standalone inference BN → Add(Mul(x, s), t), s and t broadcasting on axis 1."""

    def pattern(self, op, x):
        return op.BatchNormalization(x, _allow_other_inputs=True, _outputs=["out"])

    def plan(self, x: ir.Value, out: ir.Value):
        st = bn_scale_shift(out.producer())
        if isinstance(st, str):
            return st
        rank = rank_of(x)
        if rank is None or rank < 2:
            return "BatchNormalization input rank is unknown (or below 2)"
        if isinstance(x.shape[1], int) and x.shape[1] != len(st[0]):
            return f"BatchNormalization has {len(st[0])} channels, the tensor {x.shape[1]}"
        dtype = x.dtype.numpy() if x.dtype is not None else const_array(out.producer().inputs[1]).dtype
        shape = (len(st[0]),) + (1,) * (rank - 2)
        return tuple(v.reshape(shape).astype(dtype) for v in st)

    def check(self, context, x, out, **_):
        return _verdict(self.plan(x, out))

    def rewrite(self, op, x, out, **_):
        s, t = self.plan(x, out)
        anchor = out.producer().inputs[1]
        scale = op.initializer(ir.tensor(s), fresh_name(anchor, f"{anchor.name}_bn_scale"))
        shift = op.initializer(ir.tensor(t), fresh_name(anchor, f"{anchor.name}_bn_shift"))
        mul = op.Mul(x, scale)
        mul.shape, mul.type = x.shape, x.type
        return op.Add(mul, shift)


# The rewriter visits nodes in order, so a BN between two linear nodes reaches its producer's rule first
# (legal whatever the padding) before the consumer's.
RULES = (
    [BatchNormAfter.rule(p) for p in LINEAR_OPS]
    + [FlattenedMatMulBatchNorm.rule(r) for r in ("Flatten", "Reshape")]
    + [BatchNormBefore.rule(c) for c in ("Conv", "Gemm", "MatMul")]
)
# Applied only after RULES reach a fixed point: anchored on the BN itself, it would otherwise pre-empt
# the BatchNormBefore rules, which anchor on the consumer that comes later in node order.
FALLBACK_RULES = [BatchNormAsMulAdd.rule()]

_FOLD = folding_pass("fold-batchnorm:fold", "BN folded into a linear node", RULES)
_FALLBACK = folding_pass("fold-batchnorm:mul-add", "BN left over → Mul+Add", RewriteRuleSet(FALLBACK_RULES))


def _run(model: ir.Model) -> int:
    return _FOLD.run(model) + _FALLBACK.run(model)


PASS = Pass(
    "fold-batchnorm",
    "fold inference BatchNormalization into the adjacent Conv/ConvTranspose/Gemm/MatMul weights, "
    "else rewrite it as per-channel Mul+Add",
    _run,
)
