"""onnxruntime latency of edgevit-optimized vs unoptimized graphs, measured in one run.

    .venv/bin/python benchmarks/passes_latency.py [--models ...] [--runs 30] [--markdown out.md]

For each model: export at its default input size, run the pass pipeline, then time both graphs in
onnxruntime (CPU, batch 1, same seeded input, interleaved runs, median). Two onnxruntime settings are
reported: its own graph optimizations on (what users run) and off (what our passes alone achieve).
Also prints node counts before/after — the README table comes from this script.
"""

from __future__ import annotations

import argparse
import statistics
import time

import onnxruntime as ort

from edgevit.frontend.export import export
from edgevit.frontend.source import resolve
from edgevit.ir import graph as G
from edgevit.passes import pipeline

MODELS = ["mobileone_s0", "fastvit_t8", "repvit_m0_9", "efficientformer_l1", "shvit_s1"]


def _session(model, level):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _median_ms(sessions, feeds, runs):
    times = [[] for _ in sessions]
    for s in sessions:  # warm-up
        for _ in range(3):
            s.run(None, feeds)
    for _ in range(runs):
        for i, s in enumerate(sessions):  # interleaved so drift affects both alike
            t = time.perf_counter()
            s.run(None, feeds)
            times[i].append((time.perf_counter() - t) * 1e3)
    return [statistics.median(t) for t in times]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--markdown", help="write the results table here")
    args = ap.parse_args()
    header = ("| model | nodes before → after | BN before → after | max abs err | ORT-all ms before → after (ratio) "
              "| ORT-off ms before → after (ratio) |")
    lines = [header, "|---|---|---|---|---|---|"]
    for name in args.models:
        base = export(resolve(name), samples=1).model
        opt, report = pipeline.run(base)
        feeds = G.seeded_inputs(base, G.static_input_shapes(base), 0)
        row = [name, f"{len(base.graph.node)} → {len(opt.graph.node)}",
               f"{report.op_histogram_before.get('BatchNormalization', 0)} → "
               f"{report.op_histogram_after.get('BatchNormalization', 0)}",
               f"{report.parity.max_abs:.2g}"]
        for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
            before, after = _median_ms([_session(base, level), _session(opt, level)], feeds, args.runs)
            row.append(f"{before:.1f} → {after:.1f} ({after / before:.2f}×)")
        lines.append("| " + " | ".join(row) + " |")
        print(lines[-1], flush=True)
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
