"""`quantize_model` (API) and `run_quantize` (what `edgevit quantize` writes).

Pipeline: ONNX → lower (graph.py) → calibrate in onnxruntime (calibrate.py) → integer model
(quantize.py) → reference executor (reference.py) / QDQ ONNX (qdq.py). Quantization happens after
the pass pipeline, on its fused graph: fused ops are lowered back to primitives first, so both forms
are handled.

Output folder (`run_quantize`): `<name>.int8.npz` + `<name>.int8.json` (the integer model the C
generator consumes), `<name>.qdq.onnx` (onnxruntime cross-check), `<name>.quantize.json/.md` (per-layer
scale, zero point, calibrated range, clipped fraction, SQNR and max error vs fp32; end-to-end top-1
agreement with fp32 and the QDQ-vs-reference difference).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from .. import ui
from ..artifacts import atomic_dir, md_table, write_report
from ..errors import EdgevitError
from ..ir.numerics import ort_session
from . import graph as fgraph
from .calibrate import METHODS, load_calibration, observe
from .qdq import to_qdq
from .quantize import quantize_graph
from .reference import QuantizedModel

REPORT_SAMPLES = 8  # calibration samples the per-layer errors are measured on
_MOVES = {"reshape", "transpose", "gather", "slice", "split", "concat", "maxpool"}


def quantize_model(onnx_model: onnx.ModelProto, calib: str | Path | np.ndarray | None = None,
                   method: str = "minmax") -> QuantizedModel:
    """Post-training int8 quantization of a static-shape ONNX model (see module docstrings)."""
    if method not in METHODS:
        raise EdgevitError(f"unknown calibration method '{method}' (choose from {', '.join(METHODS)})")
    graph = fgraph.from_onnx(onnx_model)
    if isinstance(calib, np.ndarray):
        data, where = calib.astype(np.float32), f"array ({len(calib)} samples)"
    else:
        data, where = load_calibration(calib, graph.input_shape)
    observers, shapes = observe(graph, data)
    qmodel, qdq_consts = quantize_graph(graph, observers, shapes, method)
    qmodel.float_graph, qmodel.qdq_consts, qmodel.observers = graph, qdq_consts, observers
    qmodel.calibration, qmodel.calibration_data = f"{where}; method {method}", data
    return qmodel


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    noise = float(np.mean((ref.astype(np.float64) - got) ** 2))
    signal = float(np.mean(ref.astype(np.float64) ** 2))
    return float("inf") if noise == 0 else round(10 * np.log10(max(signal, 1e-30) / noise), 2)


def layer_report(qmodel: QuantizedModel, data: np.ndarray) -> list[dict]:
    """Per quantized tensor: parameters, calibrated range, clipping, and error vs fp32 on `data`."""
    graph = qmodel.float_graph
    names = [t for n in qmodel.nodes if n.op not in _MOVES for t in n.outputs if t in qmodel.observers]
    session = ort_session(fgraph.to_onnx(graph, outputs=names))
    floats: dict[str, list] = {t: [] for t in names}
    ints: dict[str, list] = {t: [] for t in names}
    for x in data:
        x = x[None]
        for t, v in zip(names, session.run(names, {graph.input: x})):
            floats[t].append(v)
        env = qmodel.run(qmodel.quantize_input(x), keep=True)
        for t in names:
            ints[t].append(qmodel.tensors[t].dequantize(env[t]))
    op_of = {t: n for n in qmodel.nodes for t in n.outputs}
    rows = []
    for t in names:
        ref, got = np.concatenate(floats[t]), np.concatenate(ints[t])
        qp, obs = qmodel.tensors[t], qmodel.observers[t]
        lo, hi = qp.range
        values = obs.values()
        rows.append({
            "tensor": t, "op": op_of[t].op, "node": op_of[t].name, "scale": qp.scale, "zero_point": qp.zero_point,
            "calibrated_min": obs.lo, "calibrated_max": obs.hi,
            "clipped_fraction": float(np.mean((values < lo - qp.scale / 2) | (values > hi + qp.scale / 2))),
            "sqnr_db": sqnr_db(ref, got), "max_abs_error": float(np.max(np.abs(ref - got))),
            "max_error_lsb": float(np.max(np.abs(ref - got)) / qp.scale),
        })
    return rows


def cross_check(qmodel: QuantizedModel, qdq_model: onnx.ModelProto, data: np.ndarray) -> dict:
    """fp32 (onnxruntime) vs int8 reference vs QDQ (onnxruntime) on the first output."""
    graph = qmodel.float_graph
    fp32, qdq = ort_session(fgraph.to_onnx(graph)), ort_session(qdq_model)
    out = qmodel.outputs[0]
    agree = qdq_agree = 0
    worst_lsb, errors = 0.0, []
    for x in data:
        x = x[None]
        ref = fp32.run(None, {graph.input: x})[0]
        got = qmodel.run_float(x)[0]
        via_ort = qdq.run(None, {graph.input: x})[0]
        agree += int(np.argmax(ref) == np.argmax(got))
        qdq_agree += int(np.argmax(via_ort) == np.argmax(got))
        worst_lsb = max(worst_lsb, float(np.max(np.abs(via_ort - got)) / qmodel.tensors[out].scale))
        errors.append(np.max(np.abs(ref - got)) / (np.ptp(ref) or 1.0))
    n = len(data)
    return {"samples": n, "top1_agreement_int8_vs_fp32": agree / n, "top1_agreement_qdq_vs_int8": qdq_agree / n,
            "max_output_diff_qdq_vs_int8_lsb": round(worst_lsb, 2),
            "max_output_error_int8_vs_fp32_rel_range": float(np.max(errors))}


def run_quantize(model_spec: str, output_dir: Path, calib: str | None, method: str,
                 input_size: tuple | None) -> dict:
    """Export (zoo name / file.py:factory / .onnx), optimize, quantize and write the output folder."""
    from ..frontend.export import export
    from ..frontend.source import resolve
    from ..passes import pipeline

    source = resolve(model_spec)
    model = export(source, tuple(input_size) if input_size else None, samples=1).model
    model, report = pipeline.run(model)
    passes_note = ", ".join(p.name for p in report.passes if p.status == "applied") or "none applied"
    with ui.step(f"calibrate and quantize ({method})"):
        qmodel = quantize_model(model, calib, method)
    qdq_model = to_qdq(qmodel.float_graph, qmodel, qmodel.qdq_consts)
    data = qmodel.calibration_data[:REPORT_SAMPLES]
    with ui.step("measure per-layer error and cross-check QDQ in onnxruntime"):
        layers = layer_report(qmodel, data)
        check = cross_check(qmodel, qdq_model, data)
    output_dir = Path(output_dir)
    stem = source.name
    weights = sum(v.nbytes for n in qmodel.nodes for k, v in n.params.items())
    payload = {
        "model": model_spec, "passes": passes_note, "calibration": qmodel.calibration,
        "files": {"int8_params": f"{stem}.int8.npz", "int8_graph": f"{stem}.int8.json", "qdq": f"{stem}.qdq.onnx"},
        "nodes": len(qmodel.nodes), "param_bytes": weights, "activations": qmodel.peak_activation_bytes(),
        "input": {"name": qmodel.input, "scale": qmodel.tensors[qmodel.input].scale,
                  "zero_point": qmodel.tensors[qmodel.input].zero_point},
        "cross_check": check, "layers": layers,
    }
    worst = sorted(layers, key=lambda r: r["sqnr_db"])[:10]
    md = "\n\n".join([
        f"# edgevit quantize {model_spec}",
        f"Calibration: {qmodel.calibration}. Passes: {passes_note}. {len(qmodel.nodes)} int8 nodes, "
        f"{weights / 1024:.1f} KiB of integer parameters; naive peak of live int8 activations "
        f"{payload['activations']['peak_bytes'] / 1024:.1f} KiB (before memory planning).",
        md_table(["check", "value"], [[k, v] for k, v in check.items()]),
        "Lowest-SQNR layers:",
        md_table(["tensor", "op", "scale", "zp", "clipped", "SQNR dB", "max err (LSB)"],
                 [[r["tensor"], r["op"], f"{r['scale']:.3g}", r["zero_point"], f"{r['clipped_fraction']:.2%}",
                   r["sqnr_db"], f"{r['max_error_lsb']:.1f}"] for r in worst]),
    ])
    with atomic_dir(output_dir) as tmp:
        qmodel.save(tmp, stem)
        onnx.save(qdq_model, str(tmp / f"{stem}.qdq.onnx"))
        write_report(tmp / stem, "quantize", payload, md)
    return payload
