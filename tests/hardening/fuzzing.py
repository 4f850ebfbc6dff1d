"""Hostile-input fuzzing: seeded generator of broken ONNX models + a forked, time-limited harness.

`make_case(seed)` turns a seed into one hostile input (bytes of a `.onnx` file, plus side files for
external data), deterministically: a small valid base model, then 1–3 mutations from the issue's list
(truncated/bit-flipped files, wrong dtypes, dangling inputs, cycles, huge/zero/negative dims, unknown
ops/domains, mismatched initializer shapes, external data outside the folder, bad attributes, odd
opsets, recursive functions, allocation bombs, ...).

`run_case(case)` forks a worker (memory-capped with RLIMIT_AS, killed after `timeout` seconds) that
drives the input through what the CLI does with a user's ONNX: `cli._load_for_analysis` (load, external
data, validation, resource limits, onnxsim when dynamic), `analyze`, the pass pipeline, then each
backend's op-coverage check on the optimized graph (TVM importer coverage, Core ML lowering coverage,
the int8 quantizer's `from_onnx`). Outcomes:

  ok       every stage accepted it (coverage checks may list unsupported ops: a valid result)
  error    an EdgevitError with a one-line message (the CLI: exit 2)
  bug      any other exception (the CLI: "internal error", exit 3) — with the traceback's last frames
  hang     still running after the time limit
  crash    the worker died from a signal (segfault/abort in native code)

Used by tests/hardening/test_fuzz.py (a short run) and scripts/fuzz.py (≥ 1,000 inputs).
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


# ------------------------------------------------------------------------------------------ base models
def _w(rng: np.random.Generator, shape, name: str) -> TensorProto:
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)


def _model(nodes, inputs, outputs, inits, opset: int = OPSET, functions=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "fuzz", inputs, outputs, inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], functions=list(functions))
    m.ir_version = 8
    return m


def base_conv(rng) -> onnx.ModelProto:
    return _model(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
         helper.make_node("Relu", ["c"], ["y"], name="relu")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [_w(rng, (4, 3, 3, 3), "w"), _w(rng, (4,), "b")])


def base_classifier(rng) -> onnx.ModelProto:
    bn = [_w(rng, (4,), "scale"), _w(rng, (4,), "bias"), _w(rng, (4,), "mean"),
          numpy_helper.from_array(np.abs(rng.standard_normal(4)).astype(np.float32) + 0.5, "var")]
    return _model(
        [helper.make_node("Conv", ["x", "w"], ["c"], strides=[2, 2], name="conv"),
         helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["n"], name="bn"),
         helper.make_node("Relu", ["n"], ["r"], name="relu"),
         helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
         helper.make_node("Flatten", ["g"], ["f"], name="flat"),
         helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], transB=1, name="head")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        [_w(rng, (4, 3, 2, 2), "w"), *bn, _w(rng, (5, 4), "fc"), _w(rng, (5,), "fcb")])


def base_attention(rng) -> onnx.ModelProto:
    d = 8
    scale = numpy_helper.from_array(np.array(d ** -0.5, np.float32), "scale")
    return _model(
        [helper.make_node("MatMul", ["x", "wq"], ["q"], name="q"),
         helper.make_node("MatMul", ["x", "wk"], ["k"], name="k"),
         helper.make_node("MatMul", ["x", "wv"], ["v"], name="v"),
         helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1], name="kt"),
         helper.make_node("MatMul", ["q", "kt"], ["s"], name="qk"),
         helper.make_node("Mul", ["s", "scale"], ["ss"], name="scale"),
         helper.make_node("Softmax", ["ss"], ["p"], axis=-1, name="softmax"),
         helper.make_node("MatMul", ["p", "v"], ["o"], name="pv"),
         helper.make_node("Add", ["o", "x"], ["res"], name="residual"),
         helper.make_node("LayerNormalization", ["res", "g", "beta"], ["y"], axis=-1, name="ln")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, d])],
        [_w(rng, (d, d), "wq"), _w(rng, (d, d), "wk"), _w(rng, (d, d), "wv"), scale,
         numpy_helper.from_array(np.ones(d, np.float32), "g"), numpy_helper.from_array(np.zeros(d, np.float32), "beta")])


def base_dynamic(rng) -> onnx.ModelProto:
    m = base_conv(rng)
    dims = m.graph.input[0].type.tensor_type.shape.dim
    for d, p in zip(dims, ["N", None, "H", "W"]):
        if p:
            d.Clear()
            d.dim_param = p
    for d, p in zip(m.graph.output[0].type.tensor_type.shape.dim, ["N", None, "H", "W"]):
        if p:
            d.Clear()
            d.dim_param = p
    return m


def base_gelu_mlp(rng) -> onnx.ModelProto:
    c = {n: numpy_helper.from_array(np.array(v, np.float32), n) for n, v in
         (("sqrt2", 2 ** 0.5), ("one", 1.0), ("half", 0.5))}
    return _model(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]),
         helper.make_node("Div", ["h", "sqrt2"], ["hd"]), helper.make_node("Erf", ["hd"], ["e"]),
         helper.make_node("Add", ["e", "one"], ["e1"]), helper.make_node("Mul", ["h", "e1"], ["he"]),
         helper.make_node("Mul", ["he", "half"], ["g"]), helper.make_node("MatMul", ["g", "w2"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6])],
        [_w(rng, (6, 12), "w1"), _w(rng, (12, 6), "w2"), *c.values()])


BASES = [base_conv, base_classifier, base_attention, base_dynamic, base_gelu_mlp]


# ------------------------------------------------------------------------------------------- mutations
@dataclass
class Case:
    seed: int
    base: str
    mutations: list[str]
    data: bytes = b""
    input_size: tuple[int, int] | None = None  # --input-size, as a user would give for a dynamic model
    side_files: dict[str, bytes] = field(default_factory=dict)  # relative to the model's folder
    outside_files: dict[str, bytes] = field(default_factory=dict)  # relative to the folder's parent


HUGE = [2**31, 2**40, 2**62, 10**6, 65536]
DTYPES = [0, TensorProto.STRING, TensorProto.BOOL, TensorProto.INT64, TensorProto.INT8, TensorProto.FLOAT16,
          TensorProto.DOUBLE, TensorProto.COMPLEX64, TensorProto.BFLOAT16, 17, 19, 21, 23, 25, 40, 99, 1000]


def _pick_node(r: random.Random, m) -> onnx.NodeProto:
    return m.graph.node[r.randrange(len(m.graph.node))]


def _pick_init(r: random.Random, m) -> TensorProto | None:
    return m.graph.initializer[r.randrange(len(m.graph.initializer))] if m.graph.initializer else None


def mut_input_dtype(r, m, case):
    vi = (m.graph.input if r.random() < 0.7 else m.graph.output)[0]
    vi.type.tensor_type.elem_type = r.choice(DTYPES)


def mut_init_dtype(r, m, case):
    t = _pick_init(r, m)
    if t is not None:
        t.data_type = r.choice(DTYPES)


def mut_dangling_input(r, m, case):
    n = _pick_node(r, m)
    if n.input:
        n.input[r.randrange(len(n.input))] = r.choice(["nope", "", "x ", "y", "../../etc/passwd"])
    else:
        n.input.append("dangling")


def mut_cycle(r, m, case):
    i = r.randrange(len(m.graph.node))
    j = r.randrange(i, len(m.graph.node))
    n = m.graph.node[i]
    if n.input:
        n.input[0] = m.graph.node[j].output[0]
    if r.random() < 0.3:  # also reorder so the checker's topological-order message is not the only way in
        nodes = list(m.graph.node)
        r.shuffle(nodes)
        del m.graph.node[:]
        m.graph.node.extend(nodes)


def _set_dim(d, value):
    d.Clear()
    d.dim_value = value


def mut_huge_dim(r, m, case):
    dims = m.graph.input[0].type.tensor_type.shape.dim
    _set_dim(dims[r.randrange(len(dims))], r.choice(HUGE))


def mut_zero_or_negative_dim(r, m, case):
    target = r.random()
    if target < 0.5:
        dims = m.graph.input[0].type.tensor_type.shape.dim
        _set_dim(dims[r.randrange(len(dims))], r.choice([0, -1, -7]))
    else:
        t = _pick_init(r, m)
        if t is not None and t.dims:
            t.dims[r.randrange(len(t.dims))] = r.choice([0, -1, -3])


def mut_unknown_op(r, m, case):
    n = _pick_node(r, m)
    choice = r.randrange(5)
    if choice == 0:
        n.op_type = r.choice(["FooBar", "Celu", "Det", "Unique", "NonZero", "StringNormalizer", "LSTM", "Loop",
                              "ReverseSequence", "STFT", ""])
    elif choice == 1:
        n.domain = r.choice(["com.evil", "ai.onnx.ml", "com.microsoft", "edgevit", "../x"])
    elif choice == 2:
        n.domain = "com.evil"
        m.opset_import.append(helper.make_opsetid("com.evil", 1))
    elif choice == 3:
        n.domain, n.op_type = "com.microsoft", r.choice(["Attention", "FusedConv", "Gelu", "QuickGelu"])
        m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    else:
        n.domain, n.op_type = "edgevit", r.choice(["Attention", "Gelu", "Nope"])
        m.opset_import.append(helper.make_opsetid("edgevit", 1))


def mut_init_shape(r, m, case):
    t = _pick_init(r, m)
    if t is None:
        return
    arr = numpy_helper.to_array(t)
    kind = r.randrange(3)
    if kind == 0 and t.dims:  # dims disagree with the stored data
        t.dims[r.randrange(len(t.dims))] += r.choice([1, 2, 5, 1000])
    elif kind == 1:  # consistent data, wrong shape for the op
        new_shape = list(arr.shape or [1])
        new_shape[r.randrange(len(new_shape))] += r.choice([1, 3])
        t.CopyFrom(numpy_helper.from_array(np.ones(new_shape, arr.dtype), t.name))
    else:  # raw data chopped
        raw = t.raw_data or arr.tobytes()
        t.ClearField("float_data")
        t.raw_data = raw[: r.randrange(max(1, len(raw)))]


def mut_remove_init(r, m, case):
    if m.graph.initializer:
        del m.graph.initializer[r.randrange(len(m.graph.initializer))]


def mut_duplicate_output(r, m, case):
    if len(m.graph.node) > 1:
        a, b = r.sample(range(len(m.graph.node)), 2)
        m.graph.node[a].output[0] = m.graph.node[b].output[0]


def mut_bad_attr(r, m, case):
    n = _pick_node(r, m)
    name, value = r.choice([("kernel_shape", [10**9, 1]), ("pads", [-5, -5, -5, -5]), ("strides", [0, 0]),
                            ("group", 0), ("group", 7), ("axis", 99), ("perm", [5, 5, 5]), ("dilations", [10**6, 1]),
                            ("pads", "abc"), ("transB", 3.5), ("epsilon", -1.0), ("alpha", float("nan")),
                            ("axis", -1000), ("to", 99)])
    del n.attribute[:]
    n.attribute.append(helper.make_attribute(name, value))


def mut_opset(r, m, case):
    choice = r.randrange(4)
    if choice == 0:
        m.opset_import[0].version = r.choice([0, 1, 6, 99, 999, -1])
    elif choice == 1:
        m.ir_version = r.choice([0, 1, 2, 99, -5])
    elif choice == 2:
        del m.opset_import[:]
    else:
        m.opset_import.append(helper.make_opsetid("", r.choice([11, 20])))  # duplicate default domain


def mut_external_data(r, m, case):
    t = _pick_init(r, m)
    if t is None:
        return
    raw = numpy_helper.to_array(t).tobytes()
    location = r.choice(["weights.bin", "../outside.bin", "/etc/hostname", "missing.bin", "sub/../../outside.bin",
                         "sub/w.bin", "link.bin", "weights.bin", "", "./weights.bin"])
    offset = r.choice([0, 0, 0, 3, len(raw) * 4, -1])
    length = r.choice([len(raw), len(raw), None, len(raw) + 8, 2**40])
    t.ClearField("float_data")
    t.ClearField("int64_data")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    entries = [("location", location), ("offset", str(offset))]
    if length is not None:
        entries.append(("length", str(length)))
    if r.random() < 0.1:
        entries.append(("checksum", "deadbeef"))
    for k, v in entries:
        t.external_data.add(key=k, value=v)
    blob = b"\0" * max(offset, 0) + raw
    case.side_files["weights.bin"] = blob
    case.side_files["sub/w.bin"] = blob
    case.outside_files["outside.bin"] = blob  # exists: reading it would be the traversal
    if location == "link.bin":
        case.side_files["link.bin"] = b"SYMLINK:../outside.bin"


def mut_graph_outputs(r, m, case):
    choice = r.randrange(3)
    if choice == 0:
        del m.graph.output[:]
    elif choice == 1:
        m.graph.output[0].name = "not_produced"
    else:
        m.graph.output.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, None))  # input as output


def mut_duplicate_input(r, m, case):
    if r.random() < 0.5:
        m.graph.input.append(m.graph.input[0])
    else:
        m.graph.input.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [1, 2]))


def mut_deep_chain(r, m, case):
    out = m.graph.output[0].name
    last = m.graph.node[-1]
    last.output[0] = "chain0"
    n = r.choice([300, 1500, 4000])
    for i in range(n):
        m.graph.node.append(helper.make_node(r.choice(["Relu", "Identity", "Neg"]), [f"chain{i}"],
                                             [out if i == n - 1 else f"chain{i + 1}"]))


def huge_tensor(name: str) -> TensorProto:
    """Declares 2⁴⁰ floats and holds none (onnx.helper refuses to build this; a file can hold it)."""
    t = TensorProto(name=name, data_type=TensorProto.FLOAT)
    t.dims.extend([2**20, 2**20])
    return t


def mut_huge_init_no_data(r, m, case):
    m.graph.initializer.append(huge_tensor("bomb"))
    n = _pick_node(r, m)
    n.input.append("bomb")


def mut_allocation_bomb(r, m, case):
    """A graph that *computes* a huge tensor: ConstantOfShape / Expand / Tile / Resize from constants."""
    shape = numpy_helper.from_array(np.array(r.choice([[100000, 100000], [1, 3, 60000, 60000], [2**31, 4]]),
                                             np.int64), "bomb_shape")
    m.graph.initializer.append(shape)
    kind = r.randrange(3)
    out = m.graph.output[0].name
    last = m.graph.node[-1]
    last.output[0] = "pre_bomb"
    if kind == 0:
        m.graph.node.append(helper.make_node("ConstantOfShape", ["bomb_shape"], ["big"],
                                             value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])))
    else:
        m.graph.node.append(helper.make_node("Expand", ["pre_bomb", "bomb_shape"], ["big"]))
    m.graph.node.append(helper.make_node("ReduceMean", ["big"], ["bm"], keepdims=0))
    m.graph.node.append(helper.make_node("Add", ["pre_bomb", "bm"], [out]))
    if kind == 2:  # huge MACs instead: a MatMul against a wide weight
        m.graph.initializer.append(helper.make_tensor("wide", TensorProto.FLOAT, [1, 1], [1.0]))


def mut_string_init(r, m, case):
    m.graph.initializer.append(helper.make_tensor("s", TensorProto.STRING, [2], [b"a", b"b"]))
    _pick_node(r, m).input.append("s")


def mut_subgraph(r, m, case):
    cond = numpy_helper.from_array(np.array(True), "cond")
    m.graph.initializer.append(cond)
    branch = helper.make_graph([helper.make_node("Relu", ["undefined_in_branch"], ["bo"])], "b", [],
                               [helper.make_tensor_value_info("bo", TensorProto.FLOAT, None)])
    out = m.graph.output[0].name
    m.graph.node[-1].output[0] = "pre_if"
    m.graph.node.append(helper.make_node("If", ["cond"], ["if_out"], then_branch=branch, else_branch=branch))
    m.graph.node.append(helper.make_node("Add", ["pre_if", "if_out"], [out]))


def mut_recursive_function(r, m, case):
    body = [helper.make_node("Rec", ["a"], ["b"], domain="local")]
    fn = helper.make_function("local", "Rec", ["a"], ["b"], body, [helper.make_opsetid("", OPSET),
                                                                   helper.make_opsetid("local", 1)])
    m.functions.append(fn)
    m.opset_import.append(helper.make_opsetid("local", 1))
    n = _pick_node(r, m)
    n.domain, n.op_type = "local", "Rec"
    del n.attribute[:]
    del n.input[1:]


def mut_names(r, m, case):
    """Hostile names: only the model *file* name may ever name an output, and it is sanitized."""
    m.graph.name = "../../../tmp/pwned"
    m.producer_name = "\0" * 3
    for n in m.graph.node:
        n.name = r.choice(["../x", "a/b", "\u202e", "x" * 5000, "", "con"])
    helper.set_model_props(m, {"name": "../../escape", "\0": "\0"})


def mut_rename_tensors(r, m, case):
    """Tensor names with spaces, slashes, unicode, or colliding with C/MIL identifiers: must stay legal."""
    new = r.choice(["in put", "a/b", "ä", "int", "0x", "x" * 300, "..", "main"])
    old = m.graph.input[0].name
    m.graph.input[0].name = new
    for n in m.graph.node:
        for i, name in enumerate(n.input):
            if name == old:
                n.input[i] = new


def mut_nan_weights(r, m, case):
    t = _pick_init(r, m)
    if t is not None and t.data_type == TensorProto.FLOAT:
        arr = numpy_helper.to_array(t).copy()
        arr.flat[r.randrange(max(1, arr.size))] = r.choice([np.nan, np.inf, -np.inf, 3e38])
        t.CopyFrom(numpy_helper.from_array(arr, t.name))


def _clear_output_shapes(m) -> None:
    """Re-derive the graph outputs' types after a shape-changing mutation (ONNX shape inference)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(m)
    del probe.graph.output[:]
    try:
        inferred = {vi.name: vi for vi in onnx.shape_inference.infer_shapes(probe).graph.value_info}
    except Exception:
        return
    for vi in m.graph.output:
        if vi.name in inferred:
            vi.type.CopyFrom(inferred[vi.name].type)


def mut_insert_op(r, m, case):
    """A *valid* extra op after a random tensor: reaches the passes, analysis and backends' coverage."""
    i = r.randrange(len(m.graph.node))
    node = m.graph.node[i]
    src = node.output[0]
    node.output[0] = src + "_pre"
    op, attrs, extra = r.choice([
        ("Sigmoid", {}, []), ("Tanh", {}, []), ("HardSwish", {}, []), ("HardSigmoid", {"alpha": 0.3}, []),
        ("Erf", {}, []), ("Abs", {}, []), ("Exp", {}, []), ("Softplus", {}, []), ("LeakyRelu", {"alpha": 0.1}, []),
        ("Softmax", {"axis": r.choice([0, 1, -1])}, []), ("Identity", {}, []), ("Dropout", {}, []),
        ("Cast", {"to": TensorProto.FLOAT}, []), ("Clip", {}, [("lo", -1.0), ("hi", 1.0)]),
        ("Mul", {}, [("k", 0.0)]), ("Div", {}, [("k", 0.0)]), ("Pow", {}, [("k", 0.5)]), ("Sqrt", {}, []),
        ("ReduceMean", {"axes": [r.choice([0, 1, -1])], "keepdims": 1}, []), ("Neg", {}, []),
        ("Transpose", {}, []), ("Flatten", {"axis": r.choice([0, 1, 2])}, []), ("Einsum", {"equation": "..."}, []),
    ])
    inputs = [src + "_pre"]
    for name, value in extra:
        m.graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), f"{name}{i}"))
        inputs.append(f"{name}{i}")
    if op == "Transpose":
        rank = len(m.graph.input[0].type.tensor_type.shape.dim)
        perm = list(range(rank))
        r.shuffle(perm)
        attrs = {"perm": perm}
    m.graph.node.insert(i + 1, helper.make_node(op, inputs, [src], **attrs))
    _clear_output_shapes(m)


def mut_graph_dtype(r, m, case):
    """The whole graph in float16 or float64: a valid model the float32 code paths may not expect."""
    elem = r.choice([TensorProto.FLOAT16, TensorProto.DOUBLE])
    np_type = onnx.helper.tensor_dtype_to_np_dtype(elem)
    for t in list(m.graph.initializer):
        arr = numpy_helper.to_array(t)
        if arr.dtype == np.float32:
            t.CopyFrom(numpy_helper.from_array(arr.astype(np_type), t.name))
    for vi in list(m.graph.input) + list(m.graph.output):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = elem


def mut_batch(r, m, case):
    _set_dim(m.graph.input[0].type.tensor_type.shape.dim[0], r.choice([2, 3, 16]))
    _clear_output_shapes(m)


def mut_opset_version(r, m, case):
    m.opset_import[0].version = r.choice([11, 13, 18, 20, 21, 23])
    if m.opset_import[0].version >= 21:
        m.ir_version = 10


MUTATIONS = {f.__name__[4:]: f for f in [
    mut_insert_op, mut_graph_dtype, mut_batch, mut_opset_version,
    mut_input_dtype, mut_init_dtype, mut_dangling_input, mut_cycle, mut_huge_dim, mut_zero_or_negative_dim,
    mut_unknown_op, mut_init_shape, mut_remove_init, mut_duplicate_output, mut_bad_attr, mut_opset,
    mut_external_data, mut_graph_outputs, mut_duplicate_input, mut_deep_chain, mut_huge_init_no_data,
    mut_allocation_bomb, mut_string_init, mut_subgraph, mut_recursive_function, mut_names,
    mut_rename_tensors, mut_nan_weights,
]}
BYTE_MUTATIONS = ["truncate", "bitflip", "garbage"]


def make_case(seed: int) -> Case:
    """The hostile input for `seed` (deterministic)."""
    r = random.Random(seed)
    base = r.choice(BASES)
    model = base(np.random.default_rng(seed))
    case = Case(seed, base.__name__, [])
    if base is base_dynamic and r.random() < 0.8:
        case.input_size = r.choice([(8, 8), (16, 12), (1, 1), (4096, 4096), (100000, 100000)])
    kind = r.random()
    if kind < 0.04:  # the untouched base: must come out "ok"
        case.mutations = ["none"]
    elif kind < 0.22:
        name = r.choice(BYTE_MUTATIONS)
        case.mutations = [name]
        data = model.SerializeToString()
        if name == "truncate":
            case.data = data[: r.randrange(len(data))]
        elif name == "bitflip":
            buf = bytearray(data)
            for _ in range(r.choice([1, 2, 8, 64])):
                buf[r.randrange(len(buf))] ^= 1 << r.randrange(8)
            case.data = bytes(buf)
        else:
            case.data = r.choice([b"", b"\0" * 100, os.urandom(0) + bytes(r.randrange(256) for _ in range(300)),
                                  b"ir_version: 8\ngraph { }", b'{"graph": []}', b"\x08\x08\x3a\x00",
                                  b"\x08" + b"\xff" * 20, b"\x0a\xff\xff\xff\xff\x0f"])
        return case
    else:
        picks = r.sample(sorted(MUTATIONS), r.choice([1, 1, 1, 2, 2, 3]))
        case.mutations = picks
        for name in picks:
            try:
                MUTATIONS[name](r, model, case)
            except Exception:  # a mutation that does not apply to this (already mutated) model: skip it
                pass
    case.data = model.SerializeToString()
    return case


def write_case(case: Case, folder: Path) -> Path:
    """Lay the case out on disk: folder/model/model.onnx (+ side files), folder/outside.bin."""
    model_dir = folder / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    for rel, blob in case.outside_files.items():
        (folder / rel).write_bytes(blob)
    for rel, blob in case.side_files.items():
        p = model_dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if blob.startswith(b"SYMLINK:"):
            p.symlink_to(blob[len(b"SYMLINK:"):].decode())
        else:
            p.write_bytes(blob)
    path = model_dir / "model.onnx"
    path.write_bytes(case.data)
    return path


# ------------------------------------------------------------------------------------------ the harness
def preload() -> None:
    """Import everything the workers use once, in the parent, so each fork starts warm."""
    import onnxruntime  # noqa: F401
    import onnxsim  # noqa: F401

    from edgevit import cli  # noqa: F401
    from edgevit.backends.coreml import lower  # noqa: F401
    from edgevit.backends.tvm import adapter  # noqa: F401
    from edgevit.ir import analysis  # noqa: F401
    from edgevit.passes import pipeline  # noqa: F401
    from edgevit.quant import graph  # noqa: F401


def exercise(path: Path, input_size: tuple[int, int] | None = None) -> dict:
    """What `edgevit optimize/compile` do with a user's ONNX, up to each backend's op-coverage check."""
    from types import SimpleNamespace

    import onnx.inliner

    from edgevit import cli
    from edgevit.backends.coreml import lower as coreml_lower
    from edgevit.backends.tvm import _constants_as_tensors, _tensor_specs
    from edgevit.backends.tvm import adapter
    from edgevit.ir.analysis import analyze
    from edgevit.passes import pipeline
    from edgevit.quant import graph as qgraph

    result = {"stage": "load"}
    _, model = cli._load_for_analysis(SimpleNamespace(model=str(path), input_size=input_size, batch=None))
    result["stage"] = "analyze"
    analyze(model)
    result["stage"] = "passes"
    optimized, _ = pipeline.run(model, samples=1)
    result["stage"] = "coverage"
    inlined = onnx.inliner.inline_local_functions(optimized)
    _constants_as_tensors(inlined)
    _tensor_specs(inlined)
    result["tvm_unsupported"] = adapter.unsupported_ops(inlined)
    result["coreml_unsupported"] = [op for op, _ in coreml_lower.unsupported(optimized)]
    try:
        qgraph.from_onnx(optimized)
        result["mcu"] = "ok"
    except Exception as exc:
        from edgevit.errors import EdgevitError

        if not isinstance(exc, EdgevitError):
            raise
        result["mcu"] = f"refused: {exc}"
    result["stage"] = "done"
    return result


def _child(path: Path, input_size, write_fd: int, mem_bytes: int) -> None:
    from edgevit.errors import EdgevitError

    if mem_bytes:
        soft = _vm_size() + mem_bytes
        resource.setrlimit(resource.RLIMIT_AS, (soft, soft))
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        out = {"outcome": "ok", **exercise(path, input_size)}
    except EdgevitError as exc:
        msg = str(exc)
        out = {"outcome": "error", "message": msg, "one_line": "\n" not in msg.strip() and bool(msg.strip())}
    except BaseException as exc:  # noqa: BLE001 — everything else is what we are looking for
        tb = traceback.extract_tb(exc.__traceback__)
        frames = [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in tb[-4:]]
        out = {"outcome": "bug", "message": f"{type(exc).__name__}: {str(exc)[:300]}", "frames": frames}
    os.write(write_fd, json.dumps(out, default=str).encode())
    os.close(write_fd)


def _vm_size() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def run_case(case: Case, timeout: float = 20.0, mem_bytes: int = 3 << 30) -> dict:
    """Run one case in a forked worker; returns {"outcome", "message", ...} plus the case's identity."""
    with tempfile.TemporaryDirectory(prefix="edgevit-fuzz-") as tmp:
        path = write_case(case, Path(tmp))
        read_fd, write_fd = os.pipe()
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(read_fd)
            try:
                os.setpgid(0, 0)
                _child(path, case.input_size, write_fd, mem_bytes)
            finally:
                os._exit(0)
        os.close(write_fd)
        chunks = []
        os.set_blocking(read_fd, False)
        status = None
        while True:
            try:
                chunk = os.read(read_fd, 65536)
                if chunk:
                    chunks.append(chunk)
            except BlockingIOError:
                pass
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() - start > timeout:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.waitpid(pid, 0)
                status = None
                break
            time.sleep(0.01)
        try:
            while chunk := os.read(read_fd, 65536):
                chunks.append(chunk)
        except BlockingIOError:
            pass
        os.close(read_fd)
        seconds = round(time.monotonic() - start, 2)
        leftovers = sorted(str(p.relative_to(tmp)) for p in Path(tmp).rglob("*")
                           if p.name.endswith((".part", ".old")))
    ident = {"seed": case.seed, "base": case.base, "mutations": case.mutations, "seconds": seconds}
    if status is None:
        return {"outcome": "hang", **ident}
    if os.WIFSIGNALED(status):
        return {"outcome": "crash", "message": f"signal {os.WTERMSIG(status)}", **ident}
    try:
        out = json.loads(b"".join(chunks).decode())
    except ValueError:
        return {"outcome": "crash", "message": f"worker exited {os.WEXITSTATUS(status)} without a result", **ident}
    if leftovers:
        out = {**out, "outcome": "bug", "message": f"left temporary files: {leftovers}"}
    return {**out, **ident}
