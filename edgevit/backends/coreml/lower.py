"""Optimized ONNX → a MIL program, written with coremltools' MIL Builder (`mb`).

coremltools has no ONNX frontend any more, so every ONNX op the zoo's optimized graphs use has one small
function here (`LOWER[op_type]`) that emits MIL ops. The graph must have static shapes (the CLI makes
them static); shapes come from ONNX shape inference, so layout ops (Reshape/Flatten/Squeeze/Unsqueeze)
become one `reshape` to the inferred shape and never depend on ONNX's 0/-1 conventions.

Values are either MIL vars or numpy arrays: initializers, Constant nodes and every node whose inputs are
all constant stay numpy (folded by onnx's reference evaluator), so shape arithmetic never reaches the
program. An op without a lowering raises `UnsupportedOp` naming the op type and node; nothing is built.

Rewrites applied while lowering, reported per node (see ane.py for why they help the Neural Engine):
  * `edgevit.Attention` is lowered directly (matmul → scale → [+bias] → softmax → matmul), not inlined:
    the key transpose is folded into the matmul (`transpose_y`), the scale moves from the N×N scores to the
    smaller query when that is cheaper, and with `split_attention_heads` multi-head attention is split
    into per-head ops (Apple's "chunk large intermediate tensors", ml-ane-transformers);
  * MatMul by a constant 2-D matrix becomes `linear`; a Transpose swapping the last two axes that feeds a
    MatMul becomes the matmul's transpose flag;
  * Gather of a contiguous index range becomes `slice_by_index` (gather is reported not to run on the ANE);
  * with an image input, the per-channel 1/std of the normalization is folded into the first convolutions
    (the mean goes into the image input's bias, see __init__.py).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import onnx
from onnx import numpy_helper

from ...errors import EdgevitError
from ...ir import graph as G
from ...ir.graph import node_attributes


class UnsupportedOp(EdgevitError):
    """An ONNX node the Core ML backend has no lowering for (one line, exit 2)."""


@dataclass
class Lowered:
    program: Any  # coremltools Program
    inputs: list[dict]  # name, shape (of the MIL program)
    outputs: list[dict]  # name, shape
    onnx_ops: dict[str, int]
    rewrites: list[dict] = field(default_factory=list)  # {"rewrite", "node", "detail"}


def mil_name(name: str) -> str:
    """A Core ML feature/var name: [A-Za-z_][A-Za-z0-9_]*."""
    clean = re.sub(r"[^A-Za-z0-9_]", "_", name) or "x"
    return clean if re.match(r"[A-Za-z_]", clean) else f"v_{clean}"


def op_label(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"#{index} ({node.output[0] if node.output else '?'})"


class Context:
    """State while lowering one graph: ONNX value name → MIL var or numpy constant."""

    def __init__(self, model: onnx.ModelProto, mb, options: dict):
        self.mb = mb
        self.model = model
        self.options = options
        self.values: dict[str, Any] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.swapped: dict[str, Any] = {}  # name → var X when the value is X with its last two axes swapped
        self.rewrites: list[dict] = []
        self.consumers: Counter = Counter(i for n in model.graph.node for i in n.input)
        self.node: onnx.NodeProto | None = None
        self.label = ""
        self._count = 0
        self.fold_input_scale: Callable = lambda x_name, w: w

    # --- values
    def get(self, name: str):
        if name == "":
            return None
        if name not in self.values:
            raise EdgevitError(f"ONNX value '{name}' is used before it is defined")
        return self.values[name]

    def const(self, name: str) -> np.ndarray | None:
        value = self.values.get(name) if name else None
        return value if isinstance(value, np.ndarray) else None

    def need_const(self, name: str, what: str) -> np.ndarray:
        value = self.const(name)
        if value is None:
            raise UnsupportedOp(f"cannot lower {self.node.op_type} node '{self.label}' to Core ML: "
                                f"its {what} is not a constant")
        return value

    def shape(self, name: str) -> tuple[int, ...]:
        value = self.values.get(name)
        if isinstance(value, np.ndarray):
            return value.shape
        if value is not None and hasattr(value, "shape") and all(isinstance(d, int) for d in value.shape):
            return tuple(value.shape)
        if name in self.shapes:
            return self.shapes[name]
        raise UnsupportedOp(f"cannot lower {self.node.op_type} node '{self.label}': shape of '{name}' unknown")

    def out_shape(self, i: int = 0) -> tuple[int, ...]:
        name = self.node.output[i]
        if name not in self.shapes:
            raise UnsupportedOp(f"cannot lower {self.node.op_type} node '{self.label}': static output shape unknown")
        return self.shapes[name]

    def name(self, suffix: str = "") -> str:
        """A unique MIL op name derived from the ONNX node (so reports trace back to it)."""
        self._count += 1
        return mil_name(f"{self.label}{'_' + suffix if suffix else ''}_{self._count}")

    def refuse(self, why: str):
        raise UnsupportedOp(f"cannot lower {self.node.op_type} node '{self.label}' to Core ML: {why}")

    def rewrite(self, kind: str, detail: str) -> None:
        self.rewrites.append({"rewrite": kind, "node": self.label, "detail": detail})


def _f32(x):
    return x.astype(np.float32) if isinstance(x, np.ndarray) and x.dtype.kind == "f" else x


# ---------------------------------------------------------------------------------------------- helpers
def _operand(c: Context, name: str):
    """A var, or a float32 numpy constant (mb turns numpy operands into const ops)."""
    v = c.get(name)
    return _f32(v) if isinstance(v, np.ndarray) else v


def _reshape(c: Context, x, shape, suffix="reshape"):
    if tuple(x.shape) == tuple(shape):
        return x
    return c.mb.reshape(x=x, shape=np.array(shape, np.int32), name=c.name(suffix))


def _spatial_pads(onnx_pads: list[int] | None, rank: int) -> list[int]:
    """ONNX [b1, b2, ..., e1, e2, ...] → MIL [b1, e1, b2, e2, ...]."""
    n = rank - 2
    pads = list(onnx_pads or [0] * (2 * n))
    return [int(v) for i in range(n) for v in (pads[i], pads[n + i])]


def _auto_pads(c: Context, attrs: dict, in_shape, kernel, strides, dilations) -> list[int] | None:
    mode = attrs.get("auto_pad", "NOTSET")
    if mode in ("NOTSET", "VALID"):
        return attrs.get("pads") if mode == "NOTSET" else None
    begins, ends = [], []
    for size, k, s, d in zip(in_shape[2:], kernel, strides, dilations):
        out = math.ceil(size / s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, big = total // 2, total - total // 2
        begins.append(small if mode == "SAME_UPPER" else big)
        ends.append(big if mode == "SAME_UPPER" else small)
    return begins + ends


# ------------------------------------------------------------------------------------------- lowerings
def _conv(c: Context, node, a):
    x, w = c.get(node.input[0]), c.need_const(node.input[1], "weight").astype(np.float32)
    b = c.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if len(node.input) > 2 and node.input[2] and b is None:
        c.refuse("its bias is not a constant")
    k = list(w.shape[2:])
    strides = a.get("strides", [1] * len(k))
    dil = a.get("dilations", [1] * len(k))
    pads = _auto_pads(c, a, c.shape(node.input[0]), k, strides, dil)
    w = c.fold_input_scale(node.input[0], w)
    return c.mb.conv(x=x, weight=w, bias=None if b is None else b.astype(np.float32), strides=strides,
                     pad_type="custom", pad=_spatial_pads(pads, len(w.shape)), dilations=dil,
                     groups=int(a.get("group", 1)), name=c.name())


def _conv_transpose(c: Context, node, a):
    x, w = c.get(node.input[0]), c.need_const(node.input[1], "weight").astype(np.float32)
    b = c.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if a.get("auto_pad", "NOTSET") != "NOTSET" or a.get("output_padding") and any(a["output_padding"]):
        c.refuse("auto_pad/output_padding are not supported")
    k = list(w.shape[2:])
    return c.mb.conv_transpose(x=x, weight=w, bias=None if b is None else b.astype(np.float32),
                               strides=a.get("strides", [1] * len(k)), dilations=a.get("dilations", [1] * len(k)),
                               pad_type="custom", pad=_spatial_pads(a.get("pads"), len(w.shape)),
                               groups=int(a.get("group", 1)), output_shape=np.array(c.out_shape(), np.int32),
                               name=c.name())


def _swapped_source(c: Context, name: str):
    """The var whose last-two-axes swap is `name` (a Transpose we can fold into matmul), or None."""
    return c.swapped.get(name)


def _matmul(c: Context, node, a):
    x_name, y_name = node.input
    y_const = c.const(y_name)
    x = c.get(x_name)
    if y_const is not None and y_const.ndim == 2 and not isinstance(x, np.ndarray) and 1 <= len(c.shape(x_name)) <= 3:
        c.rewrite("matmul→linear", "MatMul by a constant matrix emitted as linear (weight stored as [out, in])")
        return c.mb.linear(x=x, weight=np.ascontiguousarray(y_const.T.astype(np.float32)), name=c.name())
    return _matmul_vars(c, x_name, y_name)


def _matmul_vars(c: Context, x_name: str, y_name: str, name: str | None = None):
    tx = ty = False
    x, y = _operand(c, x_name), _operand(c, y_name)
    if (src := _swapped_source(c, x_name)) is not None:
        x, tx = src, True
    if (src := _swapped_source(c, y_name)) is not None:
        y, ty = src, True
    if tx or ty:
        c.rewrite("transpose→matmul flag", "a Transpose of the last two axes folded into matmul "
                  f"({'transpose_x' if tx else ''}{' ' if tx and ty else ''}{'transpose_y' if ty else ''})")
    return c.mb.matmul(x=x, y=y, transpose_x=tx, transpose_y=ty, name=name or c.name())


def _gemm(c: Context, node, a):
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    w = c.const(node.input[1])
    bias = c.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if a.get("transA", 0) or w is None or (len(node.input) > 2 and node.input[2] and bias is None):
        c.refuse("only Gemm(x, constant W, constant C) without transA is supported")
    w = (w if a.get("transB", 0) else w.T).astype(np.float32) * alpha
    out_features = w.shape[0]
    if bias is not None:
        bias = np.broadcast_to(bias.astype(np.float32) * beta, (out_features,)) if bias.size in (1, out_features) \
            else c.refuse(f"bias of shape {bias.shape} is not per output feature")
    return c.mb.linear(x=c.get(node.input[0]), weight=np.ascontiguousarray(w),
                       bias=None if bias is None else np.ascontiguousarray(bias), name=c.name())


def _binary(mil_op: str):
    def lower(c: Context, node, a):
        x, y = _operand(c, node.input[0]), _operand(c, node.input[1])
        if mil_op == "pow" and isinstance(y, np.ndarray) and y.size == 1 and float(y.reshape(())) == 2.0:
            c.rewrite("pow2→mul", "x**2 emitted as x*x")
            return c.mb.mul(x=x, y=x, name=c.name())
        if mil_op == "pow" and isinstance(y, np.ndarray) and y.size == 1 and float(y.reshape(())) == 0.5:
            return c.mb.sqrt(x=x, name=c.name())
        if isinstance(x, np.ndarray) and isinstance(y, np.ndarray):
            c.refuse("both operands constant (should have been folded)")
        return getattr(c.mb, mil_op)(x=x, y=y, name=c.name())
    return lower


def _unary(mil_op: str, **kw):
    def lower(c: Context, node, a):
        return getattr(c.mb, mil_op)(x=c.get(node.input[0]), name=c.name(), **kw)
    return lower


def _gelu(c: Context, node, a):
    mode = {"none": "EXACT", "tanh": "TANH_APPROXIMATION"}.get(a.get("approximate", "none"))
    return c.mb.gelu(x=c.get(node.input[0]), mode=mode, name=c.name())


def _hard_sigmoid(c: Context, node, a):
    return c.mb.sigmoid_hard(x=c.get(node.input[0]), alpha=float(a.get("alpha", 0.2)), beta=float(a.get("beta", 0.5)),
                             name=c.name())


def _hard_swish(c: Context, node, a):
    x = c.get(node.input[0])
    gate = c.mb.sigmoid_hard(x=x, alpha=1.0 / 6, beta=0.5, name=c.name("gate"))
    return c.mb.mul(x=x, y=gate, name=c.name())


def _leaky_relu(c: Context, node, a):
    return c.mb.leaky_relu(x=c.get(node.input[0]), alpha=float(a.get("alpha", 0.01)), name=c.name())


def _neg(c: Context, node, a):
    return c.mb.mul(x=c.get(node.input[0]), y=np.float32(-1.0), name=c.name())


def _reciprocal(c: Context, node, a):  # mb.inverse adds an epsilon; real_div is exact
    return c.mb.real_div(x=np.float32(1.0), y=c.get(node.input[0]), name=c.name())


def _clip(c: Context, node, a):
    lo = c.const(node.input[1]) if len(node.input) > 1 and node.input[1] else a.get("min")
    hi = c.const(node.input[2]) if len(node.input) > 2 and node.input[2] else a.get("max")
    lo = -np.inf if lo is None else float(np.asarray(lo).reshape(()))
    hi = np.inf if hi is None else float(np.asarray(hi).reshape(()))
    x = c.get(node.input[0])
    if lo == 0.0 and hi == np.inf:
        return c.mb.relu(x=x, name=c.name())
    if lo == 0.0 and hi == 6.0:
        return c.mb.relu6(x=x, name=c.name())
    lo, hi = max(lo, -65504.0), min(hi, 65504.0)  # finite bounds (fp16-representable)
    return c.mb.clip(x=x, alpha=np.float32(lo), beta=np.float32(hi), name=c.name())


def _softmax(c: Context, node, a):
    return c.mb.softmax(x=c.get(node.input[0]), axis=int(a.get("axis", -1)), name=c.name())


def _layer_norm(c: Context, node, a):
    x_name = node.input[0]
    rank = len(c.shape(x_name))
    axis = int(a.get("axis", -1)) % rank
    norm_shape = c.shape(x_name)[axis:]
    gamma = c.const(node.input[1]) if len(node.input) > 1 else None
    beta = c.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if gamma is None or (len(node.input) > 2 and node.input[2] and beta is None):
        c.refuse("scale/bias are not constants")
    if any(o for o in node.output[1:]) and any(c.consumers[o] for o in node.output[1:] if o):
        c.refuse("its Mean/InvStdDev outputs are used")
    gamma = np.ascontiguousarray(np.broadcast_to(gamma.astype(np.float32), norm_shape))
    beta = None if beta is None else np.ascontiguousarray(np.broadcast_to(beta.astype(np.float32), norm_shape))
    return c.mb.layer_norm(x=c.get(x_name), axes=list(range(axis, rank)), gamma=gamma, beta=beta,
                           epsilon=np.float32(a.get("epsilon", 1e-5)), name=c.name())


def _instance_norm(c: Context, node, a):
    scale = c.need_const(node.input[1], "scale").astype(np.float32)
    bias = c.need_const(node.input[2], "bias").astype(np.float32)
    return c.mb.instance_norm(x=c.get(node.input[0]), gamma=scale, beta=bias,
                              epsilon=np.float32(a.get("epsilon", 1e-5)), name=c.name())


def _batch_norm(c: Context, node, a):
    scale, bias, mean, var = (c.need_const(n, w).astype(np.float32) for n, w in
                              zip(node.input[1:5], ("scale", "bias", "mean", "var")))
    return c.mb.batch_norm(x=c.get(node.input[0]), mean=mean, variance=var, gamma=scale, beta=bias,
                           epsilon=np.float32(a.get("epsilon", 1e-5)), name=c.name())


def _reduce_axes(c: Context, node, a) -> list[int] | None:
    if "axes" in a:
        return [int(v) for v in a["axes"]]
    if len(node.input) > 1 and node.input[1]:
        return [int(v) for v in c.need_const(node.input[1], "axes").reshape(-1)]
    return None


def _reduce(mil_op: str):
    def lower(c: Context, node, a):
        axes = _reduce_axes(c, node, a)
        rank = len(c.shape(node.input[0]))
        if axes is None or not axes:
            if a.get("noop_with_empty_axes", 0):
                return c.get(node.input[0])
            axes = list(range(rank))
        return getattr(c.mb, mil_op)(x=c.get(node.input[0]), axes=[v % rank for v in axes],
                                     keep_dims=bool(a.get("keepdims", 1)), name=c.name())
    return lower


def _global_pool(mil_op: str):
    def lower(c: Context, node, a):
        rank = len(c.shape(node.input[0]))
        return getattr(c.mb, mil_op)(x=c.get(node.input[0]), axes=list(range(2, rank)), keep_dims=True, name=c.name())
    return lower


def _pool(mil_op: str):
    def lower(c: Context, node, a):
        k = [int(v) for v in a["kernel_shape"]]
        strides = a.get("strides", [1] * len(k))
        if any(d != 1 for d in a.get("dilations", [1] * len(k))):
            c.refuse("dilated pooling")
        pads = _auto_pads(c, a, c.shape(node.input[0]), k, strides, [1] * len(k))
        kw = {"exclude_padding_from_average": not a.get("count_include_pad", 0)} if mil_op == "avg_pool" else {}
        if len(node.output) > 1 and node.output[1]:
            c.refuse("MaxPool indices output")
        return getattr(c.mb, mil_op)(x=c.get(node.input[0]), kernel_sizes=k, strides=strides, pad_type="custom",
                                     pad=_spatial_pads(pads, len(k) + 2), ceil_mode=bool(a.get("ceil_mode", 0)),
                                     name=c.name(), **kw)
    return lower


def _reshape_like(c: Context, node, a):
    return _reshape(c, c.get(node.input[0]), c.out_shape(), "")


def _transpose(c: Context, node, a):
    rank = len(c.shape(node.input[0]))
    perm = [int(p) for p in a.get("perm", list(range(rank))[::-1])]
    x = c.get(node.input[0])
    out = c.mb.transpose(x=x, perm=perm, name=c.name())
    if rank >= 2 and perm == [*range(rank - 2), rank - 1, rank - 2]:
        c.swapped[node.output[0]] = x
    return out


def _concat(c: Context, node, a):
    values = [_operand(c, n) for n in node.input]
    return c.mb.concat(values=values, axis=int(a["axis"]), name=c.name())


def _split(c: Context, node, a):
    x_name = node.input[0]
    shape = c.shape(x_name)
    axis = int(a.get("axis", 0)) % len(shape)
    if len(node.input) > 1 and node.input[1]:
        sizes = [int(v) for v in c.need_const(node.input[1], "split sizes")]
    elif "split" in a:
        sizes = [int(v) for v in a["split"]]
    else:
        n = len(node.output)
        chunk = math.ceil(shape[axis] / n)
        sizes = [chunk] * (n - 1) + [shape[axis] - chunk * (n - 1)]
    outs = c.mb.split(x=c.get(x_name), split_sizes=np.array(sizes, np.int32), axis=axis, name=c.name())
    return list(outs) if isinstance(outs, (list, tuple)) else [outs]


def _slice(c: Context, node, a):
    x_name = node.input[0]
    shape = c.shape(x_name)
    starts = c.need_const(node.input[1], "starts").reshape(-1)
    ends = c.need_const(node.input[2], "ends").reshape(-1)
    axes = c.need_const(node.input[3], "axes").reshape(-1) if len(node.input) > 3 and node.input[3] \
        else np.arange(len(starts))
    steps = c.need_const(node.input[4], "steps").reshape(-1) if len(node.input) > 4 and node.input[4] \
        else np.ones(len(starts), np.int64)
    begin, end, stride = [0] * len(shape), list(shape), [1] * len(shape)
    end_mask = [False] * len(shape)
    for s, e, ax, st in zip(starts, ends, axes, steps):
        ax = int(ax) % len(shape)
        idx = range(shape[ax])[slice(int(s), int(e), int(st))]
        if len(idx) == 0:
            c.refuse("empty slice")
        begin[ax], stride[ax] = idx[0], int(st)
        end[ax] = idx[-1] + int(st)
        end_mask[ax] = end[ax] < 0
    return c.mb.slice_by_index(x=c.get(x_name), begin=np.array(begin, np.int32), end=np.array(end, np.int32),
                               stride=np.array(stride, np.int32), end_mask=end_mask, name=c.name())


def _gather(c: Context, node, a):
    x_name = node.input[0]
    shape = c.shape(x_name)
    axis = int(a.get("axis", 0)) % len(shape)
    idx = c.need_const(node.input[1], "indices").astype(np.int64)
    idx = np.where(idx < 0, idx + shape[axis], idx)
    flat = idx.reshape(-1)
    x = c.get(x_name)
    if flat.size and np.all(np.diff(flat) == 1):  # contiguous: a slice, which the ANE runs (gather: reported not)
        begin, end = [0] * len(shape), list(shape)
        begin[axis], end[axis] = int(flat[0]), int(flat[-1]) + 1
        c.rewrite("gather→slice", f"Gather of the contiguous indices {int(flat[0])}..{int(flat[-1])} emitted as slice_by_index")
        sliced = c.mb.slice_by_index(x=x, begin=np.array(begin, np.int32), end=np.array(end, np.int32),
                                     name=c.name("slice"))
        return _reshape(c, sliced, c.out_shape())
    return c.mb.gather(x=x, indices=idx.astype(np.int32), axis=axis, name=c.name())


def _expand(c: Context, node, a):
    x_name = node.input[0]
    out = c.out_shape()
    in_shape = (1,) * (len(out) - len(c.shape(x_name))) + tuple(c.shape(x_name))
    x = _reshape(c, c.get(x_name), in_shape)
    reps = [o // i for o, i in zip(out, in_shape)]
    if all(r == 1 for r in reps):
        return x
    return c.mb.tile(x=x, reps=np.array(reps, np.int32), name=c.name())


def _pad(c: Context, node, a):
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}.get(a.get("mode", "constant"))
    if mode is None:
        c.refuse(f"pad mode {a.get('mode')}")
    pads = c.need_const(node.input[1], "pads").reshape(-1) if len(node.input) > 1 else np.array(a["pads"])
    if len(node.input) > 3 and node.input[3]:
        c.refuse("Pad with axes")
    value = float(c.const(node.input[2]).reshape(())) if len(node.input) > 2 and node.input[2] else 0.0
    rank = len(pads) // 2
    mil_pads = [int(v) for i in range(rank) for v in (pads[i], pads[rank + i])]
    return c.mb.pad(x=c.get(node.input[0]), pad=np.array(mil_pads, np.int32), mode=mode,
                    constant_val=np.float32(value), name=c.name())


def _resize(c: Context, node, a):
    mode = a.get("mode", "nearest")
    in_shape, out = c.shape(node.input[0]), c.out_shape()
    if len(in_shape) != 4 or in_shape[:2] != out[:2]:
        c.refuse("only spatial resizing of NCHW tensors is supported")
    scales = c.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if scales is not None and scales.size == 4 and any(abs(i * s - o) > 1e-6 for i, s, o in
                                                      zip(in_shape[2:], scales[2:], out[2:])):
        c.refuse("scales that do not give whole output sizes")
    x = c.get(node.input[0])
    coord = a.get("coordinate_transformation_mode", "half_pixel")
    if mode == "nearest":
        if any(o % i for i, o in zip(in_shape[2:], out[2:])):
            c.refuse("nearest resize by a non-integer factor")
        if coord not in ("asymmetric", "half_pixel", "pytorch_half_pixel") or \
                a.get("nearest_mode", "round_prefer_floor") not in ("floor", "round_prefer_floor", "round_prefer_ceil"):
            c.refuse(f"nearest resize with {coord}/{a.get('nearest_mode')}")
        return c.mb.upsample_nearest_neighbor(x=x, scale_factor_height=out[2] // in_shape[2],
                                              scale_factor_width=out[3] // in_shape[3], name=c.name())
    if mode == "linear":
        sampling = {"half_pixel": "UNALIGN_CORNERS", "pytorch_half_pixel": "UNALIGN_CORNERS",
                    "align_corners": "STRICT_ALIGN_CORNERS"}.get(coord)
        if coord == "pytorch_half_pixel" and min(out[2:]) == 1:
            sampling = None
        if sampling is None or a.get("antialias", 0):
            c.refuse(f"linear resize with coordinate_transformation_mode={coord}")
        return c.mb.resize_bilinear(x=x, target_size_height=out[2], target_size_width=out[3],
                                    sampling_mode=sampling, name=c.name())
    c.refuse(f"resize mode {mode}")


def _identity(c: Context, node, a):
    return c.get(node.input[0])


def _cast(c: Context, node, a):
    to = a.get("to")
    x_name = node.input[0]
    src = c.values.get(x_name)
    if to in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE) and \
            getattr(src, "dtype", None) is not None:
        return src  # float → float: the program's precision decides
    c.refuse(f"cast to {onnx.TensorProto.DataType.Name(to)}")


def _attention(c: Context, node, a):
    """edgevit.Attention(Q, Kᵀ, V[, bias]) → matmul/softmax/matmul (see the module docstring)."""
    q_name, kt_name, v_name = node.input[:3]
    bias = node.input[3] if len(node.input) > 3 and node.input[3] else None
    scale = float(a.get("scale", 1.0))
    channels_first = bool(a.get("channels_first", 0))
    q_shape, kt_shape = c.shape(q_name), c.shape(kt_name)
    n_q, d, n_k = q_shape[-2], q_shape[-1], kt_shape[-1]
    heads = q_shape[1] if len(q_shape) == 4 else 1
    split = c.options.get("split_attention_heads", True) and len(q_shape) == 4 and heads > 1 and \
        len(c.shape(kt_name)) == 4 and len(c.shape(v_name)) == 4 and c.shape(kt_name)[1] == heads and \
        c.shape(v_name)[1] == heads
    bias_value = c.get(bias) if bias else None
    if isinstance(bias_value, np.ndarray):
        bias_value = bias_value.astype(np.float32)
    scale_query = scale != 1.0 and n_k > d  # scaling Q (N_q·d) is cheaper than scaling the scores (N_q·N_k)
    if scale_query:
        c.rewrite("attention scale→query", f"scale {scale:.4g} applied to the query ({n_q}×{d}) rather than the "
                  f"scores ({n_q}×{n_k})")
    q = c.get(q_name)
    if scale_query:
        q = c.mb.mul(x=q, y=np.float32(scale), name=c.name("q_scaled"))
    k_src = _swapped_source(c, kt_name)
    k = k_src if k_src is not None else c.get(kt_name)
    if k_src is not None:
        c.rewrite("transpose→matmul flag", "the key transpose folded into the Q·Kᵀ matmul (transpose_y)")
    v = c.get(v_name)

    def one(qh, kh, vh, bh, tag):
        scores = c.mb.matmul(x=qh, y=kh, transpose_y=k_src is not None, name=c.name(f"{tag}scores"))
        if scale != 1.0 and not scale_query:
            scores = c.mb.mul(x=scores, y=np.float32(scale), name=c.name(f"{tag}scaled"))
        if bh is not None:
            scores = c.mb.add(x=scores, y=bh, name=c.name(f"{tag}biased"))
        probs = c.mb.softmax(x=scores, axis=-1, name=c.name(f"{tag}probs"))
        if channels_first:
            return c.mb.matmul(x=vh, y=probs, transpose_y=True, name=c.name(f"{tag}out"))
        return c.mb.matmul(x=probs, y=vh, name=c.name(f"{tag}out"))

    if not split:
        return one(q, k, v, bias_value, "")
    c.rewrite("attention head split", f"{heads}-head attention split into {heads} single-head chains "
              "(ml-ane-transformers, principle 2: chunk large intermediate tensors)")
    qs = c.mb.split(x=q, num_splits=heads, axis=1, name=c.name("q_heads"))
    ks = c.mb.split(x=k, num_splits=heads, axis=1, name=c.name("k_heads"))
    vs = c.mb.split(x=v, num_splits=heads, axis=1, name=c.name("v_heads"))
    bias_heads = [bias_value] * heads
    if bias_value is not None:
        b4 = (1,) * (4 - len(bias_value.shape)) + tuple(bias_value.shape)  # broadcast view at rank 4
        if b4[1] == heads:
            if isinstance(bias_value, np.ndarray):
                full = bias_value.reshape(b4)
                bias_heads = [np.ascontiguousarray(full[:, h:h + 1]) for h in range(heads)]
            else:
                full = _reshape(c, bias_value, b4)
                bias_heads = list(c.mb.split(x=full, num_splits=heads, axis=1, name=c.name("bias_heads")))
    outs = [one(qs[h], ks[h], vs[h], bias_heads[h], f"h{h}_") for h in range(heads)]
    return c.mb.concat(values=outs, axis=1, name=c.name())


LOWER: dict[str, Callable] = {
    "Conv": _conv, "ConvTranspose": _conv_transpose, "MatMul": _matmul, "Gemm": _gemm,
    "Add": _binary("add"), "Sub": _binary("sub"), "Mul": _binary("mul"), "Div": _binary("real_div"),
    "Pow": _binary("pow"), "Max": _binary("maximum"), "Min": _binary("minimum"),
    "Relu": _unary("relu"), "Sigmoid": _unary("sigmoid"), "Tanh": _unary("tanh"), "Erf": _unary("erf"),
    "Sqrt": _unary("sqrt"), "Exp": _unary("exp"), "Abs": _unary("abs"), "Softplus": _unary("softplus"),
    "Neg": _neg, "Reciprocal": _reciprocal, "Gelu": _gelu, "edgevit.Gelu": _gelu,
    "HardSigmoid": _hard_sigmoid, "HardSwish": _hard_swish, "LeakyRelu": _leaky_relu, "Clip": _clip,
    "Softmax": _softmax, "LayerNormalization": _layer_norm, "InstanceNormalization": _instance_norm,
    "BatchNormalization": _batch_norm,
    "ReduceMean": _reduce("reduce_mean"), "ReduceSum": _reduce("reduce_sum"), "ReduceMax": _reduce("reduce_max"),
    "ReduceL2": _reduce("reduce_l2_norm"),
    "GlobalAveragePool": _global_pool("reduce_mean"), "GlobalMaxPool": _global_pool("reduce_max"),
    "AveragePool": _pool("avg_pool"), "MaxPool": _pool("max_pool"),
    "Reshape": _reshape_like, "Flatten": _reshape_like, "Squeeze": _reshape_like, "Unsqueeze": _reshape_like,
    "Transpose": _transpose, "Concat": _concat, "Split": _split, "Slice": _slice, "Gather": _gather,
    "Expand": _expand, "Pad": _pad, "Resize": _resize, "Identity": _identity, "Dropout": _identity,
    "Cast": _cast, "edgevit.Attention": _attention,
}


def op_key(node: onnx.NodeProto) -> str:
    return f"{node.domain}.{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type


# ------------------------------------------------------------------------------------------ constants
def _fold(node: onnx.NodeProto, inputs: list[np.ndarray | None], model: onnx.ModelProto) -> list[np.ndarray]:
    """Run one node whose inputs are all constant with onnx's reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    names = [f"i{k}" if n else "" for k, n in enumerate(node.input)]
    outs = [f"o{k}" for k in range(len(node.output))]
    single = onnx.helper.make_node(node.op_type, names, outs, domain=node.domain)
    single.attribute.extend(node.attribute)
    inits = [numpy_helper.from_array(v, n) for n, v in zip(names, inputs) if n]
    graph = onnx.helper.make_graph([single], "fold", [], [onnx.helper.make_tensor_value_info(o, 0, None) for o in outs],
                                   inits)
    m = onnx.helper.make_model(graph, opset_imports=list(model.opset_import), functions=list(model.functions))
    got = ReferenceEvaluator(m).run(None, {})
    return [np.asarray(v) for v in got]


def _constant_node(node: onnx.NodeProto) -> np.ndarray:
    a = node.attribute[0]
    v = onnx.helper.get_attribute_value(a)
    if a.name == "value":
        return numpy_helper.to_array(v)
    kinds = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64, "value_ints": np.int64}
    if a.name in kinds:
        return np.array(v, kinds[a.name])
    raise UnsupportedOp(f"cannot lower Constant node '{node.name}': attribute {a.name}")


# ---------------------------------------------------------------------------------------------- driver
def unsupported(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(op type, node label) of every node without a lowering; nodes computing constants are folded instead."""
    const = {t.name for t in model.graph.initializer}
    bad = []
    for i, n in enumerate(model.graph.node):
        if (n.op_type == "Constant" and n.domain in ("", "ai.onnx")) or \
                (n.input and all(name in const for name in n.input if name)):
            const.update(n.output)
        elif op_key(n) not in LOWER:
            bad.append((op_key(n), op_label(n, i)))
    return bad


def lower(model: onnx.ModelProto, opset, options: dict | None = None,
          input_scale: dict[str, np.ndarray] | None = None) -> Lowered:
    """Build the MIL program for `model` (static shapes) at the coremltools `opset` (a ct.target).

    `input_scale` maps a graph input to a per-channel factor (image normalization's 1/std) applied to it
    before the model: folded into the weights of Conv consumers when every consumer is a Conv, else one mul.
    """
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import Function, Program

    options = dict(options or {})
    options["_input_scale"] = dict(input_scale or {})
    inferred = G.infer_shapes(model)
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        if vi.type.tensor_type.HasField("shape") and all(isinstance(d, int) and d > 0 for d in dims):
            shapes[vi.name] = tuple(dims)
    inits = G.initializer_arrays(model)
    graph_inputs = [vi for vi in model.graph.input if vi.name not in inits]
    specs = {}
    for vi in graph_inputs:
        shape = G.value_shape(vi)
        if not all(isinstance(d, int) and d > 0 for d in shape):
            raise EdgevitError(f"input '{vi.name}' has a dynamic shape {shape}; give --input-size/--batch")
        if G.value_dtype(vi) != np.float32:
            raise EdgevitError(f"input '{vi.name}' is {G.value_dtype(vi).name}; the Core ML backend takes float32 inputs")
        specs[vi.name] = shape
    bad = unsupported(model)
    if bad:
        op, where = bad[0]
        more = f" (and {len(bad) - 1} more node(s))" if len(bad) > 1 else ""
        raise UnsupportedOp(f"cannot lower op {op} (node '{where}') to Core ML: no MIL lowering for it{more}; "
                            "nothing was written")

    ctx = Context(model, mb, options)
    ctx.shapes = shapes
    ctx.values.update({k: v for k, v in inits.items()})
    scale_targets = _plan_input_scale(model, input_scale or {}, inits)
    input_names = {vi.name: mil_name(vi.name) for vi in graph_inputs}

    placeholders = {input_names[n]: mb.placeholder(shape=tuple(s)) for n, s in specs.items()}
    with Function(placeholders, opset) as func:
        for name, mname in input_names.items():
            var = func.inputs[mname]
            if name in (input_scale or {}) and name not in scale_targets:
                factor = input_scale[name].astype(np.float32).reshape(1, -1, *([1] * (len(specs[name]) - 2)))
                var = mb.mul(x=var, y=factor, name=mil_name(f"{name}_normalize"))
                ctx.rewrite("normalization", f"1/std applied to input '{name}' by one mul (its consumers are not "
                            "all convolutions)")
            ctx.values[name] = var
        ctx.fold_input_scale = lambda x_name, w: _fold_scale(ctx, x_name, w, scale_targets)
        for i, node in enumerate(model.graph.node):
            ctx.node, ctx.label = node, op_label(node, i)
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                ctx.values[node.output[0]] = _constant_node(node)
                continue
            ins = [ctx.values.get(n) if n else None for n in node.input]
            if node.input and all(isinstance(v, np.ndarray) for n, v in zip(node.input, ins) if n):
                for name, value in zip(node.output, _fold(node, ins, model)):
                    ctx.values[name] = value
                continue
            result = LOWER[op_key(node)](ctx, node, node_attributes(node))
            results = result if isinstance(result, list) else [result]
            for name, value in zip(node.output, results):
                if not name:
                    continue
                want = shapes.get(name)
                if want is not None and tuple(value.shape) != want:
                    raise RuntimeError(f"lowering {op_key(node)} node '{ctx.label}' gave shape {tuple(value.shape)}, "
                                       f"ONNX says {want}")
                ctx.values[name] = value
        outputs = []
        for vi in model.graph.output:
            var = ctx.values.get(vi.name)
            if isinstance(var, np.ndarray) or var is None:
                raise EdgevitError(f"graph output '{vi.name}' is a constant; nothing to compile")
            if var.name in [v.name for v in func.inputs.values()] or var.name in [o.name for o in outputs]:
                var = mb.identity(x=var, name=mil_name(vi.name))
            outputs.append(var)
        func.set_outputs(outputs)
    # Graph outputs keep their ONNX names (sanitized): rename the producing vars.
    out_names = []
    for var, vi in zip(outputs, model.graph.output):
        var.name = mil_name(vi.name)
        if var.op is not None:
            var.op.name = var.name
        out_names.append({"name": var.name, "shape": list(var.shape)})
    prog = Program()
    prog.add_function("main", func)
    return Lowered(prog, [{"name": input_names[n], "shape": list(s)} for n, s in specs.items()], out_names,
                   dict(Counter(op_key(n) for n in model.graph.node)), ctx.rewrites)


def _plan_input_scale(model, input_scale: dict, inits) -> set[str]:
    """Inputs whose every consumer is a Conv with a constant weight (the scale can go into the weights)."""
    foldable = set()
    for name in input_scale:
        users = [n for n in model.graph.node if name in n.input]
        if users and all(n.op_type == "Conv" and n.input[0] == name and n.input[1] in inits for n in users):
            foldable.add(name)
    return foldable


def _fold_scale(ctx: Context, x_name: str, w: np.ndarray, targets: set[str]) -> np.ndarray:
    if x_name not in targets:
        return w
    factor = ctx.options["_input_scale"][x_name].astype(np.float32)
    groups = int(node_attributes(ctx.node).get("group", 1))
    # weight[o, j] reads input channel g·(C/groups) + j, with g = o // (O/groups) its group
    out_per_group, in_per_group = w.shape[0] // groups, w.shape[1]
    channel = (np.arange(w.shape[0])[:, None] // out_per_group) * in_per_group + np.arange(in_per_group)[None, :]
    scaled = w * factor[channel].reshape(*channel.shape, *([1] * (w.ndim - 2)))
    ctx.rewrite("normalization", f"1/std of input '{x_name}' folded into the weights of Conv '{ctx.label}' "
                "(exact: zero padding is zero in both spaces)")
    return scaled.astype(np.float32)
