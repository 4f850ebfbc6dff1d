"""Fuse scaled dot-product attention into one `edgevit.Attention` node (with a model-local body).

Rules, in the order they apply:
  1. Attention:       MatMul(softmax(MatMul(Q·a, Kᵀ·b)·c [+ bias]), V)       → Attention(Q, Kᵀ, V[, bias])
  2. Channels-first:  MatMul(V, Transpose(softmax(MatMul(Q·a, Kᵀ·b)·c [+ bias])))  (SHViT's v @ attnᵀ)
                      → Attention(Q, Kᵀ, V[, bias], channels_first=1)
     Each of a, b, c is a Mul or Div by a constant scalar, or absent; their product is the `scale`
     attribute. Kᵀ is the MatMul's right operand as the graph has it (the Transpose that produced it,
     if any, stays outside: backends fold it into their matmul layout).
  3. Merge projections: when Q, Kᵀ and V trace back (through layout ops and constant bias Adds) to
     three separate Conv or MatMul nodes on the same input with constant weights, those become one
     Conv/MatMul with concatenated weights followed by Split (SHViT's single-head attention).

Legality: the fused op computes exactly the matched expression. Scalar factors commute with MatMul, so
Q·a @ Kᵀ·b · c = (Q @ Kᵀ)·(abc) up to float rounding. The refusals keep that true: the softmax must
run over the last axis of the scores (the key axis), factors must be constant scalars of rank ≤ the
tensor they scale (a larger rank would broadcast to a new shape), the bias must not grow the scores'
shape, operands must be at least 2-D (MatMul treats 1-D operands differently), and no intermediate
(scores, probabilities) may have a consumer outside the match (checked by the matcher). Merging
projections concatenates output channels of the same linear map, which Split separates again.

Op emitted: opset 23 has a standard `Attention`, and onnxruntime 1.32 runs it, but adopting it means
raising a 17/18 graph to opset 23, which re-versions nearly every op (Reshape, Transpose, Cast,
Constant… at 19/21/23) and breaks ReduceMean (axes moved to an input at 18); it also fixes Q/K/V to
(B, H, S, d) layouts, so SHViT's channels-first attention would need extra transposes. We emit
`edgevit.Attention` instead and add its decomposed body as a model-local FunctionProto (one overload
per variant: with/without bias, channels-first or not), so onnx.checker and onnxruntime accept the
graph unchanged while a backend can lower the node as one kernel.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern

from . import _match as M
from .base import Pass, rule_pass

logger = logging.getLogger(__name__)
_MIN_OPSET = 15  # the function body uses CastLike (opset 15)


def _scaled(op, x, factor, tag: str):
    """x, x·factor or x/factor, with the choice recorded in `tag`."""
    return pattern.OrValue([op.Mul(x, factor), op.Div(x, factor), x], tag_var=tag, tag_values=["Mul", "Div", None])


class ScaledDotProductAttention(pattern.RewriteRuleClassBase):
    def __init__(self, channels_first: bool):
        super().__init__("ChannelsFirstAttention" if channels_first else "Attention")
        self._channels_first = channels_first

    def pattern(self, op, query, key_t, value, bias, q_factor, k_factor, s_factor):
        scores = op.MatMul(_scaled(op, query, q_factor, "q_op"), _scaled(op, key_t, k_factor, "k_op"),
                           _outputs=["raw_scores"])
        scores = _scaled(op, scores, s_factor, "s_op")
        scores = pattern.OrValue([op.Add(scores, bias), scores], tag_var="has_bias", tag_values=[True, False])
        probs = op.Softmax(scores, _outputs=["probs"])
        if self._channels_first:
            return op.MatMul(value, op.Transpose(probs, _outputs=["probs_t"]))
        return op.MatMul(probs, value)

    def check(self, context, query, key_t, value, bias, raw_scores, probs, has_bias, **b) -> pattern.MatchResult:
        result = pattern.MatchResult()
        if M.default_opset(context.model) < _MIN_OPSET:
            return result.fail(f"opset < {_MIN_OPSET}: the Attention body needs CastLike")
        ranks = [M.rank(v) for v in (query, key_t, value, raw_scores)]
        if any(r is None or r < 2 for r in ranks):
            return result.fail(f"Q/Kᵀ/V/scores ranks {ranks}: need known ranks ≥ 2 (1-D MatMul differs)")
        scores_rank = ranks[-1]
        axis = probs.producer().attributes.get_int("axis", -1)
        if axis not in (-1, scores_rank - 1):
            return result.fail(f"softmax over axis {axis}, not the last (key) axis", probs)
        scale = 1.0
        for tag, factor, scaled in (("q_op", "q_factor", query), ("k_op", "k_factor", key_t),
                                    ("s_op", "s_factor", raw_scores)):
            if b.get(tag) is None:
                continue
            array = M.constant(b[factor])
            if array is None or array.size != 1 or array.ndim > M.rank(scaled):
                return result.fail(f"{factor} is not a constant scalar that keeps the operand's shape", b[factor])
            scale *= float(array.reshape(())) if b[tag] == "Mul" else 1.0 / float(array.reshape(()))
        if has_bias:
            scores_shape, bias_shape = M.shape(raw_scores), M.shape(bias)
            if scores_shape is None or bias_shape is None:
                return result.fail("bias or scores shape unknown: cannot prove the Add keeps the scores shape")
            try:
                grown = np.broadcast_shapes(scores_shape, bias_shape) != scores_shape
            except ValueError:
                grown = True
            if grown:
                return result.fail(f"bias {bias_shape} does not broadcast into scores {scores_shape}", bias)
        if self._channels_first:
            perm = list(b["probs_t"].producer().attributes.get_ints("perm", []))
            if perm != [*range(scores_rank - 2), scores_rank - 1, scores_rank - 2]:
                return result.fail(f"transpose {perm} of the probabilities is not a swap of the last two axes")
        self._scale = scale
        return result

    def rewrite(self, op, query, key_t, value, bias, has_bias, **_):
        inputs = [query, key_t, value] + ([bias] if has_bias else [])
        return op.Attention(*inputs, scale=self._scale, channels_first=int(self._channels_first),
                            _domain=M.EDGEVIT, _version=1)


_FUSE = rule_pass("fuse-attention", "", pattern.RewriteRuleSet(
    [ScaledDotProductAttention.rule(False), ScaledDotProductAttention.rule(True)], commute=True))


def _body(bias: bool, channels_first: bool) -> tuple[str, str]:
    """(overload, ONNX text) of the reference body for one variant of edgevit.Attention."""
    overload = "_".join(n for n, on in (("channels_first", channels_first), ("bias", bias)) if on)
    inputs = "query, key_t, value" + (", bias" if bias else "")
    logits = "biased = Add(scaled, bias)\n    probs = Softmax <axis = -1> (biased)" if bias else \
        "probs = Softmax <axis = -1> (scaled)"
    out = ('probs_t = Einsum <equation = "...qk->...kq"> (probs)\n    output = MatMul(value, probs_t)'
           if channels_first else "output = MatMul(probs, value)")
    return overload, f"""Attention <scale, channels_first> ({inputs}) => (output) {{
    scores = MatMul(query, key_t)
    factor = Constant <value_float: float = @scale> ()
    typed = CastLike(factor, scores)
    scaled = Mul(scores, typed)
    {logits}
    {out}
}}"""


def _attach_bodies(model: ir.Model) -> None:
    """Give every edgevit.Attention node the overload whose body matches its inputs and layout."""
    for node in model.graph:
        if node.domain == M.EDGEVIT and node.op_type == "Attention":
            overload, text = _body(len(node.inputs) == 4, bool(node.attributes.get_int("channels_first", 0)))
            node.overload = overload
            M.add_function(model, text, overload)


_LAYOUT = {"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze"}


def _projection(value: ir.Value) -> ir.Node | None:
    """The Conv/MatMul computing `value`, looking through layout ops and Adds of a constant bias."""
    while (node := value.producer()) is not None and node.domain == "":
        if node.op_type in ("Conv", "MatMul"):
            return node
        if node.op_type in _LAYOUT or (node.op_type == "Add" and M.constant(node.inputs[1]) is not None):
            value = node.inputs[0]
        else:
            return None
    return None


def _merge_blocker(nodes: list[ir.Node]) -> str | None:
    first = nodes[0]
    if len({id(n) for n in nodes}) < 3:
        return "Q, K and V already share a projection"
    if any(n.op_type != first.op_type or n.inputs[0] is not first.inputs[0] for n in nodes):
        return "projections differ in op or input"
    if any(o.is_graph_output() for n in nodes for o in n.outputs):
        return "a projection is a graph output"
    if any(M.constant(n.inputs[1]) is None for n in nodes):
        return "a projection weight is not constant"
    if first.op_type == "MatMul":
        return None if all(M.rank(n.inputs[1]) == 2 for n in nodes) else "MatMul weights are not 2-D"
    attrs = [{k: a.value for k, a in n.attributes.items()} for n in nodes]
    if any(a != attrs[0] for a in attrs) or attrs[0].get("group", 1) != 1:
        return "Conv attributes differ or group ≠ 1"
    if any(len(n.inputs) > 2 and n.inputs[2] is not None and M.constant(n.inputs[2]) is None for n in nodes):
        return "a Conv bias is not constant"
    return None


def _merge(graph: ir.Graph, nodes: list[ir.Node]) -> None:
    """One Conv/MatMul with concatenated output channels, then Split back into the three outputs."""
    conv = nodes[0].op_type == "Conv"
    axis = 0 if conv else 1  # output-channel axis of the weight
    weights = [M.constant(n.inputs[1]) for n in nodes]
    sizes = [w.shape[axis] for w in weights]
    name = nodes[0].name or "qkv"

    def init(array: np.ndarray, suffix: str) -> ir.Value:
        value = ir.Value(name=f"{name}/{suffix}", const_value=ir.tensor(np.ascontiguousarray(array)))
        graph.register_initializer(value)
        return value

    inputs = [nodes[0].inputs[0], init(np.concatenate(weights, axis), "merged_weight")]
    if conv and any(len(n.inputs) > 2 and n.inputs[2] is not None for n in nodes):
        biases = [M.constant(n.inputs[2]) if len(n.inputs) > 2 and n.inputs[2] is not None
                  else np.zeros(s, w.dtype) for n, s, w in zip(nodes, sizes, weights)]
        inputs.append(init(np.concatenate(biases), "merged_bias"))
    merged = ir.Node("", nodes[0].op_type, inputs, list(nodes[0].attributes.values()), name=f"{name}/merged")
    split = ir.Node("", "Split", [merged.outputs[0], init(np.array(sizes, np.int64), "split")],
                    [ir.AttrInt64("axis", 1 if conv else -1)], num_outputs=3, name=f"{name}/split")
    order = list(graph)
    graph.insert_before(min(nodes, key=order.index), [merged, split])
    for node, out in zip(nodes, split.outputs):
        ir.convenience.replace_all_uses_with(node.outputs[0], out)
    graph.remove(nodes, safe=True)


def _merge_projections(model: ir.Model) -> int:
    count = 0
    for node in list(model.graph):
        if node.domain == M.EDGEVIT and node.op_type == "Attention":
            sources = [_projection(v) for v in node.inputs[:3]]
            if None in sources:
                continue
            if (blocker := _merge_blocker(sources)) is not None:
                logger.debug("not merging the projections of %s: %s", node.name, blocker)
                continue
            _merge(model.graph, sources)
            count += 1
    return count


def run(model: ir.Model) -> int:
    M.infer_shapes(model)
    count = _FUSE.run(model)
    if count:
        _attach_bodies(model)
        count += _merge_projections(model)
        M.remove_dead(model)  # e.g. the scale chain torch computes once and all blocks share
    return count


PASS = Pass("fuse-attention", "scaled dot-product attention → one edgevit.Attention node (+ QKV merge)", run)
