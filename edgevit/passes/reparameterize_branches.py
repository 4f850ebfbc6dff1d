"""reparameterize-branches: parallel linear branches on one input, summed → one Conv.

Training-time blocks (RepVGG, MobileOne, RepViT's RepVggDw, FastViT's stem/downsample and RepMixer)
compute Σ_j c_j·B_j(x) where every B_j is linear in the same x: a k×k Conv(+BN), a 1×1 Conv(+BN), a
BN alone, or x itself, and c_j a per-channel constant from Mul/Div (layer scale) or −1 from Sub. Their
sum is one convolution whose kernel is the sum of the branch kernels placed in a common window (a
1×1 or identity branch becomes a kernel with one non-zero tap; for grouped convs the identity tap sits
at input channel o mod C_in/group, which group o reads) and whose bias is the sum of the biases.
FastViT's RepMixer x + γ·(mixer(x) − norm(x)) is such a sum and needs no special case.

Legal when all branches of a merge read the same tensor with the same stride and group, channel
counts agree, dilations agree wherever a kernel is wider than 1, and their windows line up: every
branch reads output position p from input offsets p·stride − pad_begin + m·dilation, so the start
offsets must differ by whole dilation steps and pad_end − last offset must be equal (equal output
size; zero padding outside each branch's own window is then the same zero the merged kernel sees).
Refused otherwise (e.g. a depthwise and a dense conv on the same input stay two convs), as are
branches whose Conv/BN output has other consumers, auto_pad other than NOTSET/VALID, non-constant
weights, and sums whose leftover terms would need a new Mul. Branch BNs are folded with
fold-batchnorm's math; a BN after the merged sum (RepViT) is left to the fold-batchnorm pass.

The pass is whole-graph (n-ary sums, Sub, Mul by constants), so it implements `run` directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from ._conv_math import Linear, Site, const_array, fold_after, fresh_name, output_site, per_channel, read_linear
from .base import Pass
from .fold_batchnorm import bn_on_site, bn_scale_shift


@dataclass
class Branch:
    """One summand as c·B(x): a Conv (weights already scaled by c) or a per-channel diagonal map."""

    x: ir.Value
    conv: Linear | None  # None: diagonal, y = diag·x + bias
    diag: np.ndarray | float = 1.0  # per-channel (C,) or scalar, for diagonal branches
    bias: np.ndarray | float = 0.0
    nodes: list[ir.Node] = field(default_factory=list)  # computed only for this branch; removed when merged
    value: ir.Value | None = None  # the summand as it is in the graph (None once scaled by a coefficient)

    def scaled(self, c: np.ndarray | float) -> Branch:
        if self.conv is not None:
            return Branch(self.x, fold_after(self.conv, np.broadcast_to(c, self.conv.weight.shape[:1]), None),
                          nodes=self.nodes)
        return Branch(self.x, None, self.diag * c, self.bias * c, self.nodes)


def _sole_use(value: ir.Value) -> bool:
    return len(value.uses()) == 1 and not value.is_graph_output()


def _conv_branch(node: ir.Node) -> Linear | None:
    lin = read_linear(node) if node.op_type == "Conv" else "not a Conv"
    if isinstance(lin, str):
        return None
    auto_pad = lin.attributes["auto_pad"].as_string() if "auto_pad" in lin.attributes else "NOTSET"
    return lin if auto_pad in ("NOTSET", "VALID") else None


def _leaf(value: ir.Value) -> Branch:
    """A summand as a branch on the tensor it is linear in: Conv(x), BN(Conv(x)), BN(x), or itself."""
    node = value.producer()
    if node is None or not _sole_use(value):
        return Branch(value, None, value=value)
    if (lin := _conv_branch(node)) is not None:
        return Branch(node.inputs[0], lin, nodes=[node], value=value)
    if node.op_type == "BatchNormalization":
        inner = node.inputs[0]
        conv = inner.producer() if _sole_use(inner) else None
        lin = _conv_branch(conv) if conv is not None else None
        if lin is not None:  # Conv → BN: the branch is the conv with the BN folded in
            st = bn_on_site(node, output_site(lin))
            if not isinstance(st, str):
                return Branch(conv.inputs[0], fold_after(lin, *st), nodes=[conv, node], value=value)
        elif not isinstance(st := bn_scale_shift(node), str):  # BN alone: a diagonal map of its input
            return Branch(inner, None, st[0], st[1], [node], value)
    return Branch(value, None, value=value)


def _coefficient(node: ir.Node, out: ir.Value) -> tuple[ir.Value, np.ndarray] | None:
    """For out = Mul(v, c) or Div(v, c) with c a per-channel constant: (v, c or 1/c)."""
    if out.shape is None or len(out.shape) < 2 or not isinstance(out.shape[1], int):
        return None  # the channel count is needed to check the broadcast
    site = Site(1, len(out.shape), out.shape[1])
    operands = [(0, 1), (1, 0)] if node.op_type == "Mul" else [(0, 1)]
    for data, const in operands:
        if node.inputs[data].shape != out.shape:
            continue  # the constant would broadcast the data, not just scale it
        c = const_array(node.inputs[const])
        if c is None or isinstance(c := per_channel(c, site), str):
            continue
        if node.op_type == "Div":
            if not np.all(c):
                return None
            c = 1.0 / c
        return node.inputs[data], c
    return None


def _same_shape(node: ir.Node) -> bool:
    """All operands have the (known) output shape: no broadcasting that a coefficient could misapply."""
    shape = node.outputs[0].shape
    return shape is not None and all(v is not None and v.shape == shape for v in node.inputs)


def _summands(value: ir.Value, inner: list[ir.Node], root: bool = False) -> list[Branch]:
    """Flatten the Add/Sum/Sub/Mul-by-constant tree computing `value` into scaled branches.

    Tree nodes that only feed the tree are appended to `inner`; anything else is a leaf.
    """
    node = value.producer()
    if node is None or not (root or _sole_use(value)):
        return [_leaf(value)]
    if node.op_type in ("Add", "Sum", "Sub") and not _same_shape(node):
        return [_leaf(value)]
    if node.op_type in ("Add", "Sum"):
        inner.append(node)
        return [b for v in node.inputs for b in _summands(v, inner)]
    if node.op_type == "Sub":
        inner.append(node)
        return _summands(node.inputs[0], inner) + [b.scaled(-1.0) for b in _summands(node.inputs[1], inner)]
    if node.op_type in ("Mul", "Div") and (coef := _coefficient(node, value)) is not None:
        inner.append(node)
        return [b.scaled(coef[1]) for b in _summands(coef[0], inner)]
    return [_leaf(value)]


@dataclass(frozen=True)
class _Window:
    """Taps of one branch along one spatial axis: input offsets p·stride + start + m·dilation, m < k."""

    k: int
    stride: int
    dilation: int
    pad_begin: int
    pad_end: int


def _windows(b: Branch, spatial: int) -> list[_Window]:
    if b.conv is None:  # a diagonal map is a 1×1 stride-1 unpadded conv
        return [_Window(1, 1, 1, 0, 0)] * spatial
    a, kernel = b.conv.attributes, b.conv.weight.shape[2:]
    strides = a["strides"].as_ints() if "strides" in a else [1] * spatial
    dilations = a["dilations"].as_ints() if "dilations" in a else [1] * spatial
    pads = a["pads"].as_ints() if "pads" in a else [0] * (2 * spatial)
    return [_Window(kernel[i], strides[i], dilations[i], pads[i], pads[spatial + i]) for i in range(spatial)]


@dataclass
class _Layout:
    """The merged conv's window and where each branch's kernel sits in it."""

    kernel: list[int]
    strides: list[int]
    dilations: list[int]
    pads: list[int]
    offsets: list[list[int]]  # per branch, per axis


def _layout(branches: list[Branch], spatial: int) -> _Layout | str:
    per_branch = [_windows(b, spatial) for b in branches]
    lay = _Layout([], [], [], [0] * (2 * spatial), [[] for _ in branches])
    for i in range(spatial):
        ws = [w[i] for w in per_branch]
        if len({w.stride for w in ws}) > 1:
            return f"strides differ on spatial axis {i}"
        wide = {w.dilation for w in ws if w.k > 1}  # a 1-tap kernel has no dilation to agree on
        if len(wide) > 1:
            return f"dilations differ on spatial axis {i}"
        d = wide.pop() if wide else 1
        starts = [-w.pad_begin for w in ws]
        ends = [s + (w.k - 1) * d for s, w in zip(starts, ws)]
        lo = min(starts)
        if any((s - lo) % d for s in starts):
            return f"windows on spatial axis {i} are not a whole number of dilation steps apart"
        if len({w.pad_end - e for w, e in zip(ws, ends)}) > 1:
            return f"branches give different output sizes on spatial axis {i}"
        lay.kernel.append((max(ends) - lo) // d + 1)
        lay.strides.append(ws[0].stride)
        lay.dilations.append(d)
        lay.pads[i], lay.pads[spatial + i] = -lo, ws[0].pad_end - ends[0] + max(ends)
        for offsets, s in zip(lay.offsets, starts):
            offsets.append((s - lo) // d)
    return lay


def _merge(branches: list[Branch]) -> Linear | str:
    """The single conv equal to the sum of `branches` (at least one of them a conv), or why not."""
    convs = [b.conv for b in branches if b.conv is not None]
    ref = convs[0]
    shape, group = ref.weight.shape, ref.group
    for c in convs[1:]:
        if c.group != group or c.weight.shape[:2] != shape[:2] or c.weight.ndim != ref.weight.ndim:
            return f"group/channels differ: {c.group}×{c.weight.shape[:2]} vs {group}×{shape[:2]}"
    c_out, c_in_group = shape[:2]
    has_diag = len(convs) < len(branches)
    if has_diag and c_out != c_in_group * group:
        return f"an identity-like branch needs C_in = C_out, here {c_in_group * group} → {c_out}"
    for b in branches:
        if b.conv is None and np.ndim(b.diag) and len(b.diag) != c_out:
            return f"a per-channel branch has {len(b.diag)} channels, the convs {c_out}"
    lay = _layout(branches, ref.weight.ndim - 2)
    if isinstance(lay, str):
        return lay
    weight = np.zeros((c_out, c_in_group, *lay.kernel))
    bias = np.zeros(c_out)
    rows = np.arange(c_out)
    for b, off in zip(branches, lay.offsets):
        if b.conv is not None:
            k = b.conv.weight.shape[2:]
            weight[(slice(None), slice(None), *(slice(o, o + n) for o, n in zip(off, k)))] += b.conv.weight
            if b.conv.bias is not None:
                bias += b.conv.bias
        else:  # output channel o reads input channel o at in-group position o mod C_in/group
            weight[(rows, rows % c_in_group, *off)] += b.diag
            bias += b.bias
    attrs = ir.convenience.convert_attributes({"group": group, "kernel_shape": lay.kernel, "strides": lay.strides,
                                               "dilations": lay.dilations, "pads": lay.pads})
    return Linear(ref.node, "Conv", weight, bias, ref.dtype, {a.name: a for a in attrs})


def _clusters(branches: list[Branch]) -> list[tuple[list[Branch], Linear]]:
    """Greedy: per input tensor, group convs that merge, then let diagonal branches join one."""
    merged: list[tuple[list[Branch], Linear]] = []
    by_input: dict[ir.Value, list[Branch]] = {}
    for b in branches:
        by_input.setdefault(b.x, []).append(b)
    for same_input in by_input.values():
        clusters: list[list[Branch]] = []
        for b in sorted(same_input, key=lambda b: b.conv is None):  # convs first, they anchor the geometry
            for c in clusters:
                if not isinstance(_merge(c + [b]), str):
                    c.append(b)
                    break
            else:
                if b.conv is not None:
                    clusters.append([b])
        merged += [(c, _merge(c)) for c in clusters if len(c) > 1]
    return merged


def _initializer(graph: ir.Graph, anchor: ir.Value, array: np.ndarray, suffix: str) -> ir.Value:
    value = ir.Value(name=fresh_name(anchor, f"{anchor.name}_{suffix}"), const_value=ir.tensor(array))
    value.shape, value.type = ir.Shape(array.shape), ir.TensorType(ir.DataType.from_numpy(array.dtype))
    graph.register_initializer(value)
    return value


def _conv_node(graph: ir.Graph, x: ir.Value, lin: Linear, shape: ir.Shape | None) -> ir.Node:
    anchor = lin.node.inputs[1]
    bias = lin.bias if lin.bias is not None else np.zeros(lin.weight.shape[0])
    w = _initializer(graph, anchor, lin.weight.astype(lin.dtype), "reparam")
    b = _initializer(graph, anchor, bias.astype(lin.dtype), "reparam_bias")
    node = ir.Node("", "Conv", [x, w, b], lin.attributes.values())
    node.outputs[0].shape, node.outputs[0].type = shape, x.type
    return node


def _rewrite_sum(graph: ir.Graph, root: ir.Node) -> int:
    """Merge what can be merged in the sum tree ending at `root`; the number of merged groups."""
    inner: list[ir.Node] = []
    branches = _summands(root.outputs[0], inner, root=True)
    merged = _clusters(branches)
    if not merged:
        return 0
    taken = {id(b) for group, _ in merged for b in group}
    rest = [b for b in branches if id(b) not in taken]
    if any(b.value is None and b.conv is None for b in rest):
        return 0  # a scaled diagonal leftover would need a new Mul: leave this sum as it is
    shape = root.outputs[0].shape  # every summand has it (checked while flattening)
    new_nodes, terms, dead = [], [], list(inner)
    for group, lin in merged:
        new_nodes.append(_conv_node(graph, group[0].x, lin, shape))
        dead += [n for b in group for n in b.nodes]
    for b in rest:
        if b.value is None:  # a scaled leftover conv is still one conv, with the scale folded in
            new_nodes.append(_conv_node(graph, b.x, b.conv, shape))
            dead += b.nodes
        else:
            terms.append(b.value)
    terms = [n.outputs[0] for n in new_nodes] + terms
    total = terms[0]
    for t in terms[1:]:
        new_nodes.append(ir.Node("", "Add", [total, t]))
        total = new_nodes[-1].outputs[0]
        total.shape, total.type = shape, root.outputs[0].type
    ir.convenience.replace_nodes_and_values(graph, root, dead, new_nodes, [root.outputs[0]], [total])
    return len(merged)


def run(model: ir.Model) -> int:
    graph, total = model.graph, 0
    for _ in range(32):  # a merge can make an enclosing sum mergeable; stop at a fixed point
        count = 0
        # Outermost sums first: one big merge instead of a chain of partial ones.
        for node in reversed(list(graph)):
            if node.graph is graph and node.op_type in ("Add", "Sum", "Sub"):
                count += _rewrite_sum(graph, node)
        total += count
        if not count:
            break
    if total:
        RemoveUnusedNodesPass()(model)
    return total


PASS = Pass(
    "reparameterize-branches",
    "merge parallel Conv/BN/identity branches on one input (RepVGG, MobileOne, RepViT, FastViT) into one Conv",
    run,
)
