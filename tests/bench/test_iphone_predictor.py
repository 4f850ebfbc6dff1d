"""The iPhone latency predictor: fit and leave-one-out on the calibration CSV, kernel rules, device scaling."""

from __future__ import annotations

import math

import numpy as np
from onnx import TensorProto, helper

from edgevit.bench import iphone as P

CAL = P.calibration()


def test_shipped_calibration_is_exactly_the_csv_rows():
    """The fit saw the 9 CSV rows and nothing else (and the CSV has not changed since)."""
    rows = CAL["rows"]
    assert len(rows) == 9
    path = P.calibration_csv()
    if path.is_file():
        csv_rows = P.read_csv(path)
        assert [(r["timm_name"], r["latency_ms"]) for r in csv_rows] == [(r["timm_name"], r["latency_ms"]) for r in rows]
        import hashlib
        assert CAL["csv_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    for r in rows:  # graph MACs after passes agree with the published GMACs (where given) within 10 %
        if r["gmacs"]:
            assert abs(r["graph_gmacs"] - float(r["gmacs"])) / float(r["gmacs"]) < 0.10, r


def test_refit_and_leave_one_out_reproduce_the_shipped_numbers():
    rows = [dict(r) for r in CAL["rows"]]
    params = P.fit(rows)
    for value, (lo, hi), name in zip(params, P.BOUNDS, P.PARAM_NAMES):
        assert lo <= value <= hi * (1 + 1e-9), name
    for name, value in zip(P.PARAM_NAMES, params):
        assert math.isclose(value, CAL["params"][name], rel_tol=0.05, abs_tol=1e-7), name
    loo = P.leave_one_out(rows)
    mape = sum(abs(x["error_pct"]) for x in loo) / len(loo)
    assert math.isclose(mape, CAL["loo_mape_pct"], abs_tol=0.5)
    # sane bounds a broken model would fail: every held-out row within 50 %, mean within 25 %
    assert mape < 25.0
    assert all(abs(x["error_pct"]) < 50.0 for x in loo), loo
    assert 0.02 < CAL["loo_log_rms"] < 0.4
    # in-sample fit better than held-out
    assert sum(abs(e) for e in CAL["fit_error_pct"]) / 9 <= mape + 1e-6


def _graph(nodes, inits, inputs, outputs, opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def test_kernel_rules_fuse_activations_view_reshapes_and_flag_gather():
    w = helper.make_tensor("w", TensorProto.FLOAT, [16, 8, 3, 3], np.zeros(16 * 8 * 9, np.float32))
    idx = helper.make_tensor("idx", TensorProto.INT64, [4], [0, 1, 2, 3])
    shape = helper.make_tensor("shape", TensorProto.INT64, [3], [1, 16, 64])
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "x2"], ["a"], name="residual"),
             helper.make_node("Reshape", ["a", "shape"], ["v"], name="view"),  # 8x8 → 64: changes the last axis
             helper.make_node("Gather", ["v", "idx"], ["y"], axis=2, name="gather")]
    m = _graph(nodes, [w, idx, shape], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8]),
                                        helper.make_tensor_value_info("x2", TensorProto.FLOAT, [1, 16, 8, 8])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 4])])
    ks = P.kernels(m)
    assert [k["op"] for k in ks] == ["Conv", "Add", "Reshape", "Gather"]
    conv = ks[0]
    assert conv["fused"] == ["Relu"] and conv["macs"] == 16 * 8 * 8 * 8 * 9 and conv["w_bytes"] == 16 * 8 * 9 * 2
    assert conv["in_bytes"] == 8 * 8 * 64  # 8x8x8 fp16, last axis (8 × 2 B) padded to 64 B
    assert ks[0]["ane"] and ks[1]["ane"] and not ks[3]["ane"] and ks[3]["reasons"] == ["unsupported-op"]
    # stripping weights keeps the analysis identical
    assert P.kernels(P.strip_weights(m, keep=0)) == ks


def test_other_chips_are_the_a14_fit_scaled_by_specs():
    feat = CAL["rows"][0]["features"]
    ks = [{"macs": m, "w_bytes": w, "in_bytes": a, "out_bytes": 0, "layers": n, "ane": bool(e), "reasons": [],
           "name": str(i), "op": "Conv", "fused": []}
          for i, (m, w, a, n, e) in enumerate(zip(*(feat[k] for k in ("macs", "w", "a", "layers", "ane"))))]
    p12, p13, p15 = (P.predict(ks, t) for t in ("iphone12", "iphone13", "iphone15"))
    assert math.isclose(p12["predicted_ms"], P.predict_s(feat, *P.chip_params("A14")) * 1e3, rel_tol=1e-3)
    assert math.isclose(p12["predicted_ms"], P.predict_s(feat, tuple(CAL["params"].values())) * 1e3, rel_tol=1e-3)
    assert p15["predicted_ms"] < p13["predicted_ms"] < p12["predicted_ms"]
    assert set(p15["variants_ms"]) == {"A17 Pro"} and p15["variants_ms"]["A17 Pro"] <= p15["predicted_ms"]
    lo, hi = p12["band_ms"]
    assert lo < p12["predicted_ms"] < hi
    (a14, dram14), (a16, dram16) = P.chip_params("A14"), P.chip_params("A16")
    assert math.isclose(a16[0] / a14[0], 17 / 11) and math.isclose(a16[1] / a14[1], 17 / 11)
    assert math.isclose(dram16 / dram14, 51.2 / 34.1) and a16[2:] == a14[2:]


def test_shape_arithmetic_is_folded_and_open_shapes_are_measured():
    """Shape→Mul→Reshape (ONNX inference cannot evaluate it): the integer ops cost nothing (Core ML folds them for
    static shapes) and the MatMul after the Reshape still gets its MACs from a real onnxruntime run."""
    ones = helper.make_tensor("ones", TensorProto.INT64, [3], [1, 1, 1])
    w = helper.make_tensor("w", TensorProto.FLOAT, [32, 16], np.ones(32 * 16, np.float32))
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Mul", ["s", "ones"], ["s2"]),
             helper.make_node("Reshape", ["x", "s2"], ["r"]), helper.make_node("MatMul", ["r", "w"], ["y"])]
    m = _graph(nodes, [ones, w], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 32])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    ks = P.kernels(m)
    assert [k["op"] for k in ks] == ["MatMul"] and ks[0]["macs"] == 8 * 16 * 32 and ks[0]["ane"]
