"""Quantized model → planner schedule → C source (model.h, model.c, weights.c).

`lower` turns every int8 node (edgevit/quant/reference.py) into a planner `Step` (its tensors, scratch
and the memory sharing its kernel allows) plus a `Call`: a function that, given where each tensor lives,
returns the C statements for the kernel call and the const parameter definitions it needs.
`generate` writes the project sources for a `planner.Plan`. The generated code is deterministic (same
model, same bytes) and holds no float: the only floats are the input/output scales in model.h, for the
application's pre/post-processing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ...errors import EdgevitError
from ...quant import integer_ops as K
from ...quant.reference import QNode, QuantizedModel
from ...quant.scheme import multiply_by_quantized_multiplier
from . import planner

MAX_RANK = 6  # EV_MAX_RANK in ev_kernels.h


@dataclass
class Call:
    """C for one node: `emit(ptr)` → (statements in edgevit_model_run, const definitions in weights.c)."""
    node: QNode
    emit: Callable[[Callable[[str], str], str], tuple[list[str], list[str]]]


def _contiguous_strides(shape: list[int]) -> list[int]:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= d
    return strides[::-1]


def _prod(xs) -> int:
    return int(np.prod(xs)) if len(xs) else 1


def c_array(ctype: str, name: str, values: np.ndarray, per_line: int = 20) -> str:
    flat = [int(v) for v in np.asarray(values).reshape(-1)]
    if not flat:
        flat = [0]
    lines = [", ".join(str(v) for v in flat[i:i + per_line]) for i in range(0, len(flat), per_line)]
    body = ",\n    ".join(lines)
    return f"const {ctype} {name}[{len(flat)}] __attribute__((aligned(4))) = {{\n    {body}\n}};"


C_TYPE_BYTES = {"int8_t": 1, "uint8_t": 1, "int16_t": 2, "uint16_t": 2, "int32_t": 4}
_ARRAY_DECL = re.compile(r"^const (\w+) \w+\[(\d+)\]", re.M)


def data_bytes(q: QuantizedModel, calls: list[Call]) -> int:
    """Bytes of the const arrays weights.c will hold (weights, their int16 layouts, bias/requantization
    constants, tables), read off the declarations c_array writes."""
    defs = [c_array("int8_t", "c", v) for v in q.consts.values()]
    for i, call in enumerate(calls):
        defs += call.emit(lambda t: "0", f"L{i}")[1]
    return sum(C_TYPE_BYTES[t] * int(n) for d in defs for t, n in _ARRAY_DECL.findall(d))


def _struct(ctype: str, name: str, fields: dict) -> str:
    inner = ", ".join(f".{k} = {v}" for k, v in fields.items())
    return f"static const {ctype} {name} = {{{inner}}};"


def _ints(values) -> str:
    return "{" + ", ".join(str(int(v)) for v in values) + "}"


def _pad_rank(shape: list[int], strides: list[int], node: QNode) -> tuple[list[int], list[int]]:
    if len(shape) > MAX_RANK:
        raise EdgevitError(f"node '{node.name}' ({node.op}) has rank {len(shape)}; the MCU kernels take ≤ {MAX_RANK}")
    pad = MAX_RANK - len(shape)
    return [1] * pad + list(shape), [0] * pad + list(strides)


def _broadcast_strides(shape: list[int], out: list[int], node: QNode) -> list[int]:
    shape = [1] * (len(out) - len(shape)) + list(shape)
    strides = _contiguous_strides(shape)
    result = []
    for d, o, s in zip(shape, out, strides):
        if d not in (1, o):
            raise EdgevitError(f"node '{node.name}' ({node.op}): shape {shape} does not broadcast to {out}")
        result.append(0 if d == 1 and o != 1 else s)
    return result


WEIGHT16_MAX_K = 32768  # EV_WEIGHT16's limit: the doubled sums fit int32


def _step_order(k: int, kw: int = 0) -> np.ndarray:
    """The value index of each int16 of a row in the kernels' steps of 2 (ev_common.h), k for the zero pad: per
    block of 4 (w0, w2), (w1, w3), then the k % 4 tail as (w0, w1) and (w0, 0); for 3-wide kernels (kw == 3) per
    group of 4 kernel rows each row's (w0, w2), then the rows' w1 by twos (EV_WEIGHT16)."""
    if kw == 3:
        idx, rows = [], k // 3
        for g in range(0, rows, 4):
            group = range(g, min(g + 4, rows))
            idx += [v for r in group for v in (3 * r, 3 * r + 2)] + [3 * r + 1 for r in group]
            idx += [k] * (len(group) % 2)
        return np.array(idx, np.int64)
    k4 = k & ~3
    idx = np.arange(k4).reshape(-1, 4)[:, [0, 2, 1, 3]].reshape(-1).tolist()
    if k - k4 >= 2:
        idx += [k4, k4 + 1]
    if k % 2:
        idx += [k - 1, k]
    return np.array(idx, np.int64)


def _int32_as_int16(v) -> np.ndarray:
    """int32 values (wrapped) as little-endian int16 pairs: (..., n) → (..., 2n)"""
    v = (np.asarray(v, np.int64) & 0xFFFFFFFF).astype(np.uint32).astype("<u4")
    return v.view("<i2").reshape(*v.shape[:-1], -1)


def weight16_nbytes(shape, group: int = 1) -> int:
    """Bytes of EV_WEIGHT16 for weights of `shape` (n, ...) in `group` groups, or 0 where the layer keeps int8
    weights (depthwise conv2d, reductions over WEIGHT16_MAX_K)."""
    n, k = shape[0], _prod(shape[1:])
    if (len(shape) == 4 and group == n and shape[1] == 1) or k > WEIGHT16_MAX_K:  # depthwise: group == c == cout
        return 0
    return group * -(-(n // group) // 2) * (4 * (k + (k & 1)) + 32)


def layernorm_rq2(mult, shift, beta, out_zp: int) -> np.ndarray | None:
    """ev_layernorm_t.rq2: per channel int32 (M, c, n) of ev_rq2 with z = out_zp + β_q in c = 2^(n−1) + z·2^n, or
    None unless every channel has M ≠ INT32_MIN, shift ∈ [−23, −1] and |c| ≤ 2^30 (with |h| < 2^29: no overflow)."""
    m, e = np.asarray(mult, np.int64).reshape(-1), np.asarray(shift, np.int64).reshape(-1)
    if not np.all((m != -2 ** 31) & (e <= -1) & (e >= -23)):
        return None
    sh = -e
    c = (1 << (sh - 1)) + (out_zp + np.asarray(beta, np.int64).reshape(-1)) * (1 << sh)
    if np.any(np.abs(c) > 1 << 30):
        return None
    return np.stack([m, c, sh], 1).astype(np.int32).reshape(-1)


def weight16_layout(rows: np.ndarray, bias, mult, shift, out_zp: int, group: int = 1) -> np.ndarray:
    """EV_WEIGHT16 (ev_kernels.h) of weight rows (n, k) — or conv2d weights (n, c/group, kh, kw), kw == 3 taking
    its kernel-row order — in `group` groups: per pair of output channels of a group (a zero channel after an odd
    group's last) int32 2·bias of both, their doubled rows interleaved in steps of 2 values, then int32 (M, c, n)
    of ev_rq2 for each (zeros where ev_rq2_ok fails)."""
    rows = np.asarray(rows)
    n = rows.shape[0]
    w = rows.reshape(n, -1).astype(np.int16) * 2
    k = w.shape[1]
    w = np.concatenate([w, np.zeros((n, 1), np.int16)], 1)[:, _step_order(k, rows.shape[-1] if rows.ndim == 4 else 0)]
    m = np.broadcast_to(np.asarray(mult, np.int64), (n,))
    e = np.broadcast_to(np.asarray(shift, np.int64), (n,))
    ok = (m >= 0) & (e <= -1) & (e >= -23)
    sh = np.where(ok, -e, 1)
    q = np.where(ok[:, None], np.stack([m, (1 << (sh - 1)) + out_zp * (1 << sh), sh], 1), 0)  # ev_rq2_make
    b2 = 2 * np.asarray(bias, np.int64).reshape(n)
    og, steps = n // group, w.shape[1] // 2
    w, q, b2 = w.reshape(group, og, steps, 2), q.reshape(group, og, 3), b2.reshape(group, og)
    if og % 2:
        w = np.concatenate([w, np.zeros((group, 1, steps, 2), np.int16)], 1)
        q = np.concatenate([q, np.zeros((group, 1, 3), np.int64)], 1)
        b2 = np.concatenate([b2, np.zeros((group, 1), np.int64)], 1)
    pairs = w.shape[1] // 2
    w = w.reshape(group, pairs, 2, steps, 2).transpose(0, 1, 3, 2, 4).reshape(group, pairs, 4 * steps)
    head = _int32_as_int16(b2.reshape(group, pairs, 2))
    tail = _int32_as_int16(q.reshape(group, pairs, 6))
    return np.ascontiguousarray(np.concatenate([head, w, tail], 2).reshape(-1))


def add_table(a_zp: int, b_zp: int, a_mult: int, a_shift: int, b_mult: int, b_shift: int, out_mult: int,
              out_shift: int) -> np.ndarray | None:
    """ev_add_t.table (ev_kernels.h): 2·a' for every int8 a in the order of its byte, then 2·b'; None where the
    kernel would not use it (out (M, shift) off ev_rq2) or an entry is beyond ±2^29."""
    if not (out_mult >= 0 and -23 <= out_shift <= -1):
        return None
    codes = np.arange(256).astype(np.uint8).view(np.int8).astype(np.int64)
    t = 2 * np.concatenate([multiply_by_quantized_multiplier((codes - z) << K.ADD_LEFT_SHIFT, m, e)
                            for z, m, e in ((a_zp, a_mult, a_shift), (b_zp, b_mult, b_shift))])
    return t.astype(np.int32) if np.abs(t).max() < 2 ** 29 else None


def _weight_defs(sym: str, weight, bias, mult, shift, out_zp: int, wide: bool,
                 group: int = 1) -> tuple[dict, list[str]]:
    """Struct fields and const arrays of a conv2d / linear layer: int8 weights, or int16 (weight16) ones."""
    if wide:
        arrays = [c_array("int16_t", f"{sym}_weight16", weight16_layout(weight, bias, mult, shift, out_zp, group))]
        refs = {"weight": "NULL"}
    else:
        arrays = [c_array("int8_t", f"{sym}_weight", weight)]
        refs = {"weight": f"{sym}_weight"}
    arrays += [c_array("int32_t", f"{sym}_bias", bias), c_array("int32_t", f"{sym}_mult", mult),
               c_array("int32_t", f"{sym}_shift", shift)]
    refs.update(bias=f"{sym}_bias", mult=f"{sym}_mult", shift=f"{sym}_shift",
                weight16=f"{sym}_weight16" if wide else "NULL")
    return refs, arrays


class _Lowering:
    def __init__(self, q: QuantizedModel, wide_weights: bool = False):
        """wide_weights: conv2d (except depthwise) and linear weights as int16 in flash (EV_WEIGHT16: twice the
        bytes of the int8 weights, which are then not emitted; fewer instructions per MAC)."""
        self.q = q
        self.wide_weights = wide_weights
        self.steps: list[planner.Step] = []
        self.calls: list[Call] = []

    def shape(self, t: str) -> list[int]:
        return list(self.q.shapes[t])

    def size(self, t: str) -> int:
        return _prod(self.shape(t))

    def is_const(self, t: str) -> bool:
        return t in self.q.consts

    def add(self, node: QNode, emit, scratch: int = 0, share: str = "", share_inputs=(), rows=(0, 0, 0),
            macs: int = 0) -> None:
        inputs = [t for t in node.inputs if not self.is_const(t)]
        self.steps.append(planner.Step(node.name, node.op, inputs, list(node.outputs), scratch, share,
                                       tuple(share_inputs), rows, macs))
        self.calls.append(Call(node, emit))

    # --- compute ops ---------------------------------------------------------------------------------
    def conv2d(self, n: QNode) -> None:
        a, p = n.attrs, n.params
        nb, c, h, w = self.shape(n.inputs[0])
        _, cout, oh, ow = self.shape(n.outputs[0])
        _, cg, kh, kw = p["weight"].shape
        pt, pl = a["pads"][0], a["pads"][1]
        fields = dict(n=nb, c=c, h=h, w=w, cout=cout, oh=oh, ow=ow, kh=kh, kw=kw, stride_h=a["strides"][0],
                      stride_w=a["strides"][1], pad_t=pt, pad_l=pl, dil_h=a["dilations"][0], dil_w=a["dilations"][1],
                      group=a["group"], x_zp=a["x_zp"], out_zp=a["out_zp"])

        wide = self.wide_weights and weight16_nbytes(p["weight"].shape, a["group"]) > 0

        def emit(ptr, sym):
            refs, defs = _weight_defs(sym, p["weight"], p["bias"], p["mult"], p["shift"], a["out_zp"], wide,
                                      a["group"])
            return [_struct("ev_conv2d_t", sym, {**fields, **refs}),
                    f"ev_conv2d(&{sym}, {ptr(n.inputs[0])}, {ptr(n.outputs[0])}, {ptr('#scratch')});"], defs
        if a["group"] == c == cout:  # depthwise: one padded channel plane (EV_DEPTHWISE_SCRATCH_BYTES)
            sh, sw, dh, dw = a["strides"][0], a["strides"][1], a["dilations"][0], a["dilations"][1]
            scratch = ((oh - 1) * sh + (kh - 1) * dh + 1) * (((ow - 1) * sw + (kw - 1) * dw + 5) & ~3)
        else:  # EV_CONV2D_SCRATCH_BYTES
            k = cg * kh * kw
            scratch = 8 * (k + (k & 1)) + 4 * cg * kh
        self.add(n, emit, scratch=scratch, macs=nb * cout * oh * ow * cg * kh * kw)

    def linear(self, n: QNode) -> None:
        a, p = n.attrs, n.params
        k, nout = p["weight"].shape
        rows = self.size(n.inputs[0]) // k
        weight_t = np.ascontiguousarray(p["weight"].T)  # (n, k): contiguous rows for the dot products
        fields = dict(rows=rows, k=k, n=nout, x_zp=a["x_zp"], out_zp=a["out_zp"])

        wide = self.wide_weights and weight16_nbytes(weight_t.shape) > 0

        def emit(ptr, sym):
            refs, defs = _weight_defs(sym, weight_t, p["bias"], np.broadcast_to(p["mult"], (nout,)),
                                      np.broadcast_to(p["shift"], (nout,)), a["out_zp"], wide)
            return [_struct("ev_linear_t", sym, {**fields, **refs}),
                    f"ev_linear(&{sym}, {ptr(n.inputs[0])}, {ptr(n.outputs[0])}, {ptr('#scratch')});"], defs
        self.add(n, emit, scratch=8 * (k + (k & 1)), share="rows", share_inputs=(0,), rows=(rows, k, nout),
                 macs=rows * k * nout)

    def matmul(self, n: QNode) -> None:
        a, p = n.attrs, n.params
        sa, sb, so = self.shape(n.inputs[0]), self.shape(n.inputs[1]), self.shape(n.outputs[0])
        if len(sa) < 2 or len(sb) < 2:
            raise EdgevitError(f"node '{n.name}' (matmul): operands must be at least 2-D, got {sa} and {sb}")
        m, k, nn = sa[-2], sa[-1], sb[-1]
        batch = _prod(so[:-2])

        def batch_stride(shape: list[int], step: int) -> int:
            lead = _prod(shape[:-2])
            if lead == batch:
                return step
            if lead == 1:
                return 0
            raise EdgevitError(f"node '{n.name}' (matmul): batch dims {shape[:-2]} vs {so[:-2]} need partial "
                               "broadcasting, which the MCU kernel does not do")
        fields = dict(batch=batch, m=m, k=k, n=nn, a_batch_stride=batch_stride(sa, m * k),
                      b_batch_stride=batch_stride(sb, k * nn), a_zp=a["a_zp"], b_zp=a["b_zp"], out_zp=a["out_zp"],
                      mult=int(p["mult"].reshape(-1)[0]), shift=int(p["shift"].reshape(-1)[0]))

        def emit(ptr, sym):
            return [_struct("ev_matmul_t", sym, fields),
                    f"ev_matmul(&{sym}, {ptr(n.inputs[0])}, {ptr(n.inputs[1])}, {ptr(n.outputs[0])}, "
                    f"{ptr('#scratch')});"], []
        k2 = k + (k & 1)  # EV_MATMUL_SCRATCH_BYTES
        self.add(n, emit, scratch=-(-nn // 2) * (4 * k2 + 32) + 8 * k2, macs=batch * m * k * nn)

    def binary(self, n: QNode) -> None:
        a, p = n.attrs, n.params
        out = self.shape(n.outputs[0])
        sa = _broadcast_strides(self.shape(n.inputs[0]), out, n)
        sb = _broadcast_strides(self.shape(n.inputs[1]), out, n)
        shape, sa = _pad_rank(out, sa, n)
        _, sb = _pad_rank(out, sb, n)
        dims = f"{{.rank = {MAX_RANK}, .shape = {_ints(shape)}, .a_strides = {_ints(sa)}, .b_strides = {_ints(sb)}}}"
        if n.op == "add":
            extra = {k: int(np.asarray(p[k]).reshape(-1)[0]) for k in
                     ("a_mult", "a_shift", "b_mult", "b_shift", "out_mult", "out_shift")}
            ctype = "ev_add_t"
        else:
            extra = {"mult": int(p["mult"].reshape(-1)[0]), "shift": int(p["shift"].reshape(-1)[0])}
            ctype = "ev_mul_t"
        fields = {"dims": dims, "a_zp": a["a_zp"], "b_zp": a["b_zp"], "out_zp": a["out_zp"], **extra}
        table = add_table(a["a_zp"], a["b_zp"], **extra) if n.op == "add" else None
        full = [i for i, t in enumerate(n.inputs) if not self.is_const(t) and self.shape(t) == out]
        active = [t for t in n.inputs if not self.is_const(t)]
        share_inputs = [active.index(n.inputs[i]) for i in full]

        def emit(ptr, sym):
            defs = [] if table is None else [c_array("int32_t", f"{sym}_table", table)]
            refs = {} if n.op == "mul" else {"table": "NULL" if table is None else f"{sym}_table"}
            return [_struct(ctype, sym, {**fields, **refs}),
                    f"ev_{n.op}(&{sym}, {ptr(n.inputs[0])}, {ptr(n.inputs[1])}, {ptr(n.outputs[0])});"], defs
        self.add(n, emit, share="inplace", share_inputs=share_inputs)

    def rescale(self, n: QNode) -> None:
        a, p = n.attrs, n.params

        # a function of one int8: its 256 outputs as ev_lut's table (~3 instead of ~20 instructions per element)
        table = K.rescale(np.arange(-128, 128), a["x_zp"], p["mult"].reshape(-1)[0], p["shift"].reshape(-1)[0],
                          a["out_zp"])

        def emit(ptr, sym):
            return ([f"ev_lut({self.size(n.inputs[0])}, {sym}_table, {ptr(n.inputs[0])}, {ptr(n.outputs[0])});"
                     "  /* rescale */"], [c_array("int8_t", f"{sym}_table", table)])
        self.add(n, emit, share="inplace", share_inputs=(0,))

    def lut(self, n: QNode) -> None:
        def emit(ptr, sym):
            return ([f"ev_lut({self.size(n.inputs[0])}, {sym}_table, {ptr(n.inputs[0])}, {ptr(n.outputs[0])});"
                     f"  /* {n.attrs.get('function', '')} */"],
                    [c_array("int8_t", f"{sym}_table", n.params["table"])])
        self.add(n, emit, share="inplace", share_inputs=(0,))

    def softmax(self, n: QNode) -> None:
        shape = self.shape(n.inputs[0])
        table = n.params["exp_table"]
        if table.min() < 0 or table.max() > 0xFFFF:
            raise EdgevitError(f"node '{n.name}' (softmax): exp table does not fit uint16")

        def emit(ptr, sym):
            return ([f"ev_softmax({_prod(shape[:-1])}, {shape[-1]}, {sym}_exp, {ptr(n.inputs[0])}, "
                     f"{ptr(n.outputs[0])});"], [c_array("uint16_t", f"{sym}_exp", table)])
        self.add(n, emit, share="inplace", share_inputs=(0,))

    def layernorm(self, n: QNode) -> None:
        shape = self.shape(n.inputs[0])
        a, p = n.attrs, n.params
        fields = dict(rows=_prod(shape[:-1]), len=shape[-1], eps_q=f"{int(a['eps_q'])}LL", out_zp=a["out_zp"])

        def emit(ptr, sym):
            defs = [c_array("int32_t", f"{sym}_mult", p["mult"]), c_array("int32_t", f"{sym}_shift", p["shift"]),
                    c_array("int32_t", f"{sym}_beta", p["beta"])]
            rq2 = layernorm_rq2(p["mult"], p["shift"], p["beta"], a["out_zp"])
            if rq2 is not None:
                defs.append(c_array("int32_t", f"{sym}_rq2", rq2))
            return [_struct("ev_layernorm_t", sym, {**fields, "mult": f"{sym}_mult", "shift": f"{sym}_shift",
                                                     "beta": f"{sym}_beta",
                                                     "rq2": f"{sym}_rq2" if rq2 is not None else "NULL"}),
                    f"ev_layernorm(&{sym}, {ptr(n.inputs[0])}, {ptr(n.outputs[0])});"], defs
        self.add(n, emit, share="inplace", share_inputs=(0,))

    def pool(self, n: QNode) -> None:
        a, p = n.attrs, n.params
        nb, c, h, w = self.shape(n.inputs[0])
        oh, ow = self.shape(n.outputs[0])[2:]
        fields = dict(n=nb, c=c, h=h, w=w, oh=oh, ow=ow, kh=a["kernel"][0], kw=a["kernel"][1],
                      stride_h=a["strides"][0], stride_w=a["strides"][1], pad_t=a["pads"][0], pad_l=a["pads"][1])
        if n.op == "avgpool":
            fields.update(x_zp=a["x_zp"], out_zp=a["out_zp"], mult=int(p["mult"].reshape(-1)[0]),
                          shift=int(p["shift"].reshape(-1)[0]), dil_h=1, dil_w=1)
        else:
            fields.update(x_zp=0, out_zp=0, mult=0, shift=0, dil_h=a["dilations"][0], dil_w=a["dilations"][1])

        def emit(ptr, sym):
            return [_struct("ev_pool_t", sym, fields),
                    f"ev_{n.op}(&{sym}, {ptr(n.inputs[0])}, {ptr(n.outputs[0])});"], []
        self.add(n, emit)

    def reduce_mean(self, n: QNode) -> None:
        a, p = n.attrs, n.params
        shape, axes = self.shape(n.inputs[0]), sorted(a["axes"])
        if axes != list(range(axes[0], axes[-1] + 1)):
            raise EdgevitError(f"node '{n.name}' (reduce_mean): axes {axes} are not contiguous")
        fields = dict(outer=_prod(shape[:axes[0]]), reduce=_prod(shape[axes[0]:axes[-1] + 1]),
                      inner=_prod(shape[axes[-1] + 1:]), x_zp=a["x_zp"], mult=int(p["mult"].reshape(-1)[0]),
                      shift=int(p["shift"].reshape(-1)[0]), out_zp=a["out_zp"])

        def emit(ptr, sym):
            return [_struct("ev_reduce_mean_t", sym, fields),
                    f"ev_reduce_mean(&{sym}, {ptr(n.inputs[0])}, {ptr(n.outputs[0])});"], []
        self.add(n, emit)

    # --- data moves ----------------------------------------------------------------------------------
    @staticmethod
    def _copy(sym: str, node: QNode, shape, in_strides, out_strides, src: str, dst: str) -> list[str]:
        _, out_strides = _pad_rank(list(shape), list(out_strides), node)
        shape, in_strides = _pad_rank(list(shape), list(in_strides), node)
        return [f"static const int32_t {sym}_dims[3][{MAX_RANK}] = {{{_ints(shape)}, {_ints(in_strides)}, "
                f"{_ints(out_strides)}}};",
                f"ev_copy({MAX_RANK}, {sym}_dims[0], {sym}_dims[1], {sym}_dims[2], {src}, {dst});"]

    def reshape(self, n: QNode) -> None:
        def emit(ptr, sym):
            return [f"/* {n.name}: reshape to {self.shape(n.outputs[0])} is free (same bytes) */"], []
        self.add(n, emit, share="alias", share_inputs=(0,))

    def transpose(self, n: QNode) -> None:
        shape, perm = self.shape(n.inputs[0]), n.attrs["perm"]
        strides = _contiguous_strides(shape)
        out_shape = [shape[i] for i in perm]

        def emit(ptr, sym):
            return self._copy(sym, n, out_shape, [strides[i] for i in perm], _contiguous_strides(out_shape),
                              ptr(n.inputs[0]), ptr(n.outputs[0])), []
        self.add(n, emit)

    def slice(self, n: QNode) -> None:
        shape, slices = self.shape(n.inputs[0]), n.attrs["slices"]
        strides = _contiguous_strides(shape)
        out_shape = self.shape(n.outputs[0])
        start = sum(s[0] * st for s, st in zip(slices, strides))
        in_strides = [st * s[2] for s, st in zip(slices, strides)]
        if any(s[2] <= 0 for s in slices):
            raise EdgevitError(f"node '{n.name}' (slice): negative steps are not supported on the MCU")

        def emit(ptr, sym):
            return self._copy(sym, n, out_shape, in_strides, _contiguous_strides(out_shape),
                              f"{ptr(n.inputs[0])} + {start}", ptr(n.outputs[0])), []
        self.add(n, emit)

    def split(self, n: QNode) -> None:
        shape, axis, sizes = self.shape(n.inputs[0]), n.attrs["axis"], n.attrs["sizes"]
        strides = _contiguous_strides(shape)

        def emit(ptr, sym):
            body, offset = [], 0
            for j, (out, size) in enumerate(zip(n.outputs, sizes)):
                out_shape = shape[:axis] + [size] + shape[axis + 1:]
                if out:
                    body += self._copy(f"{sym}_{j}", n, out_shape, strides, _contiguous_strides(out_shape),
                                       f"{ptr(n.inputs[0])} + {offset * strides[axis]}", ptr(out))
                offset += size
            return body, []
        self.add(n, emit)

    def concat(self, n: QNode) -> None:
        out_shape, axis = self.shape(n.outputs[0]), n.attrs["axis"]
        out_strides = _contiguous_strides(out_shape)

        def emit(ptr, sym):
            body, offset = [], 0
            for j, t in enumerate(n.inputs):
                shape = self.shape(t)
                body += self._copy(f"{sym}_{j}", n, shape, _contiguous_strides(shape), out_strides, ptr(t),
                                   f"{ptr(n.outputs[0])} + {offset * out_strides[axis]}")
                offset += shape[axis]
            return body, []
        self.add(n, emit)

    def gather(self, n: QNode) -> None:
        shape, axis = self.shape(n.inputs[0]), n.attrs["axis"]
        idx = np.asarray(n.params["indices"]).reshape(-1)
        idx = np.where(idx < 0, idx + shape[axis], idx).astype(np.int32)
        outer, inner = _prod(shape[:axis]), _prod(shape[axis + 1:])

        def emit(ptr, sym):
            return [f"ev_gather({outer}, {shape[axis]}, {inner}, {sym}_idx, {len(idx)}, {ptr(n.inputs[0])}, "
                    f"{ptr(n.outputs[0])});"], [c_array("int32_t", f"{sym}_idx", idx)]
        self.add(n, emit)

    def run(self) -> "_Lowering":
        handlers = {"conv2d": self.conv2d, "linear": self.linear, "matmul": self.matmul, "add": self.binary,
                    "mul": self.binary, "rescale": self.rescale, "lut": self.lut, "softmax": self.softmax,
                    "layernorm": self.layernorm, "avgpool": self.pool, "maxpool": self.pool,
                    "reduce_mean": self.reduce_mean, "reshape": self.reshape, "transpose": self.transpose,
                    "slice": self.slice, "split": self.split, "concat": self.concat, "gather": self.gather}
        for node in self.q.nodes:
            if node.op not in handlers:
                raise EdgevitError(f"the MCU backend has no kernel for int8 op '{node.op}' (node '{node.name}')")
            handlers[node.op](node)
        return self


def lower(q: QuantizedModel, wide_weights: bool = False) -> tuple[planner.Schedule, list[Call]]:
    """The planner's view of `q` and the C emitter of each node, in the model's node order. wide_weights: int16
    conv2d / linear weights (see _Lowering)."""
    if len(q.outputs) != 1:
        raise EdgevitError(f"the MCU backend takes models with one output, this one has {len(q.outputs)}")
    low = _Lowering(q, wide_weights).run()
    sizes = {t: _prod(s) for t, s in q.shapes.items() if t not in q.consts}
    return planner.Schedule(low.steps, sizes, {q.input}, list(q.outputs)), low.calls


def _c_float(v: float) -> str:
    return f"{float(v):.9g}f"


def generate(q: QuantizedModel, schedule: planner.Schedule, calls: list[Call], plan: planner.Plan,
             name: str) -> dict[str, str]:
    """File name → contents for model.h, model.c and weights.c."""
    offsets = plan.placement.tensor_offset
    external = planner.external_closure(schedule)
    in_size, out_name = _prod(q.shapes[q.input]), q.outputs[0]
    out_size = _prod(q.shapes[out_name])
    consts = {t: f"ev_const_{i}" for i, t in enumerate(sorted(q.consts))}

    body, defs = [], []
    defs += [c_array("int8_t", sym, q.consts[t]) + f"  /* {t} */" for t, sym in consts.items()]
    for pos, i in enumerate(plan.order):
        step, call = schedule.steps[i], calls[i]

        def ptr(t: str, i=i) -> str:
            if t == "#scratch":
                return f"(int16_t *)(ev_arena + {plan.placement.scratch_offset[i]})"
            if t in consts:
                return consts[t]
            if t in external:
                return "in"
            return f"ev_arena + {offsets[t]}"
        stmts, more = call.emit(ptr, f"L{i}")
        defs += more
        body.append(f"    /* {pos}: {step.op} {step.name} → {', '.join(step.outputs)} */")
        if len(stmts) == 1:
            body.append(f"    {stmts[0]}")
        else:
            body += ["    {"] + [f"        {s}" for s in stmts] + ["    }"]
        body.append(f"    EV_STEP_DONE({pos});")
    if out_name in external:
        body.append(f"    memcpy(out, in, {out_size});")
    else:
        body.append(f"    memcpy(out, ev_arena + {offsets[out_name]}, {out_size});")

    qi, qo = q.tensors[q.input], q.tensors[out_name]
    guard = "EDGEVIT_MODEL_H"
    header = "\n".join([
        f"/* {name}: int8 model generated by edgevit — do not edit. */",
        f"#ifndef {guard}", f"#define {guard}", "", "#include <stdint.h>", "",
        f'#define EDGEVIT_MODEL_NAME "{name}"',
        f"#define EDGEVIT_MODEL_INPUT_SIZE {in_size}   /* int8, shape {q.shapes[q.input]} */",
        f"#define EDGEVIT_MODEL_OUTPUT_SIZE {out_size}   /* int8, shape {q.shapes[out_name]} */",
        "/* real = scale · (q − zero_point); quantize the input as q = clamp(round(x / scale) + zero_point) */",
        f"#define EDGEVIT_MODEL_INPUT_SCALE {_c_float(qi.scale)}",
        f"#define EDGEVIT_MODEL_INPUT_ZERO_POINT {qi.zero_point}",
        f"#define EDGEVIT_MODEL_OUTPUT_SCALE {_c_float(qo.scale)}",
        f"#define EDGEVIT_MODEL_OUTPUT_ZERO_POINT {qo.zero_point}",
        f"#define EDGEVIT_ARENA_BYTES {plan.placement.arena}",
        f"#define EDGEVIT_MODEL_STEPS {len(plan.order)}",
        "",
        "/* Runs the model: `in` is read only (it may live in flash), `out` receives the int8 output.",
        " * Uses one static arena of EDGEVIT_ARENA_BYTES; not reentrant. Returns 0. */",
        "int edgevit_model_run(const int8_t *in, int8_t *out);",
        "", f"#endif /* {guard} */", ""])
    model_c = "\n".join([
        f"/* {name}: int8 model generated by edgevit — do not edit.",
        f" * {len(plan.order)} steps; arena {plan.placement.arena} bytes (lower bound {plan.lower_bound}). */",
        "#include <string.h>", "", '#include "ev_kernels.h"', '#include "model.h"', '#include "weights.h"', "",
        "#ifdef EDGEVIT_PROFILE  /* per-step timing: main_profile.c defines the hook */",
        "void edgevit_profile_step(int step);", "#define EV_STEP_DONE(i) edgevit_profile_step(i)", "#else",
        "#define EV_STEP_DONE(i) ((void)0)", "#endif", "",
        f"static int8_t ev_arena[{max(plan.placement.arena, 4)}] __attribute__((aligned(8)));", "",
        "int edgevit_model_run(const int8_t *in, int8_t *out) {",
        *body,
        "    return 0;", "}", ""])
    externs = []
    for d in defs:
        if d.startswith("const "):
            decl = d.split(" = ")[0].replace(" __attribute__((aligned(4)))", "")
            externs.append(f"extern {decl};")
    weights_h = "\n".join([f"/* {name}: weights generated by edgevit — do not edit. */",
                           "#ifndef EDGEVIT_WEIGHTS_H", "#define EDGEVIT_WEIGHTS_H", "#include <stdint.h>", "",
                           *externs, "", "#endif", ""])
    weights_c = "\n".join([f"/* {name}: weights, tables and constants generated by edgevit — const, so they stay "
                           "in flash. */", '#include "weights.h"', "", *defs, ""])
    return {"model.h": header, "model.c": model_c, "weights.h": weights_h, "weights.c": weights_c}
