"""Export every zoo model (default and a reduced input size) and print parity vs PyTorch.

    python benchmarks/zoo_export.py [--size 128] [--only NAME ...] [--json out.json]

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=0, help="square input size (0: each model's default)")
    ap.add_argument("--only", nargs="*", help="model names")
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
