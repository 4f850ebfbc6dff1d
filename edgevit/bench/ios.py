"""`edgevit bench --target iphoneNN`: predicted latency on Linux, real Core ML timing on macOS.

On Linux (and anywhere but macOS) the report carries `predicted_ms` from the calibrated analytical model in
iphone.py — labelled "predicted" everywhere, with its uncertainty band and the predictor's leave-one-out
error on the published calibration rows — and a per-op breakdown of the prediction (which ops dominate).

On macOS the model is also compiled by the Core ML backend and timed with coremltools' `MLModel.predict`
(edgevit.backends.coreml.macos.measure): that is a measurement of *this Mac*, not of an iPhone, and is
reported as `measured_ms` beside the prediction. NOT VERIFIED: no Mac runs this project's tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .. import ui
from ..artifacts import md_table, write_report
from . import iphone


def breakdown(ks: list[dict], pred: dict) -> tuple[list[dict], list[dict]]:
    """(per op type, top layers) of a prediction: predicted ms, share, and what bounds each kernel."""
    params = pred["params"]
    total = pred["predicted_ms"] or 1.0
    by_op: dict[str, dict] = {}
    layers = []
    for k, ms in zip(ks, pred["per_kernel_ms"]):
        op = k["op"] + ("+" + "+".join(sorted(set(k["fused"]))) if k["fused"] else "")
        compute = k["macs"] / params["compute_macs_per_s"] * 1e3
        memory = (k["w_bytes"] / params["dram_bytes_per_s"]
                  + (k["in_bytes"] + k["out_bytes"]) / params["activation_bytes_per_s"]) * 1e3
        bound = "compute" if compute >= memory else "memory"
        if k["layers"] * params["per_layer_s"] * 1e3 > max(compute, memory):
            bound = "dispatch"
        row = by_op.setdefault(op, {"op": op, "kernels": 0, "ms": 0.0, "macs": 0, "off_ane": 0})
        row["kernels"] += 1
        row["ms"] += ms
        row["macs"] += k["macs"]
        row["off_ane"] += int(not k["ane"])
        layers.append({"name": k["name"], "op": op, "ms": round(ms, 4), "share": round(ms / total, 4), "bound": bound,
                       "macs": k["macs"], "bytes": k["w_bytes"] + k["in_bytes"] + k["out_bytes"], "ane": k["ane"]})
    rows = list(by_op.values())
    rows.append({"op": "(fixed per-inference overhead)", "kernels": 0, "ms": pred["fixed_ms"], "macs": 0, "off_ane": 0})
    if pred["switch_ms"]:
        rows.append({"op": "(ANE ↔ GPU/CPU hand-overs)", "kernels": 0, "ms": pred["switch_ms"], "macs": 0, "off_ane": 0})
    for r in rows:
        r["ms"] = round(r["ms"], 4)
        r["share"] = round(r["ms"] / total, 4)
    return sorted(rows, key=lambda r: -r["ms"]), sorted(layers, key=lambda r: -r["ms"])[:15]


def predict_model(ks: list[dict], target_name: str) -> dict:
    pred = iphone.predict(ks, target_name)
    by_op, top = breakdown(ks, pred)
    cal = iphone.calibration()
    return {
        "predicted_ms": pred["predicted_ms"], "band_ms": pred["band_ms"], "chip": pred["chip"],
        "variants_predicted_ms": pred["variants_ms"], "status": "predicted (analytical model, not measured)",
        "macs": sum(k["macs"] for k in ks), "kernels": len(ks), "off_ane_kernels": pred["off_ane_kernels"],
        "off_ane": [{"name": k["name"], "op": k["op"], "reasons": k["reasons"]} for k in ks if not k["ane"]],
        "predictor": {"calibrated_on": "A14 (iPhone 12 / 12 Pro), " + Path(cal["csv"]).name,
                      "rows": len(cal["rows"]), "loo_mape_pct": cal["loo_mape_pct"],
                      "loo_max_abs_pct": cal["loo_max_abs_pct"], "band": cal["band"], "params": pred["params"],
                      "device_scaling": "A14 fit × published Neural-Engine TOPS and DRAM bandwidth "
                                        "(edgevit/bench/iphone_devices.toml); not validated on this chip"
                                        if pred["chip"] != cal["chip"] else "calibrated chip"},
        "by_op": by_op, "top_layers": top,
    }


def run_iphone_bench(source, optimized, target, out_dir: Path, args) -> dict:
    """Predict (always) and, on macOS, measure; write <name>.bench.json/.md, <name>.ops.png into out_dir."""
    from ..ir import graph as G

    name = source.name
    with ui.step("predict (per-op roofline, calibrated on published iPhone 12 latencies)"):
        ks = iphone.kernels(optimized)
        result = predict_model(ks, target.name)
    shapes = {vi.name: [int(d) for d in G.value_shape(vi)] for vi in G.graph_inputs(optimized)}
    payload = {"model": source.spec, "target": target.name, "inputs": shapes, **result, "measured_ms": None,
               "measurement": "none: Core ML prediction needs macOS; the number above is a prediction"}
    if sys.platform == "darwin":  # pragma: no cover - not verifiable on Linux
        payload.update(_measure_on_mac(optimized, target, out_dir, name, args))
    dev = iphone.target_device(target.name)
    lo, hi = result["band_ms"]
    p = result["predictor"]
    variants = "; ".join(f"{c}: {v:.3f} ms" for c, v in result["variants_predicted_ms"].items())
    md = [f"# edgevit bench: {name} on {target.name} — PREDICTED", "",
          md_table(["model", "target (chip)", "predicted ms", "band ms", "MACs", "kernels", "off the ANE"],
                   [[name, f"{target.name} ({result['chip']})", f"{result['predicted_ms']:.3f}",
                     f"{lo:.3f} – {hi:.3f}", f"{result['macs'] / 1e6:.1f} M", result["kernels"],
                     result["off_ane_kernels"]]]), "",
          f"**Predicted, not measured**: an analytical per-op model of Core ML on the Neural Engine (roofline + "
          f"per-layer and fixed overheads), calibrated on {p['rows']} published iPhone 12 / 12 Pro Core ML latencies "
          f"only. Leave-one-out error on those rows: mean {p['loo_mape_pct']:.1f} %, worst {p['loo_max_abs_pct']:.1f} %. "
          f"Band: {p['band']}. Device: {dev['phones']}; {p['device_scaling']}."
          + (f" Other chips of this target: {variants}." if variants else ""), ""]
    if payload.get("measured_ms") is not None:  # pragma: no cover - macOS only
        md += [f"Measured on this Mac with Core ML (not an iPhone; unverified code path): "
               f"{payload['measured_ms']:.3f} ms median.", ""]
    md += ["## Per-op breakdown (predicted)", "",
           md_table(["op (+fused)", "kernels", "predicted ms", "share", "MACs", "off ANE"],
                    [[r["op"], r["kernels"], f"{r['ms']:.4f}", f"{r['share']:.1%}", f"{r['macs'] / 1e6:.1f} M",
                      r["off_ane"]] for r in result["by_op"]]), "",
           "Top layers:", "",
           md_table(["layer", "op", "predicted ms", "share", "bound by"],
                    [[r["name"], r["op"], f"{r['ms']:.4f}", f"{r['share']:.1%}", r["bound"]]
                     for r in result["top_layers"]]), "", f"![per-op breakdown]({name}.ops.png)"]
    write_report(out_dir / f"{name}.onnx", "bench", payload, "\n".join(md))
    from .charts import bars

    bars(out_dir / f"{name}.ops.png", f"{name} on {target.name} ({result['chip']}): PREDICTED per-op breakdown",
         f"predicted {result['predicted_ms']:.3f} ms (band {lo:.3f}-{hi:.3f}); analytical model, not a measurement",
         [(r["op"], r["ms"], f"{r['ms']:.4f} ms ({r['share']:.0%})") for r in result["by_op"][:25]],
         color_of=lambda op: "#7f7f7f" if op.startswith("(") else "#2a7ab0")
    return payload


def _measure_on_mac(optimized, target, out_dir: Path, name: str, args) -> dict:  # pragma: no cover - macOS only
    """Compile with the Core ML backend and time MLModel.predict on this Mac. Never run on Linux."""
    from ..backends import coreml
    from ..backends.coreml import macos
    from ..ir import graph as G

    build = out_dir / "build"
    build.mkdir()
    coreml.compile_model(optimized, target, build, name=name, args=args)
    package = next(build.glob("*.mlpackage"))
    feeds = G.seeded_inputs(optimized, G.static_input_shapes(optimized), 0)
    m = macos.measure(package, feeds, runs=getattr(args, "runs", 20) or 20)
    return {"measured_ms": m["median_ms"], "measured_min_ms": m["min_ms"],
            "measurement": f"{m['status']}; unverified code path (no Mac in CI)"}
