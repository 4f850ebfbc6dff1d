"""The int8 reference executor and the quantized model it runs (what the C generator consumes).

A `QuantizedModel` is a topologically ordered list of `QNode`s over int8 tensors. Each node names an
op of `integer_ops` (the spec), its tensors, integer attributes and integer parameter arrays (int8
weights, int32 biases, multipliers, shifts, tables). Every tensor has a shape and per-tensor
`QParams`; constant int8 operands live in `consts`. Nothing here is float except the QParams, which
only the host uses to quantize the input and dequantize the outputs.

Files (`save`/`load`): `<stem>.int8.npz` holds every array (`node<i>.<param>`, `const.<tensor>`);
`<stem>.int8.json` holds the graph (nodes, attributes, shapes, scales and zero points).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import EdgevitError
from . import integer_ops as K
from .scheme import QParams

FORMAT = "edgevit-int8/1"


@dataclass
class QNode:
    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class QuantizedModel:
    nodes: list[QNode]
    tensors: dict[str, QParams]
    shapes: dict[str, list[int]]
    consts: dict[str, np.ndarray]
    input: str
    outputs: list[str]
    # Provenance, not saved: the lowered float graph, the integer form of its constants (for the QDQ
    # writer), the calibration observers, the calibration data and its description.
    float_graph: object = None
    qdq_consts: dict = field(default_factory=dict)
    observers: dict = field(default_factory=dict)
    calibration_data: np.ndarray | None = None
    calibration: str = ""

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        return self.tensors[self.input].quantize(x)

    def run(self, x_q: np.ndarray, keep: bool = False) -> dict[str, np.ndarray]:
        """Run on an int8 input; the int8 outputs (every tensor with keep=True), by name."""
        if x_q.dtype != np.int8 or list(x_q.shape) != self.shapes[self.input]:
            raise EdgevitError(f"input must be int8 {self.shapes[self.input]}, got {x_q.dtype} {list(x_q.shape)}")
        env = {self.input: x_q, **self.consts}
        for node in self.nodes:
            outs = _execute(node, [env[i] for i in node.inputs])
            for name, value in zip(node.outputs, outs):
                env[name] = value
        return env if keep else {o: env[o] for o in self.outputs}

    def run_float(self, x: np.ndarray) -> list[np.ndarray]:
        """Quantize a float input, run, dequantize the outputs (host convenience)."""
        out = self.run(self.quantize_input(x))
        return [self.tensors[o].dequantize(out[o]) for o in self.outputs]

    def peak_activation_bytes(self) -> dict:
        """Naive SRAM estimate: int8 bytes live at once when every tensor gets its own buffer from its
        producer to its last consumer, in this node order (no in-place ops, no aliasing reshapes —
        the MCU planner improves on it). Returns the peak, the node where it occurs and the live set."""
        size = {t: int(np.prod(s)) for t, s in self.shapes.items() if t not in self.consts}
        last = {t: i for i, n in enumerate(self.nodes) for t in n.inputs}
        live, best = {self.input}, (size[self.input], "input", [self.input])
        for i, node in enumerate(self.nodes):
            live |= set(node.outputs)
            total = sum(size[t] for t in live)
            if total > best[0]:
                best = (total, node.name, sorted(live))
            live = {t for t in live if last.get(t, -1) > i or t in self.outputs}
        return {"peak_bytes": best[0], "at_node": best[1], "live_tensors": best[2]}

    def save(self, folder: Path, stem: str) -> tuple[Path, Path]:
        arrays = {f"node{i}.{k}": v for i, n in enumerate(self.nodes) for k, v in n.params.items()}
        arrays.update({f"const.{k}": v for k, v in self.consts.items()})
        doc = {
            "format": FORMAT, "input": self.input, "outputs": self.outputs,
            "tensors": {k: {"shape": self.shapes[k], "scale": q.scale, "zero_point": q.zero_point}
                        for k, q in self.tensors.items()},
            "consts": sorted(self.consts),
            "nodes": [{"op": n.op, "name": n.name, "inputs": n.inputs, "outputs": n.outputs, "attrs": n.attrs,
                       "params": {k: [f"node{i}.{k}", str(v.dtype), list(v.shape)] for k, v in n.params.items()}}
                      for i, n in enumerate(self.nodes)],
        }
        npz, js = folder / f"{stem}.int8.npz", folder / f"{stem}.int8.json"
        np.savez(npz, **arrays)
        js.write_text(json.dumps(doc, indent=1) + "\n")
        return npz, js

    @classmethod
    def load(cls, folder: Path, stem: str) -> "QuantizedModel":
        doc = json.loads((folder / f"{stem}.int8.json").read_text())
        if doc.get("format") != FORMAT:
            raise EdgevitError(f"{stem}.int8.json is not an {FORMAT} file")
        with np.load(folder / f"{stem}.int8.npz") as arrays:
            nodes = [QNode(n["op"], n["name"], n["inputs"], n["outputs"], n["attrs"],
                           {k: arrays[key] for k, (key, _, _) in n["params"].items()}) for n in doc["nodes"]]
            consts = {k: arrays[f"const.{k}"] for k in doc["consts"]}
        tensors = {k: QParams(t["scale"], t["zero_point"]) for k, t in doc["tensors"].items()}
        shapes = {k: t["shape"] for k, t in doc["tensors"].items()}
        return cls(nodes, tensors, shapes, consts, doc["input"], doc["outputs"])


def _execute(node: QNode, xs: list[np.ndarray]) -> list[np.ndarray]:
    """One node per the semantics in integer_ops; data moves are plain index operations."""
    a, p = node.attrs, node.params
    op = node.op
    if op == "conv2d":
        return [K.conv2d(xs[0], a["x_zp"], p["weight"], p["bias"], p["mult"], p["shift"], a["out_zp"],
                         a["strides"], a["pads"], a["dilations"], a["group"])]
    if op == "linear":
        return [K.linear(xs[0], a["x_zp"], p["weight"], p["bias"], p["mult"], p["shift"], a["out_zp"])]
    if op == "matmul":
        return [K.matmul(xs[0], a["a_zp"], xs[1], a["b_zp"], p["mult"], p["shift"], a["out_zp"])]
    if op == "add":
        return [K.add(xs[0], a["a_zp"], xs[1], a["b_zp"], p["a_mult"], p["a_shift"], p["b_mult"], p["b_shift"],
                      p["out_mult"], p["out_shift"], a["out_zp"])]
    if op == "mul":
        return [K.mul(xs[0], a["a_zp"], xs[1], a["b_zp"], p["mult"], p["shift"], a["out_zp"])]
    if op == "rescale":
        return [K.rescale(xs[0], a["x_zp"], p["mult"], p["shift"], a["out_zp"])]
    if op == "lut":
        return [K.lut(xs[0], p["table"])]
    if op == "softmax":
        return [K.softmax(xs[0], p["exp_table"])]
    if op == "layernorm":
        return [K.layernorm(xs[0], p["mult"], p["shift"], p["beta"], a["eps_q"], a["out_zp"])]
    if op == "avgpool":
        return [K.avgpool(xs[0], a["x_zp"], p["mult"], p["shift"], a["out_zp"], a["kernel"], a["strides"], a["pads"])]
    if op == "reduce_mean":
        return [K.reduce_mean(xs[0], a["x_zp"], p["mult"], p["shift"], a["out_zp"], a["axes"], a["keepdims"])]
    if op == "maxpool":
        return [K.maxpool(xs[0], a["kernel"], a["strides"], a["pads"], a["dilations"])]
    if op == "reshape":
        return [xs[0].reshape(a["shape"])]
    if op == "transpose":
        return [np.ascontiguousarray(xs[0].transpose(a["perm"]))]
    if op == "gather":
        return [np.take(xs[0], p["indices"], axis=a["axis"])]
    if op == "slice":
        return [xs[0][tuple(slice(*s) for s in a["slices"])]]
    if op == "split":
        return np.split(xs[0], np.cumsum(a["sizes"])[:-1], axis=a["axis"])
    if op == "concat":
        return [np.concatenate(xs, axis=a["axis"])]
    raise EdgevitError(f"unknown int8 op '{op}' (node '{node.name}')")
