"""iPhone latency *predictor* (Linux): an analytical per-op model of Core ML on the Neural Engine.

Real iPhone timing needs macOS + a device (edgevit.backends.coreml.macos). Everywhere else `edgevit bench
--target iphoneNN` reports a **prediction**, always labelled so, from this model:

Graph. The optimized ONNX graph (after edgevit's pass pipeline: BN folded, branches reparameterized,
attention fused) is cut into *kernels* the way Core ML / the Neural Engine (ANE) executes it: an elementwise
activation or a scale/bias by a constant whose input has no other consumer is fused into the kernel that
produced it (conv+bias+ReLU is one ANE op); reshapes that keep the last axis, squeeze/unsqueeze/identity
are free views; everything else (conv, matmul, norm, pool, residual add, transpose, concat…) is one kernel;
fused attention is three (QKᵀ, softmax, ·V) and moves its score tensor four times.

Per kernel (roofline + dispatch):   t = max(MACs / C,  W / B_dram + A / B) + n · d
  W     = fp16 weight bytes, streamed from DRAM at the chip's published LPDDR peak B_dram every inference
          (fixed, not fitted: the calibration models' weights, 4–160 MB, do not stay on chip);
  A     = fp16 input + output activation bytes, each activation's last axis padded to 64 bytes (ANE buffer
          rule, Apple "Deploying Transformers on the ANE", principle 1), moved at an effective on-chip rate B;
  n     = Core ML layers in the kernel (1, or 3 for attention).
Kernels expected *off* the ANE (rules mirroring edgevit/backends/coreml/ane.py on ONNX ops: gather with
non-constant indices, dilated conv, RNNs/control flow, TopK/NMS/scatter, rank > 5, integer outputs) cost
NON_ANE_SLOWDOWN × their roofline time, and each contiguous run of them costs SWITCH_S for the hand-over.
Total = T0 + Σ kernels + Σ switches.

Free parameters (4, fitted for the A14 in log space, bounded to physically possible values):
  C  — effective ANE compute rate, MAC/s        (≤ the A14's 11 TOPS = 5.5 T MAC/s)
  B  — effective activation bandwidth, bytes/s   (5…1000 GB/s: on-chip buffers/caches)
  d  — per-layer dispatch overhead, s            (0…100 µs)
  T0 — fixed per-inference overhead, s           (0…1 ms)
NON_ANE_SLOWDOWN and SWITCH_S are priors (no calibration row has an op off the ANE), not fitted.

Calibration: ONLY the rows of ../shared/data/iphone_latency_calibration.csv (published iPhone 12 / 12 Pro
Core ML latencies). Leave-one-out: refit without each row and predict it. Uncertainty band: the prediction
× exp(± the RMS of the LOO log-residuals) — the spread of errors on models the fit did not see.
Other chips (iphone13/14/15): C and B scaled by the chip's published Neural-Engine TOPS over the A14's,
B_dram = the chip's LPDDR peak, d and T0 unchanged (iphone_devices.toml); their predictions carry the same
band and no device-specific validation.

Structure choices were compared by leave-one-out error on the same 9 rows (one bandwidth for all bytes:
13 % mean; weights at the DRAM peak + activations on chip: 10 %); no other published number was used.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import math
import os
import tomllib
from pathlib import Path

import numpy as np
import onnx

from ..errors import EdgevitError

HERE = Path(__file__).resolve().parent
DEVICES_FILE = HERE / "iphone_devices.toml"
CALIBRATION_FILE = HERE / "iphone_calibration.json"  # shipped: CSV rows + their graph features + fit + LOO
FEATURE_VERSION = 4  # bump when kernel extraction changes (invalidates caches and the shipped features)

NON_ANE_SLOWDOWN = 3.0  # prior: an op on GPU/CPU takes 3× its ANE roofline time (not fitted)
SWITCH_S = 0.1e-3  # prior: 0.1 ms per hand-over ANE → GPU/CPU → ANE (not fitted)
PARAM_NAMES = ("compute_macs_per_s", "activation_bytes_per_s", "per_layer_s", "fixed_s")
A14_PEAK_MACS = 11e12 / 2
A14_DRAM = 34.1e9  # bytes/s, LPDDR4X-4266 × 64 bit (iphone_devices.toml)
BOUNDS = ((0.05e12, A14_PEAK_MACS), (5e9, 1000e9), (0.0, 100e-6), (0.0, 1e-3))

FP16 = 2
FREE = {"Identity", "Squeeze", "Unsqueeze", "Flatten", "Dropout", "Constant", "Shape", "Cast", "CastLike"}
UNARY_FUSABLE = {"Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Gelu", "LeakyRelu", "Elu",
                 "Selu", "Softplus", "Mish", "Erf", "Sqrt", "Neg", "Abs", "Exp"}
BINARY_FUSABLE = {"Add", "Mul", "Sub", "Div", "PRelu"}  # fused when the other operand is a constant
UNSUPPORTED = {"GatherElements", "GatherND", "LSTM", "GRU", "RNN", "Loop", "If", "Scan", "TopK",
               "NonMaxSuppression", "NonZero", "ScatterND", "ScatterElements", "Unique", "ArgMax", "ArgMin"}
FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}


# ------------------------------------------------------------------------------------------- kernels
def _ane_bytes(shape: list[int] | None) -> int:
    """fp16 bytes of an activation in an ANE buffer: the last axis is padded to 64 bytes."""
    if not shape:
        return FP16 if shape == [] else 0
    last = int(shape[-1]) * FP16
    return int(math.prod(shape[:-1])) * (-(-last // 64) * 64)


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def with_runtime_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """The shape-inferred model; where ONNX inference leaves a value's shape open (shape arithmetic it cannot
    evaluate, e.g. Swin's window padding), run the graph once in onnxruntime and record the real shapes.
    Stripped weights (strip_weights) are fed as zeros: only shapes are read."""
    from ..ir import graph as G

    inferred = G.infer_shapes(model)
    graph = inferred.graph
    known = {vi.name for vi in list(graph.input) + list(graph.value_info) + list(graph.output)
             if all(isinstance(d, int) for d in G.value_shape(vi)) and vi.type.tensor_type.HasField("shape")}
    known |= {t.name for t in graph.initializer}
    missing = [o for n in graph.node if n.op_type != "Constant" for o in n.output if o and o not in known]
    if not missing:
        return inferred
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(inferred)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(o) for o in missing)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception:
        return inferred  # cannot run it: keep the partial shapes
    feeds = {}
    inits = {t.name for t in graph.initializer}
    for vi in graph.input:
        if vi.name in inits:
            continue
        dims = [int(d) for d in G.value_shape(vi)]
        feeds[vi.name] = np.zeros(dims, dtype=G.ONNX_TO_NUMPY.get(vi.type.tensor_type.elem_type, np.float32))
    try:
        values = session.run(missing, feeds)
    except Exception:
        return inferred
    numpy_to_onnx = {np.dtype(v): k for k, v in G.ONNX_TO_NUMPY.items()}
    for name, value in zip(missing, values):
        value = np.asarray(value)
        inferred.graph.value_info.append(onnx.helper.make_tensor_value_info(
            name, numpy_to_onnx.get(value.dtype, onnx.TensorProto.FLOAT), list(value.shape)))
    return inferred


def kernels(model: onnx.ModelProto) -> list[dict]:
    """The graph as Core ML/ANE kernels: name, op (+fused ops), MACs, weight/activation bytes, layers, ANE verdict."""
    from ..ir import graph as G
    from ..ir.analysis import node_macs

    inferred = with_runtime_shapes(model)
    graph = inferred.graph
    consts = {i.name for i in graph.initializer}
    const_shapes = {i.name: list(i.dims) for i in graph.initializer}
    meta = {p.key: p.value for p in model.metadata_props}
    for name in json.loads(meta.get("edgevit_weights", "[]")):  # a strip_weights() graph: shaped inputs
        vi = next(v for v in graph.input if v.name == name)
        consts.add(name)
        const_shapes[name] = [int(d) for d in G.value_shape(vi)]
    for node in graph.node:
        if node.op_type == "Constant":
            consts.update(node.output)
            t = node.attribute[0].t if node.attribute and node.attribute[0].type == onnx.AttributeProto.TENSOR else None
            if t is not None:
                const_shapes[node.output[0]] = list(t.dims)
    shapes, dtypes = dict(const_shapes), {}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        dims = G.value_shape(vi)
        if all(isinstance(d, int) for d in dims):
            shapes[vi.name] = [int(d) for d in dims]
        dtypes[vi.name] = vi.type.tensor_type.elem_type
    consumers: dict[str, int] = {}
    for node in graph.node:
        for x in node.input:
            consumers[x] = consumers.get(x, 0) + 1
    for o in graph.output:
        consumers[o.name] = consumers.get(o.name, 0) + 1

    out: list[dict] = []
    producer: dict[str, int] = {}  # tensor → index of the kernel that writes it (views alias their input)
    for i, node in enumerate(graph.node):
        op = node.op_type
        acts = [x for x in node.input if x and x not in consts]
        if op == "Constant" or not node.output:
            continue
        integer = all(o in dtypes and dtypes[o] not in FLOAT_TYPES for o in node.output if o)
        if not acts or (integer and op not in UNSUPPORTED):
            # computed from constants only, or shape arithmetic on static shapes: Core ML folds it at conversion
            consts.update(node.output)
            const_shapes.update({o: shapes.get(o, [1]) for o in node.output})
            continue
        if op in FREE or (op == "Reshape" and acts and shapes.get(acts[0]) and shapes.get(node.output[0])
                          and shapes[acts[0]][-1] == shapes[node.output[0]][-1]):
            if acts and acts[0] in producer:
                producer[node.output[0]] = producer[acts[0]]
            continue
        fusable = (op in UNARY_FUSABLE or (node.domain == "edgevit" and op == "Gelu")
                   or (op in BINARY_FUSABLE and len(acts) == 1))
        if fusable and len(acts) == 1 and acts[0] in producer and consumers.get(acts[0], 0) == 1:
            k = out[producer[acts[0]]]
            k["fused"].append(op)
            k["w_bytes"] += sum(int(math.prod(const_shapes.get(x, [1]))) * FP16 for x in node.input if x in consts)
            k["out_bytes"] = sum(_ane_bytes(shapes.get(o)) for o in node.output)
            producer[node.output[0]] = producer[acts[0]]
            continue
        reasons = []
        if op in UNSUPPORTED or (op == "Gather" and not (len(node.input) > 1 and node.input[1] in consts
                                                      and const_shapes.get(node.input[1], [0]) == [])):
            reasons.append("unsupported-op")
        if op == "Conv" and any(int(d) != 1 for d in (_attr(node, "dilations") or [1])):
            reasons.append("unsupported-op")
        if any(len(shapes.get(o, [])) > 5 for o in node.output):
            reasons.append("rank>5")
        if any(o in dtypes and dtypes[o] not in FLOAT_TYPES for o in node.output):
            reasons.append("integer-or-string")
        macs = node_macs(node, shapes)
        w_bytes = sum(int(math.prod(const_shapes.get(x, [1]))) * FP16 for x in node.input if x in consts)
        in_bytes = sum(_ane_bytes(shapes.get(x)) for x in acts)
        layers, extra, cin_g = 1, 0, 0
        if op == "Conv" and len(node.input) > 1 and node.input[1] in const_shapes:
            cin_g = int(const_shapes[node.input[1]][1])  # input channels per group (1: depthwise)
        if op == "Attention" and node.domain == "edgevit" and len(node.input) > 1:
            q, kt = shapes.get(node.input[0]), shapes.get(node.input[1])
            if q and kt:
                scores = list(q[:-1]) + [kt[-1]]
                extra = 4 * _ane_bytes(scores)  # QKᵀ writes, softmax reads + writes, ·V reads
            layers = 3
        out.append({"name": node.name or f"{op}_{i}", "op": op if not node.domain or node.domain == "ai.onnx"
                    else f"{node.domain}.{op}", "fused": [], "macs": int(macs), "w_bytes": int(w_bytes),
                    "in_bytes": int(in_bytes + extra), "out_bytes": sum(_ane_bytes(shapes.get(o)) for o in node.output),
                    "layers": layers, "cin_per_group": cin_g, "ane": not reasons, "reasons": reasons})
        for o in node.output:
            producer[o] = len(out) - 1
    return out


def compact(ks: list[dict]) -> dict:
    """Array form of kernels for fitting (and the shipped calibration file)."""
    return {"macs": [k["macs"] for k in ks], "w": [k["w_bytes"] for k in ks], "a": [k["in_bytes"] + k["out_bytes"] for k in ks],
            "layers": [k["layers"] for k in ks], "ane": [int(k["ane"]) for k in ks]}


# ---------------------------------------------------------------------------------------------- model
def kernel_times(feat: dict, params, dram: float = A14_DRAM) -> np.ndarray:
    """Seconds per kernel for parameters (C, B, d, T0) and DRAM peak `dram`; T0 and switches: `predict_s`."""
    c, b, d, _ = params
    macs, w, a = (np.asarray(feat[k], float) for k in ("macs", "w", "a"))
    layers, ane = np.asarray(feat["layers"], float), np.asarray(feat["ane"], bool)
    t = np.maximum(macs / c, w / dram + a / b)
    t = np.where(ane, t, t * NON_ANE_SLOWDOWN)
    return t + layers * d


def switches(feat: dict) -> int:
    ane = list(feat["ane"])
    return sum(1 for i, a in enumerate(ane) if not a and (i == 0 or ane[i - 1]))


def predict_s(feat: dict, params, dram: float = A14_DRAM) -> float:
    return float(params[3] + kernel_times(feat, params, dram).sum() + switches(feat) * SWITCH_S)


def _to_x(params):  # optimizer space: logs of C and B, d in µs, T0 in ms
    return np.array([math.log(params[0]), math.log(params[1]), params[2] * 1e6, params[3] * 1e3])


def _from_x(x):
    return (math.exp(x[0]), math.exp(x[1]), x[2] * 1e-6, x[3] * 1e-3)


def fit(rows: list[dict]) -> tuple[float, ...]:
    """Least squares on log latency over `rows` ({features, latency_ms}), from a grid of starts, within BOUNDS."""
    from scipy.optimize import least_squares

    lo = _to_x([b[0] for b in BOUNDS])
    hi = _to_x([b[1] for b in BOUNDS])
    ys = np.log([r["latency_ms"] * 1e-3 for r in rows])

    def residuals(x):
        p = _from_x(x)
        return np.log([predict_s(r["features"], p) for r in rows]) - ys

    best = None
    for c in (0.5e12, 4e12):
        for b in (30e9, 300e9):
            for d in (2e-6, 20e-6):
                x0 = np.clip(_to_x((c, b, d, 0.2e-3)), lo + 1e-9, hi - 1e-9)
                res = least_squares(residuals, x0, bounds=(lo, hi), method="trf", x_scale="jac")
                if best is None or res.cost < best.cost:
                    best = res
    return _from_x(best.x)


def leave_one_out(rows: list[dict]) -> list[dict]:
    out = []
    for i, r in enumerate(rows):
        params = fit(rows[:i] + rows[i + 1:])
        pred = predict_s(r["features"], params) * 1e3
        out.append({"model": r["timm_name"], "device": r["device"], "measured_ms": r["latency_ms"],
                    "loo_predicted_ms": round(pred, 4), "error_pct": round(100 * (pred - r["latency_ms"]) / r["latency_ms"], 2),
                    "log_residual": math.log(pred / r["latency_ms"])})
    return out


# ------------------------------------------------------------------------------------- calibration data
def calibration_csv() -> Path:
    env = os.environ.get("EDGEVIT_IPHONE_CALIBRATION")
    if env:
        return Path(env)
    return HERE.parents[2] / "shared" / "data" / "iphone_latency_calibration.csv"


def read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        raise EdgevitError(f"{path}: calibration CSV not found (set EDGEVIT_IPHONE_CALIBRATION)")
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    header = "timm_name,input_res,device,latency_ms,params_m,gmacs,top1,source".split(",")
    rows = []
    for rec in csv.reader(lines):
        if rec[0] == "timm_name":
            continue
        row = dict(zip(header, rec))
        row["input_res"], row["latency_ms"] = int(row["input_res"]), float(row["latency_ms"])
        row["top1"] = float(row["top1"]) if row.get("top1") else None
        rows.append(row)
    return rows


class _TimmSource:
    """A timm architecture outside the zoo (e.g. mobilenetv2_140), random init, as a ModelSource look-alike."""

    kind, is_torch, path, factory = "python", True, None, None

    def __init__(self, name: str):
        self.name = self.spec = name

    def default_input_size(self):
        return (224, 224)

    def torch_module(self, input_size):
        import timm
        import torch

        from .. import zoo

        torch.manual_seed(0)
        try:
            model = timm.create_model(self.name, pretrained=False)
        except Exception as exc:
            raise EdgevitError(f"timm has no model '{self.name}': {exc}") from None
        return zoo.make_nondegenerate(model, tuple(input_size))


def optimized_graph(name: str, input_size: tuple[int, int] | None = None) -> onnx.ModelProto:
    """Export (zoo name, else a timm name) and run the pass pipeline: the graph the predictor analyses."""
    from .. import zoo
    from ..frontend.export import export
    from ..frontend.source import ModelSource
    from ..passes import pipeline

    source = ModelSource("zoo", name, name) if name in zoo.entries() else _TimmSource(name)
    result = export(source, input_size, 1, samples=1)
    optimized, _ = pipeline.run(result.model, pipeline.select(), samples=1)
    return optimized


def _versions_key() -> str:
    import timm
    import torch

    from .. import __version__

    return f"edgevit{__version__}|timm{timm.__version__}|torch{torch.__version__}|onnx{onnx.__version__}"


def strip_weights(model: onnx.ModelProto, keep: int = 1024) -> onnx.ModelProto:
    """The graph with large initializers turned into shaped graph inputs named in `edgevit_weights` metadata:
    all `kernels()` needs (shapes), at a fraction of the size, so analysed graphs can be cached cheaply."""
    from ..ir import graph as G

    stripped = onnx.ModelProto()
    stripped.CopyFrom(G.infer_shapes(model))
    graph = stripped.graph
    big = [t for t in graph.initializer if math.prod(t.dims) > keep]
    names = []
    for t in big:
        graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        names.append(t.name)
        graph.initializer.remove(t)
    stripped.metadata_props.add(key="edgevit_weights", value=json.dumps(names))
    return stripped


def cached_graph(name: str, input_size: tuple[int, int]) -> onnx.ModelProto:
    """The optimized graph of a zoo/timm model (weights stripped), cached on disk per (model, size, versions)."""
    from .. import zoo

    folder = zoo._cache_dir() / "iphone_graphs"
    folder.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(_versions_key().encode()).hexdigest()[:12]
    path = folder / f"{name}-{input_size[0]}x{input_size[1]}-{key}.onnx"
    if path.is_file():
        try:
            return onnx.load(str(path))
        except Exception:
            pass  # unreadable cache entry: rebuild it
    model = strip_weights(optimized_graph(name, input_size))
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)
    return model


def cached_kernels(name: str, input_size: tuple[int, int]) -> list[dict]:
    return kernels(cached_graph(name, input_size))


def build_calibration(csv_path: Path | None = None) -> dict:
    """Rows of the CSV with their graph features, the A14 fit and the LOO table (what CALIBRATION_FILE holds)."""
    from .. import ui

    csv_path = csv_path or calibration_csv()
    rows = read_csv(csv_path)
    for r in ui.track(rows, "calibration graphs"):
        ks = cached_kernels(r["timm_name"], (r["input_res"], r["input_res"]))
        r["features"] = compact(ks)
        r["graph_gmacs"] = round(sum(k["macs"] for k in ks) / 1e9, 3)
        r["kernels"] = len(ks)
    return finish_calibration(rows, csv_path)


def finish_calibration(rows: list[dict], csv_path: Path | str) -> dict:
    params = fit(rows)
    loo = leave_one_out(rows)
    sigma = math.sqrt(sum(x["log_residual"] ** 2 for x in loo) / len(loo))
    fitted = [predict_s(r["features"], params) * 1e3 for r in rows]
    return {
        "feature_version": FEATURE_VERSION,
        "csv": os.path.relpath(csv_path, HERE.parents[1]), "csv_sha256": hashlib.sha256(Path(csv_path).read_bytes()).hexdigest()
        if Path(csv_path).is_file() else None,
        "chip": "A14",
        "params": dict(zip(PARAM_NAMES, params)),
        "priors": {"non_ane_slowdown": NON_ANE_SLOWDOWN, "switch_s": SWITCH_S},
        "bounds": dict(zip(PARAM_NAMES, BOUNDS)),
        "fit_error_pct": [round(100 * (f - r["latency_ms"]) / r["latency_ms"], 2) for f, r in zip(fitted, rows)],
        "loo": loo,
        "loo_mape_pct": round(sum(abs(x["error_pct"]) for x in loo) / len(loo), 2),
        "loo_max_abs_pct": round(max(abs(x["error_pct"]) for x in loo), 2),
        "loo_log_rms": round(sigma, 4),
        "band": f"prediction × exp(±{sigma:.3f}) = −{100 * (1 - math.exp(-sigma)):.0f} % / "
                f"+{100 * (math.exp(sigma) - 1):.0f} % (RMS of the leave-one-out log-residuals)",
        "rows": [{k: r[k] for k in ("timm_name", "input_res", "device", "latency_ms", "gmacs", "top1", "source",
                                    "graph_gmacs", "kernels", "features")} for r in rows],
    }


@functools.cache
def calibration() -> dict:
    """The shipped calibration (fit + LOO). Refit with `python -m edgevit.bench.iphone --calibrate`."""
    if not CALIBRATION_FILE.is_file():
        raise EdgevitError(f"{CALIBRATION_FILE} is missing: run `python -m edgevit.bench.iphone --calibrate`")
    data = json.loads(CALIBRATION_FILE.read_text())
    if data.get("feature_version") != FEATURE_VERSION:
        raise EdgevitError(f"{CALIBRATION_FILE} is stale (features v{data.get('feature_version')}, code "
                           f"v{FEATURE_VERSION}): run `python -m edgevit.bench.iphone --calibrate`")
    return data


# --------------------------------------------------------------------------------------------- devices
@functools.cache
def devices() -> dict:
    return tomllib.loads(DEVICES_FILE.read_text())


def chip_params(chip: str) -> tuple[tuple[float, ...], float]:
    """(C, B, d, T0), B_dram for `chip`: the A14 fit, C and B scaled by published Neural-Engine fp16 TOPS,
    B_dram = the chip's LPDDR peak."""
    chips = devices()["chips"]
    if chip not in chips:
        raise EdgevitError(f"no predictor parameters for chip '{chip}' (edit {DEVICES_FILE})")
    base, dev, p = chips[calibration()["chip"]], chips[chip], calibration()["params"]
    scale = dev["fp16_tops"] / base["fp16_tops"]
    return ((p["compute_macs_per_s"] * scale, p["activation_bytes_per_s"] * scale, p["per_layer_s"], p["fixed_s"]),
            dev["dram_gbps"] * 1e9)


def target_device(target_name: str) -> dict:
    table = devices()["targets"]
    if target_name not in table:
        raise EdgevitError(f"target {target_name} has no predictor entry in {DEVICES_FILE}")
    return table[target_name]


def predict(ks: list[dict], target_name: str) -> dict:
    """Predicted latency (ms) of kernels `ks` on `target_name`, with the LOO band and per-kernel times."""
    dev = target_device(target_name)
    cal = calibration()
    sigma = cal["loo_log_rms"]
    feat = compact(ks)
    params, dram = chip_params(dev["chip"])
    per = kernel_times(feat, params, dram)
    total = predict_s(feat, params, dram) * 1e3
    variants = {}
    for chip in dev.get("variants", []):
        variants[chip] = round(predict_s(feat, *chip_params(chip)) * 1e3, 4)
    return {"predicted_ms": round(total, 4), "band_ms": [round(total * math.exp(-sigma), 4), round(total * math.exp(sigma), 4)],
            "chip": dev["chip"], "variants_ms": variants, "params": {**dict(zip(PARAM_NAMES, params)),
                                                                     "dram_bytes_per_s": dram},
            "per_kernel_ms": [float(t) * 1e3 for t in per], "fixed_ms": params[3] * 1e3,
            "switch_ms": switches(feat) * SWITCH_S * 1e3, "off_ane_kernels": int(sum(1 for k in ks if not k["ane"]))}


def _main(argv=None) -> int:
    import argparse

    from ..artifacts import write_text_atomic

    ap = argparse.ArgumentParser(prog="python -m edgevit.bench.iphone", description=__doc__.splitlines()[0])
    ap.add_argument("--calibrate", action="store_true", help=f"rebuild {CALIBRATION_FILE.name} from the CSV")
    ap.add_argument("--csv", help="calibration CSV (default: ../shared/data/iphone_latency_calibration.csv)")
    args = ap.parse_args(argv)
    if args.calibrate:
        data = build_calibration(Path(args.csv) if args.csv else None)
        write_text_atomic(CALIBRATION_FILE, json.dumps(data, indent=1) + "\n")
    cal = json.loads(CALIBRATION_FILE.read_text())
    print(json.dumps({k: cal[k] for k in ("params", "fit_error_pct", "loo_mape_pct", "loo_max_abs_pct", "band")}, indent=1))
    for x in cal["loo"]:
        print(f"  {x['model']:20s} measured {x['measured_ms']:6.2f} ms  LOO predicted {x['loo_predicted_ms']:6.2f} ms  "
              f"({x['error_pct']:+.1f} %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
