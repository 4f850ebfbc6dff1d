"""`edgevit bench --target stm32*`: deterministic instruction counts of the generated C on QEMU.

The model is compiled exactly as `edgevit compile` does (host build checked bit-exact), then built for the
target's core with per-step timing (main_profile.c, -DEDGEVIT_PROFILE) and run on QEMU's mps2 board of
that core under `-icount shift=0`, where one SysTick tick is exactly 40 executed instructions. Reported:
instructions per step and per op class, MACs per instruction, and an *estimated* latency at the target's
clock assuming one instruction per cycle — QEMU models no pipeline, caches or flash wait states, so a
real board differs (a Cortex-M7 dual-issues; flash wait states cost). Real boards: flash the project
(`make arm` with your board's startup) and read DWT->CYCCNT; edgevit cannot reach a board from here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..artifacts import md_table, write_report
from ..errors import EdgevitError

COMPUTE = ("conv2d", "linear", "matmul")


def _profile(folder: Path, target, flash: int, inputs: np.ndarray):
    from ..backends.mcu import toolchain as tc

    if not (tc.have_arm_toolchain() and tc.have_qemu()):
        raise EdgevitError(f"benchmarking {target.name} needs arm-none-eabi-gcc and qemu-system-arm ({tc.APT_HINT})")
    tc.write_test_inputs(folder, [inputs[0].astype(np.int8).tobytes()])
    build = tc.build_arm(folder, flash_bytes=flash + inputs[0].size, flash_origin=0, ram_origin=0x20000000,
                         main=folder / "main_profile.c", extra_cflags="-DEDGEVIT_PROFILE")
    run = tc.run_qemu(build, timeout=600).check()
    ends = {}
    for line in run.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "step":
            ends[int(parts[1])] = int(parts[2])
    return run, ends, tc.QEMU_INSNS_PER_TICK


def _chart(path: Path, title: str, rows: list[dict]) -> None:
    """Horizontal bars: instructions per op class (Pillow, as the host benchmark)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    width, bar_h, gap, left, top = 760, 24, 10, 120, 50
    img = Image.new("RGB", (width, top + len(rows) * (bar_h + gap) + 20), "white")
    draw = ImageDraw.Draw(img)
    draw.text((12, 12), title, fill="black", font=font)
    draw.text((12, 28), "instructions per op class (QEMU -icount, deterministic)", fill="#555555", font=font)
    longest = max((r["instructions"] for r in rows), default=1) or 1
    for k, r in enumerate(rows):
        y = top + k * (bar_h + gap)
        length = max(2, int((width - left - 230) * r["instructions"] / longest))
        draw.text((12, y + bar_h // 2 - 6), r["op"], fill="black", font=font)
        draw.rectangle([left, y, left + length, y + bar_h], fill="#2a7ab0" if r["op"] in COMPUTE else "#7f7f7f")
        extra = f", {r['macs_per_instruction']:.2f} MAC/instr" if r["macs"] else ""
        draw.text((left + length + 8, y + bar_h // 2 - 6), f"{r['instructions'] / 1e6:.2f} M ({r['share']:.0%}{extra})",
                  fill="black", font=font)
    img.save(path)


def run_mcu_bench(optimized, target, out_dir: Path, name: str, args) -> dict:
    """Compile into out_dir/project, profile on QEMU, write <name>.bench.json/.md/.png into out_dir."""
    from ..backends.mcu import _inputs, build_project

    project = out_dir / "project"
    project.mkdir()
    result, ctx = build_project(optimized, target, project, name, args)
    mem = result.report["mcu"]["memory"]
    q, steps = ctx["q"], ctx["steps"]
    inputs = _inputs(q, 1, seed=0)
    run, ends, per_tick = _profile(project, target, mem["flash_budget"], inputs)
    if run.outputs[0] != q.run(inputs[0])[q.outputs[0]].astype(np.int8).tobytes():
        raise EdgevitError("profiled Cortex-M build differs from the int8 reference; numbers not reported")
    prev = 0
    for st in steps:
        end = ends.get(st["step"], prev)
        st["instructions"], prev = (end - prev) * per_tick, end
    total = run.ticks[0] * per_tick
    by_op: dict[str, dict] = {}
    for st in steps:
        row = by_op.setdefault(st["op"], {"op": st["op"], "steps": 0, "instructions": 0, "macs": 0})
        row["steps"] += 1
        row["instructions"] += st["instructions"]
        row["macs"] += st["macs"]
    rows = sorted(by_op.values(), key=lambda r: -r["instructions"])
    for r in rows:
        r["share"] = r["instructions"] / total if total else 0.0
        r["macs_per_instruction"] = round(r["macs"] / r["instructions"], 3) if r["instructions"] and r["macs"] else 0.0
    macs = sum(st["macs"] for st in steps)
    compute_instr = sum(r["instructions"] for r in rows if r["op"] in COMPUTE)
    clock = int(target.options.get("clock_hz", 0))
    payload = {
        "model": name, "target": target.name, "cpu": target.options["cpu"], "runtime": "edgevit int8 C (QEMU)",
        "instructions": total, "macs": macs,
        "macs_per_instruction": round(macs / total, 3) if total else 0.0,
        "compute_macs_per_instruction": round(macs / compute_instr, 3) if compute_instr else 0.0,
        "estimated_ms": round(total / clock * 1e3, 3) if clock else None, "clock_hz": clock,
        "estimate_note": "estimated: QEMU instruction count at one instruction per cycle; not measured on a board",
        "peak_sram": mem["peak_sram"], "arena": mem["arena"], "lower_bound": mem["lower_bound"],
        "arena_over_lower_bound": mem["arena_over_lower_bound"], "flash": mem["flash"],
        "by_op": rows, "steps": steps,
    }
    md = "\n".join([
        f"# edgevit bench {name} → {target.name} ({target.options['cpu']}, int8 C on QEMU)", "",
        md_table(["instructions", "MACs", "MAC/instr (all)", "MAC/instr (conv/linear/matmul)",
                  f"estimated ms @ {clock / 1e6:.0f} MHz", "peak SRAM", "arena / lower bound", "flash"],
                 [[f"{total:,}", f"{macs:,}", payload["macs_per_instruction"], payload["compute_macs_per_instruction"],
                   payload["estimated_ms"], mem["peak_sram"], mem["arena_over_lower_bound"], mem["flash"]]]), "",
        md_table(["op", "steps", "instructions", "share", "MACs", "MAC/instr"],
                 [[r["op"], r["steps"], f"{r['instructions']:,}", f"{r['share']:.1%}", f"{r['macs']:,}",
                   r["macs_per_instruction"] or "-"] for r in rows]), "",
        "Instructions are exact and deterministic (QEMU `-icount shift=0`, SysTick: 40 instructions per tick); "
        "the latency is an **estimate** at one instruction per cycle, not a board measurement.",
        "", f"![instructions per op class]({name}.bench.png)",
    ])
    write_report(out_dir / name, "bench", payload, md)
    _chart(out_dir / f"{name}.bench.png", f"{name} on {target.name} (QEMU {target.options['cpu']})", rows)
    return payload
