"""Per-channel weight math shared by fold-batchnorm, fold-layer-scale and reparameterize-branches.

Each fold rewrites a linear node P (Conv, ConvTranspose, Gemm, MatMul with a constant weight) that is
followed or preceded by a per-channel affine map a(v) = s·v + t on P's channel axis:

    a(P(x))  = P'(x)   with W' = W scaled per output channel by s,  b' = s·b + t
    P(a(x))  = P'(x)   with W' = W scaled per input channel by s,   b' = b + W·t

The second form is exact only where every output sees the same t: no zero padding (a padded border
sees 0, not t), so a shift is refused on padded convolutions; a pure scale commutes with zero padding.
Everything is computed in float64 and cast back to the weight dtype once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from .base import Pass, rule_pass

# The linear nodes a per-channel affine map can be folded into.
LINEAR_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The value's contents if fixed at compile time (initializer or Constant, not an overridable input)."""
    if value is None or value.is_graph_input():
        return None
    tensor = ir.convenience.get_const_tensor(value)
    return None if tensor is None else tensor.numpy()


def rank_of(value: ir.Value) -> int | None:
    return len(value.shape) if value.shape is not None else None


def fresh_name(anchor: ir.Value, base: str) -> str:
    """An initializer name not yet taken in `anchor`'s graph (the rewriter overwrites on collision)."""
    graph = anchor.graph
    taken = graph.initializers if graph is not None else {}
    name, n = base, 0
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    return name


@dataclass(frozen=True)
class Site:
    """Where a per-channel map meets a linear node: the channel axis of a tensor of rank `rank`."""

    axis: int  # non-negative
    rank: int
    channels: int


def per_channel(c: np.ndarray, site: Site) -> np.ndarray | str:
    """`c` as a (channels,) float64 vector if multiplying by it is a per-channel scale at `site`.

    It must not broadcast the tensor to a bigger shape: rank ≤ site rank, and every dim except the
    channel axis (right-aligned) equal to 1.
    """
    if c.ndim > site.rank:
        return f"constant of shape {c.shape} would broadcast a rank-{site.rank} tensor to rank {c.ndim}"
    shape = (1,) * (site.rank - c.ndim) + c.shape
    for axis, d in enumerate(shape):
        if axis != site.axis and d != 1:
            return f"constant of shape {c.shape} varies along axis {axis}, not only channel axis {site.axis}"
    if shape[site.axis] not in (1, site.channels):
        return f"constant has {shape[site.axis]} channels, the tensor {site.channels}"
    return np.broadcast_to(c.astype(np.float64).reshape(-1), (site.channels,)).copy()


def _along(v: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """Reshape a vector to broadcast along `axis` of an `ndim`-D array."""
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)


@dataclass
class Linear:
    """A linear node with constant weights, read in float64, ready to be re-emitted."""

    node: ir.Node  # the original node (its weight input names the new initializers)
    op_type: str
    weight: np.ndarray
    bias: np.ndarray | None
    dtype: np.dtype
    attributes: dict = field(default_factory=dict)

    @property
    def group(self) -> int:
        return self.attributes["group"].as_int() if "group" in self.attributes else 1

    def flag(self, name: str) -> int:
        return self.attributes[name].as_int() if name in self.attributes else 0

    def emit(self, op, x: ir.Value) -> ir.Value:
        """The (re-weighted) node on input `x`, with freshly named initializers."""
        anchor = self.node.inputs[1]
        w = op.initializer(ir.tensor(self.weight.astype(self.dtype)), fresh_name(anchor, f"{anchor.name}_folded"))
        if self.bias is None:
            return op.op(self.op_type, x, w, **self.attributes)
        b = op.initializer(ir.tensor(self.bias.astype(self.dtype)), fresh_name(anchor, f"{anchor.name}_folded_bias"))
        if self.op_type != "MatMul":
            return op.op(self.op_type, x, w, b, **self.attributes)
        # MatMul has no bias input: a 2-D product takes one as Gemm, a batched one as a following Add.
        return op.Gemm(x, w, b) if rank_of(x) == 2 else op.Add(op.MatMul(x, w), b)


def read_linear(node: ir.Node) -> Linear | str:
    """The node's float weight and bias as float64 arrays, or why they cannot be rewritten."""
    if node.op_type not in LINEAR_OPS or node.domain not in ("", "ai.onnx"):
        return f"{node.op_type} is not a linear op this fold knows"
    if len(node.inputs) < 2:
        return f"{node.op_type} has no weight input"
    w = const_array(node.inputs[1])
    if w is None:
        return f"weight of {node.op_type} is not a constant"
    if not np.issubdtype(w.dtype, np.floating):
        return f"weight of {node.op_type} is {w.dtype}, not floating point"
    bias_value = node.inputs[2] if len(node.inputs) > 2 else None
    b = const_array(bias_value)
    if bias_value is not None and b is None:
        return f"bias of {node.op_type} is not a constant"
    if node.op_type == "MatMul" and w.ndim != 2:
        return f"MatMul weight is {w.ndim}-D, only a 2-D weight has a channel axis of its own"
    lin = Linear(node, node.op_type, w.astype(np.float64), None if b is None else b.astype(np.float64), w.dtype,
                 dict(node.attributes))
    if lin.op_type in ("Conv", "ConvTranspose") and lin.weight.shape[0] % lin.group:
        return f"{lin.op_type} weight dim 0 ({lin.weight.shape[0]}) is not divisible by group {lin.group}"
    return lin


def output_site(lin: Linear) -> Site | str:
    """The channel axis of the node's output, which a per-channel map after it must act on."""
    w = lin.weight
    if lin.op_type == "Conv":
        return Site(1, w.ndim, w.shape[0])
    if lin.op_type == "ConvTranspose":
        return Site(1, w.ndim, w.shape[1] * lin.group)
    if lin.op_type == "Gemm":
        return Site(1, 2, w.shape[0] if lin.flag("transB") else w.shape[1])
    rank = rank_of(lin.node.inputs[0])  # MatMul: (..., M, K) @ (K, N) → (..., M, N)
    if rank is None:
        return "MatMul input rank is unknown (run shape inference first)"
    out_rank = max(rank, 2) if rank > 1 else 1
    return Site(out_rank - 1, out_rank, w.shape[1])


def input_site(lin: Linear) -> Site | str:
    """The channel axis of the node's data input, which a per-channel map before it must act on."""
    w = lin.weight
    if lin.op_type == "Conv":
        return Site(1, w.ndim, w.shape[1] * lin.group)
    if lin.op_type == "Gemm":
        if lin.flag("transA"):
            return "Gemm has transA=1: the input's axis 1 is not its reduction axis"
        return Site(1, 2, w.shape[1] if lin.flag("transB") else w.shape[0])
    if lin.op_type == "MatMul":
        rank = rank_of(lin.node.inputs[0])
        if rank is None:
            return "MatMul input rank is unknown (run shape inference first)"
        return Site(rank - 1, rank, w.shape[0])
    return f"folding into the input side of {lin.op_type} is not supported"


def _gemm_bias(lin: Linear) -> np.ndarray | None:
    """Gemm's C with its `beta` applied (the folded node drops `beta`)."""
    beta = lin.attributes.pop("beta").as_float() if "beta" in lin.attributes else 1.0
    return None if lin.bias is None else beta * lin.bias


def fold_after(lin: Linear, s: np.ndarray, t: np.ndarray | None) -> Linear:
    """`s·P(x) + t` (per output channel) as one node."""
    w, op_type = lin.weight, lin.op_type
    if op_type == "Conv":
        w = w * _along(s, 0, w.ndim)
    elif op_type == "ConvTranspose":
        # Weight (C_in, C_out/group, k…): output channel g·C_out/group + j lives at [group g's rows, j].
        g = lin.group
        grouped = w.reshape(g, w.shape[0] // g, w.shape[1], *w.shape[2:])
        w = (grouped * s.reshape(g, 1, w.shape[1], *([1] * (w.ndim - 2)))).reshape(w.shape)
    elif op_type == "Gemm":
        w = w * _along(s, 0 if lin.flag("transB") else 1, 2)
    else:  # MatMul (K, N)
        w = w * s[None, :]
    bias = _gemm_bias(lin) if op_type == "Gemm" else lin.bias
    if bias is not None:
        bias = bias * s
    if t is not None:
        bias = t if bias is None else bias + t
    return Linear(lin.node, op_type, w, bias, lin.dtype, lin.attributes)


def conv_input_channels(w: np.ndarray, group: int) -> np.ndarray:
    """For a Conv weight (C_out, C_in/group, k…): the input channel each [o, j] slot reads."""
    c_out, c_in_group = w.shape[:2]
    return (np.arange(c_out)[:, None] // (c_out // group)) * c_in_group + np.arange(c_in_group)[None, :]


def has_padding(lin: Linear) -> bool:
    auto_pad = lin.attributes["auto_pad"].as_string() if "auto_pad" in lin.attributes else "NOTSET"
    if auto_pad not in ("NOTSET", "VALID"):
        return True
    return "pads" in lin.attributes and any(lin.attributes["pads"].as_ints())


def fold_before(lin: Linear, s: np.ndarray, t: np.ndarray | None) -> Linear | str:
    """`P(s·x + t)` (per input channel) as one node, or why not."""
    w, op_type = lin.weight, lin.op_type
    if op_type == "Conv":
        if t is not None and has_padding(lin):
            return "Conv pads its input: a folded shift would be wrong at the borders"
        idx = conv_input_channels(w, lin.group)
        spatial = (1,) * (w.ndim - 2)
        shift = None if t is None else (w.sum(axis=tuple(range(2, w.ndim))) * t[idx]).sum(axis=1)
        w = w * s[idx].reshape(*idx.shape, *spatial)
    elif op_type == "Gemm":
        alpha = lin.attributes["alpha"].as_float() if "alpha" in lin.attributes else 1.0
        op_b = w.T if lin.flag("transB") else w  # (K, N)
        shift = None if t is None else alpha * (t @ op_b)
        w = w * _along(s, 1 if lin.flag("transB") else 0, 2)
    else:  # MatMul (K, N)
        shift = None if t is None else t @ w
        w = w * s[:, None]
    bias = _gemm_bias(lin) if op_type == "Gemm" else lin.bias
    if shift is not None:
        bias = shift if bias is None else bias + shift
    return Linear(lin.node, op_type, w, bias, lin.dtype, lin.attributes)


def folding_pass(name: str, summary: str, rules) -> Pass:
    """`rule_pass`, then drop what the folds orphaned (the rewriter leaves old weights as initializers)."""
    inner = rule_pass(name, summary, rules)

    def run(model: ir.Model) -> int:
        count = inner.run(model)
        if count:
            RemoveUnusedNodesPass()(model)
        return count

    return Pass(name, summary, run)
