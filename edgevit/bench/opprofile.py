"""Per-op breakdown on the host: onnxruntime's profiler over edgevit's optimized graph.

ORT's own graph optimizations are switched off so that every profiled kernel is a node of the graph edgevit's
passes produced (fused `edgevit.Attention` / `edgevit.Gelu` function nodes are inlined by ORT; their pieces
are attributed back to the fused node by name). The times are onnxruntime's CPU kernels, not TVM's: they
say which ops of the optimized graph dominate on a CPU, not how the TVM build splits its time.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import onnx


def ort_op_profile(model: onnx.ModelProto, feeds: dict, runs: int = 5) -> dict:
    """{"runs", "total_ms", "by_op": [{op, nodes, ms, share}], "top_nodes": [...]} averaged over `runs`."""
    import onnxruntime as ort

    names = {}
    for node in model.graph.node:
        op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        names[node.name] = op
    functions = {f.name: f"{f.domain}.{f.name}" for f in model.functions}
    runs = max(1, runs)
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        for _ in range(runs + 1):  # the first run is a warm-up, dropped below
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    model_runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    after = model_runs[0]["ts"] + model_runs[0]["dur"] if model_runs else 0
    by_node: dict[str, float] = {}
    op_of: dict[str, str] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") or e["ts"] < after:
            continue
        node = e["name"][: -len("_kernel_time")]
        by_node[node] = by_node.get(node, 0.0) + e["dur"] / 1e3 / runs
        op_of[node] = e.get("args", {}).get("op_name", "other")
    by_op: dict[str, dict] = {}
    for node, ms in by_node.items():
        op = names.get(node)
        if op is None and node.startswith("_inlfunc_"):  # a piece of an inlined function node (fused op)
            op = next((full for f, full in functions.items() if node.startswith(f"_inlfunc_{f}_")), None)
        if op is None:  # a node ORT renamed: the longest original name it starts with, else ORT's op name
            owner = max((n for n in names if n and node.startswith(n)), key=len, default=None)
            op = names[owner] if owner else op_of[node]
            node = owner or node
        row = by_op.setdefault(op, {"op": op, "nodes": set(), "ms": 0.0})
        row["nodes"].add(node)
        row["ms"] += ms
    total = sum(r["ms"] for r in by_op.values()) or 1.0
    rows = sorted(by_op.values(), key=lambda r: -r["ms"])
    for r in rows:
        r["nodes"] = len(r["nodes"])
        r["ms"] = round(r["ms"], 4)
        r["share"] = round(r["ms"] / total, 4)
    top = sorted(by_node.items(), key=lambda kv: -kv[1])[:10]
    return {"source": "onnxruntime profiler on the optimized graph (ORT graph optimizations off)", "runs": runs,
            "total_ms": round(total, 4), "by_op": rows,
            "top_nodes": [{"node": n, "ms": round(ms, 4), "share": round(ms / total, 4)} for n, ms in top]}


def _primary(symbol: str) -> str:
    """The leading op of a TVM kernel name: fused_conv2d11_add15_erf3 → conv2d; vm.builtin.* stays as is."""
    import re

    if not symbol.startswith("fused_") and "." in symbol:
        return symbol
    name = symbol.removeprefix("fused_")
    m = re.match(r"(adaptive_)?(avg|max)_pool\dd|(layer|group|batch|rms)_norm|conv\dd_transpose|[a-z]+\dd|[a-z]+", name)
    return re.sub(r"(?<=[a-z])\d+$", "", m.group(0)) if m else symbol


def tvm_op_profile(library: Path, feeds: dict, runs: int = 3) -> dict:
    """Per-op breakdown of the TVM build itself (host-arch library), grouped by each kernel's leading op."""
    import re

    from ..backends.tvm import adapter

    funcs = adapter.profile_local(library, list(feeds.values()), max(1, runs))
    total = sum(f["seconds"] for f in funcs) or 1.0
    by_op: dict[str, dict] = {}
    for f in funcs:
        row = by_op.setdefault(_primary(f["function"]), {"op": _primary(f["function"]), "nodes": 0, "ms": 0.0})
        row["nodes"] += f["calls"]
        row["ms"] += f["seconds"] * 1e3
    rows = sorted(by_op.values(), key=lambda r: -r["ms"])
    for r in rows:
        r["ms"] = round(r["ms"], 4)
        r["share"] = round(r["ms"] / (total * 1e3), 4)
    top = sorted(funcs, key=lambda f: -f["seconds"])[:10]
    return {"source": "TVM Relax VM call instrumentation on the edgevit build (per fused kernel)",
            "runs": max(1, runs), "total_ms": round(total * 1e3, 4), "by_op": rows,
            "top_nodes": [{"node": re.sub(r"\d+(?=_|$)", "", f["function"]).replace("fused_", "").replace("_", "+"),
                           "function": f["function"], "ms": round(f["seconds"] * 1e3, 4),
                           "share": round(f["seconds"] / total, 4)} for f in top]}
