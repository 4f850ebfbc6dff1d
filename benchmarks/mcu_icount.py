"""Deterministic cost of the generated int8 C on an emulated Cortex-M: the README's MCU table.

    .venv/bin/python benchmarks/mcu_icount.py [--models mcu_former mcu_deit mcu_shvit] [--targets stm32f746]

For each (model, target): `edgevit bench --target T MODEL` — compile (host build bit-exact vs the int8
reference), build with per-step timing, run on QEMU (`-icount shift=0`: SysTick counts exactly 40
instructions per tick, identical run to run). Prints instructions, MACs per instruction (all ops, and
conv/linear/matmul only; goal ≥ 1.0), the estimated latency at the target's clock (one instruction per
cycle — an estimate, not a board), peak SRAM and the arena over its live-tensor lower bound (goal ≤ 1.0),
then the per-op-class split of the first model.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

MODELS = ["mcu_former", "mcu_deit", "mcu_shvit"]


def bench(model: str, target: str, root: Path) -> dict:
    out = root / f"{model}-{target}"
    r = subprocess.run([sys.executable, "-m", "edgevit", "bench", "--target", target, model, "-o", str(out)],
                       capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{model} on {target} failed: {r.stderr.strip().splitlines()[-1]}")
    return json.loads((out / f"{model}.bench.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--targets", nargs="+", default=["stm32f746"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench(m, t, Path(tmp)) for t in args.targets for m in args.models]
    print("| model | target | MACs | instructions | MAC/instr (all) | MAC/instr (conv/linear/matmul) | "
          "estimated ms | peak SRAM | arena ÷ lower bound | flash |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['target']} | {r['macs'] / 1e6:.2f} M | {r['instructions'] / 1e6:.2f} M | "
              f"{r['macs_per_instruction']:.2f} | {r['compute_macs_per_instruction']:.2f} | "
              f"{r['estimated_ms']:.1f} @ {r['clock_hz'] / 1e6:.0f} MHz | {r['peak_sram'] / 1024:.1f} KB | "
              f"{r['arena_over_lower_bound']:.2f} | {r['flash'] / 1024:.0f} KB |")
    first = rows[0]
    print(f"\n{first['model']} on {first['target']}, by op class:\n")
    print("| op | instructions | share | MAC/instr |")
    print("|---|---|---|---|")
    for op in first["by_op"]:
        print(f"| {op['op']} | {op['instructions'] / 1e6:.2f} M | {op['share']:.1%} | "
              f"{op['macs_per_instruction'] or '-'} |")


if __name__ == "__main__":
    main()
