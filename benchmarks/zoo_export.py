"""Export every zoo model (default or a reduced input size), optionally optimize, print parity.

    python benchmarks/zoo_export.py [--size 128] [--only NAME ...] [--optimize] [--json out.json]

With --optimize the pass pipeline runs too and each row adds nodes/BatchNorms before → after and the
optimized graph's max abs error vs the exported one.

Not a test: the whole zoo at full resolution takes minutes; tests export a subset at reduced size.
"""

from __future__ import annotations

import argparse
import json
import time

from edgevit import zoo
from edgevit.errors import EdgevitError
from edgevit.frontend.export import export
from edgevit.frontend.source import resolve
from edgevit.passes import pipeline


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=0, help="square input size (0: each model's default)")
    ap.add_argument("--only", nargs="*", help="model names")
    ap.add_argument("--optimize", action="store_true", help="also run the pass pipeline")
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args()
    names = args.only or list(zoo.entries())
    rows = []
    for name in names:
        t = time.perf_counter()
        size = (args.size, args.size) if args.size else None
        try:
            r = export(resolve(name), size, samples=1)
            row = {"model": name, "ok": True, "nodes": len(r.model.graph.node), **r.parity.as_dict()}
            if args.optimize:
                opt, report = pipeline.run(r.model)
                row["optimized"] = {
                    "nodes": len(opt.graph.node),
                    "bn_before": report.op_histogram_before.get("BatchNormalization", 0),
                    "bn_after": report.op_histogram_after.get("BatchNormalization", 0),
                    "max_abs": report.parity.max_abs, "ref_range": report.parity.ref_range,
                    "within": report.parity.within(1e-4),
                    "rolled_back": [p.name for p in report.passes if p.status.startswith("rolled back")],
                }
        except EdgevitError as exc:
            row = {"model": name, "ok": False, "error": str(exc)}
        row["seconds"] = round(time.perf_counter() - t, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    print(f"{sum(r['ok'] for r in rows)}/{len(rows)} exported within tolerance")


if __name__ == "__main__":
    main()
