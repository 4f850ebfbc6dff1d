#!/usr/bin/env python3
"""The long hostile-input fuzz run (issue #9): ≥ 1,000 generated/corrupted ONNX models through the ONNX
loader, resource limits, analysis, the pass pipeline and each backend's op-coverage check.

    .venv/bin/python scripts/fuzz.py                      # seeds 0..1199, 20 s per input, summary table
    .venv/bin/python scripts/fuzz.py --count 5000 --start 10000 --timeout 30 --json out/fuzz.json

Every input runs in a forked worker, memory-capped (RLIMIT_AS, --mem-gib above the worker's start) and
killed after --timeout seconds. Outcomes: ok (accepted), error (one-line EdgevitError: the CLI's exit 2),
bug (any other exception: the CLI's exit 3), hang, crash (native signal). Exit status 1 if any bug, hang,
crash or multi-line error occurred; every such input is printed with its seed (rerun one with
`--start SEED --count 1`). The generator is tests/hardening/fuzzing.py; a short run of it is in the suite.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.hardening import fuzzing as F  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    ap.add_argument("--count", type=int, default=1200, help="inputs to run (default 1200)")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds per input (default 20)")
    ap.add_argument("--mem-gib", type=float, default=3.0, help="address-space headroom per worker (default 3)")
    ap.add_argument("--json", help="write every result to this file")
    args = ap.parse_args()

    F.preload()
    start = time.monotonic()
    results, outcomes = [], collections.Counter()
    by_mutation: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    bad = []
    for seed in range(args.start, args.start + args.count):
        r = F.run_case(F.make_case(seed), timeout=args.timeout, mem_bytes=int(args.mem_gib * (1 << 30)))
        key = r["outcome"]
        if key == "error" and not r.get("one_line", True):
            key = "multi-line error"
        outcomes[key] += 1
        for m in r["mutations"]:
            by_mutation[m][key] += 1
        results.append(r)
        if key not in ("ok", "error"):
            bad.append(r)
            print(f"seed {seed}: {key}: {r.get('message', '')} {r.get('frames', '')} ({r['mutations']})", flush=True)
        done = seed - args.start + 1
        if done % 100 == 0:
            print(f"  {done}/{args.count} inputs, {time.monotonic() - start:.0f} s: {dict(outcomes)}", flush=True)

    seconds = time.monotonic() - start
    slowest = max(results, key=lambda r: r["seconds"])
    print(f"\n{args.count} inputs (seeds {args.start}..{args.start + args.count - 1}) in {seconds:.0f} s; "
          f"slowest {slowest['seconds']} s (seed {slowest['seed']})")
    for key in ("ok", "error", "multi-line error", "bug", "hang", "crash"):
        print(f"  {key:17s} {outcomes.get(key, 0)}")
    print("\nby mutation (ok / error / other):")
    for m in sorted(by_mutation):
        c = by_mutation[m]
        print(f"  {m:22s} {c['ok']:5d} {c['error']:5d} {sum(c.values()) - c['ok'] - c['error']:5d}")
    def gist(msg: str) -> str:  # drop the temporary model path the loader's messages start with
        return (msg.split(".onnx: ", 1)[-1] if msg.startswith("/") else msg)[:60]

    stages = collections.Counter(gist(r.get("message", "")) for r in results if r["outcome"] == "error")
    print(f"\n{len(stages)} distinct error-message prefixes; most common:")
    for msg, n in stages.most_common(8):
        print(f"  {n:5d}  {msg}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
