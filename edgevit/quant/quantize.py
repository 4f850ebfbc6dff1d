"""Post-training quantization: float graph + calibration ranges → QuantizedModel (integer_ops nodes).

Mapping (float ops → int8 ops), with the fusions the integer kernels make:
  Conv [+bias]                        → conv2d   (weights per output channel, bias int32)
  MatMul(x, W) [+ Add(const bias)]     → linear   (W per output column); Gemm(transA=0, α=β=1) too
  MatMul(a, b) [· or / const scalar]   → matmul   (the scalar — attention's 1/√d — goes into the
                                                   requantization factor; scores are never int8 twice)
  Add/Sub/Mul of two tensors           → add/mul  (a constant operand becomes an int8 constant)
  unary ops, and Add/Sub/Mul/Div/Pow with a constant scalar → lut (256-entry int8 table)
  Softmax (last axis)                  → softmax (output scale 1/256, zero point −128)
  LayerNormalization (last axis)       → layernorm (γ in per-channel multipliers, β in output LSBs)
  AveragePool/GlobalAveragePool/ReduceMean → avgpool / reduce_mean;  MaxPool → maxpool
  Reshape/Flatten/(Un)Squeeze/Identity → reshape; Transpose, Gather, Slice, Split → index ops
  Concat                               → rescale of inputs whose parameters differ, then concat
Output parameters: calibrated for compute ops; inherited from the input for index ops and max pool
(so they are free: no requantization); the union of the inputs' ranges for Concat.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import EdgevitError
from . import integer_ops as K
from .calibrate import Observer
from .graph import FloatGraph, Node
from .reference import QNode, QuantizedModel
from .scheme import QMAX, QMIN, QParams, choose_qparams, quantize_multiplier, quantize_weight

_ACC_LIMIT = 2 ** 31 // (255 * 255)  # longest reduction whose worst case fits an int32 accumulator
_RESHAPES = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"}
_erf = np.vectorize(math.erf)
_UNARY = {
    "Relu": lambda x, a: np.maximum(x, 0.0),
    "Sigmoid": lambda x, a: 1.0 / (1.0 + np.exp(-x)),
    "HardSigmoid": lambda x, a: np.clip(a.get("alpha", 0.2) * x + a.get("beta", 0.5), 0.0, 1.0),
    "HardSwish": lambda x, a: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "Gelu": lambda x, a: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "Tanh": lambda x, a: np.tanh(x),
    "Erf": lambda x, a: _erf(x),
    "LeakyRelu": lambda x, a: np.where(x >= 0, x, a.get("alpha", 0.01) * x),
    "Neg": lambda x, a: -x,
}
_SCALAR_BINARY = {  # (x, c, x_is_first) → f
    "Add": lambda x, c, first: x + c,
    "Sub": lambda x, c, first: x - c if first else c - x,
    "Mul": lambda x, c, first: x * c,
    "Div": lambda x, c, first: x / c if first else c / np.where(x == 0, np.finfo(np.float64).tiny, x),
    "Pow": lambda x, c, first: np.power(x, c) if first else np.power(c, x),
}


class _Quantizer:
    def __init__(self, graph: FloatGraph, observers: dict[str, Observer], shapes: dict, method: str):
        self.g, self.obs, self.method = graph, observers, method
        self.shapes = {**shapes, **{k: list(np.shape(v)) for k, v in graph.consts.items()}}
        self.consumers = graph.consumers()
        self.qp: dict[str, QParams] = {}
        self.consts: dict[str, np.ndarray] = {}  # int8 constant operands
        self.qdq: dict[str, tuple] = {}  # float constant → (integer array, scale, zero point, axis) for QDQ
        self.nodes: list[QNode] = []
        self.fused: set[int] = set()

    # -- helpers -------------------------------------------------------------------------------------
    def calibrated(self, name: str) -> QParams:
        if name not in self.qp:
            self.qp[name] = choose_qparams(*self.obs[name].range(self.method))
        return self.qp[name]

    def act(self, name: str, node: Node) -> QParams:
        if name in self.g.consts:
            raise EdgevitError(f"cannot quantize {node.op} node '{node.name}': input {name} is a constant "
                               "where the int8 runtime needs an activation (simplify the graph first)")
        return self.qp[name] if name in self.qp else self.calibrated(name)

    def const(self, name: str) -> np.ndarray | None:
        return None if not name else self.g.consts.get(name)

    def scalar(self, name: str) -> float | None:
        c = self.const(name)
        return float(np.asarray(c).reshape(-1)[0]) if c is not None and np.size(c) == 1 else None

    def follower(self, tensor: str, ops: tuple[str, ...]) -> Node | None:
        """The only consumer of `tensor` if its op is in `ops` and the tensor is not a graph output."""
        users = self.consumers.get(tensor, [])
        if len(users) == 1 and users[0].op in ops and tensor not in self.g.outputs:
            return users[0]
        return None

    def const_operand(self, name: str) -> QParams:
        """A constant operand of add/mul/concat: int8 with its own per-tensor parameters."""
        if name not in self.consts:
            value = np.asarray(self.g.consts[name], np.float64)
            qp = choose_qparams(value.min(), value.max())
            self.consts[name], self.qp[name] = qp.quantize(value), qp
            self.qdq[name] = (self.consts[name], qp.scale, qp.zero_point, None)
        return self.qp[name]

    def emit(self, op, node: Node, inputs, outputs, attrs=None, params=None) -> None:
        self.nodes.append(QNode(op, node.name, list(inputs), list(outputs), attrs or {}, params or {}))

    def fail(self, node: Node, why: str):
        raise EdgevitError(f"cannot quantize {node.op} node '{node.name}': {why}")

    def check_reduction(self, node: Node, k: int) -> None:
        if k >= _ACC_LIMIT:
            self.fail(node, f"reduction over {k} elements could overflow the int32 accumulator")

    # -- ops -----------------------------------------------------------------------------------------
    def conv(self, n: Node) -> None:
        x, w = n.inputs[0], self.const(n.inputs[1])
        if w is None or w.ndim != 4 or n.attrs.get("auto_pad", "NOTSET") != "NOTSET":
            self.fail(n, "only 2-D convolutions with constant weights and explicit pads")
        b = self.const(n.inputs[2]) if len(n.inputs) > 2 else None
        sx, so = self.act(x, n), self.calibrated(n.outputs[0])
        self.check_reduction(n, int(np.prod(w.shape[1:])))
        wq, ws = quantize_weight(w, 0)
        bq = self._bias(n, b, sx.scale * ws, w.shape[0])
        mult, shift = quantize_multiplier(sx.scale * ws / so.scale)
        a = n.attrs
        attrs = {"x_zp": sx.zero_point, "out_zp": so.zero_point, "strides": a.get("strides", [1, 1]),
                 "pads": a.get("pads", [0, 0, 0, 0]), "dilations": a.get("dilations", [1, 1]),
                 "group": a.get("group", 1)}
        self.qdq[n.inputs[1]] = (wq, ws, 0, 0)
        self.emit("conv2d", n, [x], n.outputs, attrs, {"weight": wq, "bias": bq, "mult": mult, "shift": shift})

    def _bias(self, n: Node, b, scale, channels: int, name: str | None = None) -> np.ndarray:
        if b is None:
            return np.zeros(channels, np.int32)
        bq = np.round(np.asarray(b, np.float64).reshape(-1) / scale)
        if np.abs(bq).max(initial=0) >= 2 ** 31:
            self.fail(n, "bias does not fit int32 at scale s_x·s_w")
        bq = bq.astype(np.int32)
        self.qdq[name or n.inputs[2]] = (bq, scale, 0, 0)
        return bq

    def linear(self, n: Node, w: np.ndarray, axis: int, bias_name: str | None, out: str) -> None:
        x = n.inputs[0]
        sx, so = self.act(x, n), self.calibrated(out)
        wq, ws = quantize_weight(w, axis)
        weight = wq if axis == 1 else np.ascontiguousarray(wq.T)  # (K, N) for the kernel
        self.check_reduction(n, weight.shape[0])
        b = self.const(bias_name) if bias_name else None
        bq = self._bias(n, b, sx.scale * ws, weight.shape[1], bias_name)
        mult, shift = quantize_multiplier(sx.scale * ws / so.scale)
        self.qdq[n.inputs[1]] = (wq, ws, 0, axis)
        self.emit("linear", n, [x], [out], {"x_zp": sx.zero_point, "out_zp": so.zero_point},
                  {"weight": weight, "bias": bq, "mult": mult, "shift": shift})

    def gemm(self, n: Node) -> None:
        a = n.attrs
        w = self.const(n.inputs[1])
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0 or w is None:
            self.fail(n, "only Gemm(x, W, C) with constant W, transA=0, alpha=beta=1")
        c = self.const(n.inputs[2]) if len(n.inputs) > 2 and n.inputs[2] else None
        if c is not None and np.size(c) != w.shape[0 if a.get("transB", 0) else 1]:
            self.fail(n, "bias C is not one value per output")
        self.linear(n, w, 0 if a.get("transB", 0) else 1, n.inputs[2] if c is not None else None, n.outputs[0])

    def matmul(self, n: Node) -> None:
        w = self.const(n.inputs[1])
        if w is not None:
            if w.ndim != 2:
                self.fail(n, "constant MatMul operand is not 2-D")
            add = self.follower(n.outputs[0], ("Add",))
            other = None if add is None else next(i for i in add.inputs if i != n.outputs[0])
            b = self.const(other) if other else None
            if b is not None and np.size(b) == w.shape[1] and np.shape(b)[-1:] == (w.shape[1],):
                self.fused.add(id(add))
                return self.linear(n, w, 1, other, add.outputs[0])
            return self.linear(n, w, 1, None, n.outputs[0])
        alpha, out = 1.0, n.outputs[0]
        scale = self.follower(out, ("Mul", "Div"))
        if scale is not None:
            c = self.scalar(scale.inputs[1] if scale.inputs[0] == out else scale.inputs[0])
            if c is not None and (scale.op == "Mul" or scale.inputs[0] == out):
                alpha, out = (c if scale.op == "Mul" else 1.0 / c), scale.outputs[0]
                self.fused.add(id(scale))
        sa, sb, so = self.act(n.inputs[0], n), self.act(n.inputs[1], n), self.calibrated(out)
        self.check_reduction(n, self.shapes[n.inputs[0]][-1])
        mult, shift = quantize_multiplier(alpha * sa.scale * sb.scale / so.scale)
        self.emit("matmul", n, n.inputs, [out], {"a_zp": sa.zero_point, "b_zp": sb.zero_point,
                                                "out_zp": so.zero_point, "alpha": alpha},
                  {"mult": mult, "shift": shift})

    def elementwise(self, n: Node) -> None:
        if n.op in _UNARY or n.op == "Clip":
            return self.lut(n, n.inputs[0], self._unary(n))
        a, b = n.inputs[:2]
        for x, c, first in ((a, b, True), (b, a, False)):
            value = self.scalar(c)
            if value is not None and c in self.g.consts and x not in self.g.consts:
                f = _SCALAR_BINARY[n.op]
                return self.lut(n, x, lambda v, f=f, value=value, first=first: f(v, value, first))
        if n.op not in ("Add", "Sub", "Mul"):
            self.fail(n, "the divisor / exponent must be a constant scalar")
        qa, qb = [self.const_operand(i) if i in self.g.consts else self.act(i, n) for i in n.inputs[:2]]
        so = self.calibrated(n.outputs[0])
        if n.op == "Mul":
            mult, shift = quantize_multiplier(qa.scale * qb.scale / so.scale)
            return self.emit("mul", n, n.inputs[:2], n.outputs, {"a_zp": qa.zero_point, "b_zp": qb.zero_point,
                                                                 "out_zp": so.zero_point},
                             {"mult": mult, "shift": shift})
        twice = 2.0 * max(qa.scale, qb.scale)
        am, ash = quantize_multiplier(qa.scale / twice)
        bm, bsh = quantize_multiplier((qb.scale if n.op == "Add" else -qb.scale) / twice)
        om, osh = quantize_multiplier(twice / (2 ** K.ADD_LEFT_SHIFT * so.scale))
        self.emit("add", n, n.inputs[:2], n.outputs,
                  {"a_zp": qa.zero_point, "b_zp": qb.zero_point, "out_zp": so.zero_point},
                  {"a_mult": am, "a_shift": ash, "b_mult": bm, "b_shift": bsh, "out_mult": om, "out_shift": osh})

    def _unary(self, n: Node):
        if n.op != "Clip":
            return lambda v: _UNARY[n.op](v, n.attrs)
        lo = self.scalar(n.inputs[1]) if len(n.inputs) > 1 and n.inputs[1] else n.attrs.get("min", -np.inf)
        hi = self.scalar(n.inputs[2]) if len(n.inputs) > 2 and n.inputs[2] else n.attrs.get("max", np.inf)
        if lo is None or hi is None:
            self.fail(n, "Clip bounds must be constant")
        return lambda v: np.clip(v, lo, hi)

    def lut(self, n: Node, x: str, f) -> None:
        sx, so = self.act(x, n), self.calibrated(n.outputs[0])
        codes = np.arange(QMIN, QMAX + 1)
        with np.errstate(all="ignore"):
            table = so.quantize(np.nan_to_num(f((codes - sx.zero_point) * sx.scale)))
        self.emit("lut", n, [x], n.outputs, {"function": n.op}, {"table": table})

    def softmax(self, n: Node) -> None:
        rank = len(self.shapes[n.inputs[0]])
        if n.attrs.get("axis", -1) not in (-1, rank - 1):
            self.fail(n, f"softmax over axis {n.attrs['axis']}, only the last axis is supported")
        sx = self.act(n.inputs[0], n)
        table = np.round(2 ** K.SOFTMAX_EXP_BITS * np.exp(-sx.scale * np.arange(256))).astype(np.int32)
        self.qp[n.outputs[0]] = QParams(K.SOFTMAX_OUT_SCALE, K.SOFTMAX_OUT_ZP)
        self.emit("softmax", n, n.inputs[:1], n.outputs, {}, {"exp_table": table})

    def layernorm(self, n: Node) -> None:
        shape = self.shapes[n.inputs[0]]
        if n.attrs.get("axis", -1) not in (-1, len(shape) - 1):
            self.fail(n, "only normalisation over the last axis is supported")
        c = shape[-1]
        gamma = self.const(n.inputs[1])
        beta = self.const(n.inputs[2]) if len(n.inputs) > 2 and n.inputs[2] else np.zeros(c, np.float32)
        if gamma is None or beta is None or np.size(gamma) != c or np.size(beta) != c:
            self.fail(n, "scale and bias must be constants with one value per channel")
        if c * 128 * 128 >= 2 ** 31:
            self.fail(n, f"{c} channels overflow the int32 sum of squares")
        sx, so = self.act(n.inputs[0], n), self.calibrated(n.outputs[0])
        mult, shift = quantize_multiplier(np.asarray(gamma, np.float64).reshape(-1) / (2 ** K.LN_OUT_BITS * so.scale))
        beta_q = np.round(np.asarray(beta, np.float64).reshape(-1) / so.scale).astype(np.int32)
        eps_q = int(round(n.attrs.get("epsilon", 1e-5) * 2 ** K.LN_VAR_BITS / sx.scale ** 2))
        self.emit("layernorm", n, n.inputs[:1], n.outputs[:1], {"eps_q": eps_q, "out_zp": so.zero_point},
                  {"mult": mult, "shift": shift, "beta": beta_q})

    def pool(self, n: Node) -> None:
        x, out, a = n.inputs[0], n.outputs[0], n.attrs
        if len(n.outputs) > 1 and n.outputs[1] or a.get("ceil_mode", 0) or a.get("auto_pad", "NOTSET") != "NOTSET":
            self.fail(n, "ceil_mode, auto_pad and MaxPool indices are not supported")
        kernel = a["kernel_shape"]
        if len(kernel) != 2:
            self.fail(n, "only 2-D pooling")
        strides, pads = a.get("strides", [1, 1]), a.get("pads", [0, 0, 0, 0])
        sx = self.act(x, n)
        if n.op == "MaxPool":
            self.qp[out] = sx
            return self.emit("maxpool", n, [x], [out], {"kernel": kernel, "strides": strides, "pads": pads,
                                                       "dilations": a.get("dilations", [1, 1])})
        if any(pads) and not a.get("count_include_pad", 0):
            self.fail(n, "padded average pooling needs count_include_pad=1 (a fixed divisor)")
        so = self.calibrated(out)
        mult, shift = quantize_multiplier(sx.scale / (kernel[0] * kernel[1] * so.scale))
        self.emit("avgpool", n, [x], [out], {"x_zp": sx.zero_point, "out_zp": so.zero_point, "kernel": kernel,
                                             "strides": strides, "pads": pads}, {"mult": mult, "shift": shift})

    def reduce_mean(self, n: Node) -> None:
        x, out = n.inputs[0], n.outputs[0]
        rank = len(self.shapes[x])
        if n.op == "GlobalAveragePool":
            axes, keepdims = list(range(2, rank)), 1
        else:
            axes = n.attrs.get("axes")
            if axes is None and len(n.inputs) > 1 and n.inputs[1]:
                axes = self.const(n.inputs[1])
                if axes is None:
                    self.fail(n, "axes must be constant")
            axes = list(range(rank)) if axes is None or np.size(axes) == 0 else [int(i) % rank for i in np.ravel(axes)]
            keepdims = n.attrs.get("keepdims", 1)
        count = int(np.prod([self.shapes[x][i] for i in axes]))
        self.check_reduction(n, count)
        sx, so = self.act(x, n), self.calibrated(out)
        mult, shift = quantize_multiplier(sx.scale / (count * so.scale))
        self.emit("reduce_mean", n, [x], [out], {"x_zp": sx.zero_point, "out_zp": so.zero_point,
                                                 "axes": sorted(axes), "keepdims": bool(keepdims)},
                  {"mult": mult, "shift": shift})

    def move(self, n: Node) -> None:
        """Index-only ops: the outputs keep the input's parameters."""
        x = n.inputs[0]
        sx = self.act(x, n)
        for o in n.outputs:
            if o:
                self.qp[o] = sx
        shape = self.shapes[x]
        if n.op in _RESHAPES:
            return self.emit("reshape", n, [x], n.outputs, {"shape": self.shapes[n.outputs[0]]})
        if n.op == "Transpose":
            return self.emit("transpose", n, [x], n.outputs, {"perm": n.attrs.get("perm", list(range(len(shape)))[::-1])})
        if n.op == "Gather":
            idx = self.const(n.inputs[1])
            if idx is None:
                self.fail(n, "indices must be constant")
            return self.emit("gather", n, [x], n.outputs, {"axis": n.attrs.get("axis", 0) % len(shape)},
                             {"indices": np.asarray(idx, np.int64)})
        if n.op == "Slice":
            starts, ends, axes, steps = (self.const(n.inputs[k]) if len(n.inputs) > k and n.inputs[k] else None
                                         for k in range(1, 5))
            if starts is None or ends is None:
                self.fail(n, "starts and ends must be constant")
            axes = range(len(starts)) if axes is None else axes
            steps = [1] * len(starts) if steps is None else steps
            slices = [[0, d, 1] for d in shape]
            for s, e, ax, st in zip(starts, ends, axes, steps):
                start, stop, step = slice(int(s), int(e), int(st)).indices(shape[int(ax)])
                slices[int(ax)] = [start, stop if stop >= 0 else None, step]
            return self.emit("slice", n, [x], n.outputs, {"slices": slices})
        # Split
        axis = n.attrs.get("axis", 0) % len(shape)
        sizes = self.const(n.inputs[1]) if len(n.inputs) > 1 and n.inputs[1] else n.attrs.get("split")
        if sizes is None:
            sizes = [shape[axis] // len(n.outputs)] * len(n.outputs)
        self.emit("split", n, [x], n.outputs, {"axis": axis, "sizes": [int(s) for s in np.ravel(sizes)]})

    def concat(self, n: Node) -> None:
        activations = [i for i in n.inputs if i not in self.g.consts]
        params = [self.act(i, n) for i in activations]
        if all(p == params[0] for p in params):
            so = params[0]
        else:
            lo, hi = zip(*(p.range for p in params))
            so = choose_qparams(min(lo), max(hi))
        out_inputs = []
        for i in n.inputs:
            if i in self.g.consts:
                name = f"{i}/{n.name}"
                self.consts[name], self.qp[name] = so.quantize(self.g.consts[i]), so
                self.shapes[name] = self.shapes[i]
                self.qdq[i] = (self.consts[name], so.scale, so.zero_point, None)
                out_inputs.append(name)
            elif self.qp[i] == so:
                out_inputs.append(i)
            else:
                name, sx = f"{i}/{n.name}/rescaled", self.qp[i]
                mult, shift = quantize_multiplier(sx.scale / so.scale)
                self.qp[name], self.shapes[name] = so, self.shapes[i]
                self.emit("rescale", n, [i], [name], {"x_zp": sx.zero_point, "out_zp": so.zero_point},
                          {"mult": mult, "shift": shift})
                out_inputs.append(name)
        self.qp[n.outputs[0]] = so
        self.emit("concat", n, out_inputs, n.outputs, {"axis": n.attrs["axis"] % len(self.shapes[n.outputs[0]])})

    def run(self) -> QuantizedModel:
        self.calibrated(self.g.input)
        handlers = {"Conv": self.conv, "Gemm": self.gemm, "MatMul": self.matmul, "Softmax": self.softmax,
                    "LayerNormalization": self.layernorm, "MaxPool": self.pool, "AveragePool": self.pool,
                    "GlobalAveragePool": self.reduce_mean, "ReduceMean": self.reduce_mean, "Concat": self.concat,
                    **{op: self.move for op in (*_RESHAPES, "Transpose", "Gather", "Slice", "Split")}}
        for node in self.g.nodes:
            if id(node) not in self.fused:
                handlers.get(node.op, self.elementwise)(node)
        # in order of first use, so the saved model (and the C generated from it) is the same every run
        used = list(dict.fromkeys([self.g.input, *(t for n in self.nodes for t in (*n.inputs, *n.outputs))]))
        tensors = {t: self.qp[t] for t in used}
        shapes = {t: list(self.shapes[t]) for t in used}
        return QuantizedModel(self.nodes, tensors, shapes, self.consts, self.g.input, list(self.g.outputs))


def quantize_graph(graph: FloatGraph, observers: dict[str, Observer], shapes: dict, method: str
                   ) -> tuple[QuantizedModel, dict[str, tuple]]:
    """The integer model, and the integer form of each float constant (for the QDQ writer)."""
    q = _Quantizer(graph, observers, shapes, method)
    return q.run(), q.qdq
