"""MCU backend: optimized ONNX → int8 → memory plan → a self-contained C project for an STM32.

compile_model: quantize (edgevit.quant: the numpy reference is the spec), lower every int8 node to a
kernel call (codegen.py), plan one static arena (planner.py), refuse a model over the SRAM/flash budget
(one line: needs X KB, budget Y KB, peak at <op> (<tensors>)), write the C folder, then prove it:
  - host build (gcc) run on seeded inputs, output bit-exact vs the numpy int8 reference, else nothing is
    written (ParityError);
  - when arm-none-eabi-gcc is installed, a Cortex-M build linked with a linker script that holds the
    target's SRAM/flash (the link fails when over budget): flash and RAM come from the linked image.
The folder: model.h/model.c/weights.h/weights.c, our kernels (ev_*.c/h), the Cortex-M runtime (startup,
linker script, semihosting), host/arm mains, a Makefile (`make host`, `make arm`, `make qemu`), the int8
model it reproduces (`<name>.int8.json/.npz`) and the memory report.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np

from .. import BackendResult
from ... import ui
from ...artifacts import md_table
from ...errors import EdgevitError, ParityError
from . import codegen, planner

KERNELS = Path(__file__).with_name("kernels")
RUNTIME = Path(__file__).with_name("runtime")
VERIFY_SAMPLES = 4  # seeded inputs the host build must reproduce bit for bit at compile time
TEST_INPUTS = 2  # inputs embedded for `make arm` + QEMU (main_arm.c)
STACK_ESTIMATE = 2048  # bytes reserved for the stack before the real figure (-fstack-usage) is known
CODE_ESTIMATE = 40 * 1024  # kernels + runtime (34 KB linked for mcu_deit): flash check without a cross compiler


def parse_bytes(text: str | None, option: str) -> int | None:
    """'320K', '1M', '327680' → bytes (K = 1024)."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*([kKmM]?)[bB]?\s*", str(text))
    if not m:
        raise EdgevitError(f"{option} {text!r}: give bytes, e.g. 327680, 320K or 1M")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]


def budgets(target, args=None) -> tuple[int, int]:
    opts = target.options
    for key in ("cpu", "sram_bytes", "flash_bytes"):
        if key not in opts:
            raise EdgevitError(f"{target.path}: the [mcu] table needs '{key}'")
    sram = parse_bytes(getattr(args, "sram", None), "--sram") or int(opts["sram_bytes"])
    flash = parse_bytes(getattr(args, "flash", None), "--flash") or int(opts["flash_bytes"])
    return sram, flash


def check_args(target, args) -> None:
    budgets(target, args)
    calib = getattr(args, "calib", None)
    if calib and not Path(calib).exists():
        raise EdgevitError(f"--calib {calib}: no such file or folder (give a folder of images or a .npy)")


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KB"


def _peak_text(schedule: planner.Schedule, plan: planner.Plan) -> str:
    step = schedule.steps[plan.order[plan.peak_step]]
    shown = plan.peak_tensors[:4] + ([f"+{len(plan.peak_tensors) - 4} more"] if len(plan.peak_tensors) > 4 else [])
    return f"{step.op} '{step.name}' ({', '.join(shown)})"


def memory_report(q, schedule: planner.Schedule, plan: planner.Plan, stack: int, sram: int, flash: int,
                  weights: int, code: int, measured: dict | None) -> dict:
    io = int(np.prod(q.shapes[q.input])) + int(np.prod(q.shapes[q.outputs[0]]))
    peak = plan.placement.arena + stack + io
    step = schedule.steps[plan.order[plan.peak_step]]
    return {
        "sram_budget": sram, "flash_budget": flash,
        "arena": plan.placement.arena, "lower_bound": plan.lower_bound,
        "arena_over_lower_bound": round(plan.placement.arena / max(plan.lower_bound, 1), 4),
        "naive_sum": plan.naive_sum, "no_sharing_peak": plan.no_sharing_peak,
        "stack": stack, "io_buffers": io, "peak_sram": peak,
        "peak_at": {"step": plan.peak_step, "op": step.op, "node": step.name, "tensors": plan.peak_tensors},
        "weights": weights, "code": code, "flash": (measured or {}).get("flash_used", weights + code),
        "flash_source": "linked image (arm-none-eabi-size)" if measured else "estimate (no arm-none-eabi-gcc)",
        "linked": measured,
        "orders_tried": plan.orders_tried,
        "shared": [{"kind": k, "input": x, "output": y} for k, x, y in plan.shared],
    }


def _check_budget(name: str, mem: dict, schedule, plan) -> None:
    if mem["peak_sram"] > mem["sram_budget"]:
        raise EdgevitError(
            f"{name} needs {_kib(mem['peak_sram'])} of SRAM, budget {_kib(mem['sram_budget'])} "
            f"({mem['peak_sram'] - mem['sram_budget']} bytes over; arena {mem['arena']} + stack {mem['stack']} + "
            f"input/output {mem['io_buffers']}), peak at {_peak_text(schedule, plan)}; nothing written")
    if mem["flash"] > mem["flash_budget"]:
        raise EdgevitError(
            f"{name} needs {_kib(mem['flash'])} of flash, budget {_kib(mem['flash_budget'])} "
            f"({mem['flash'] - mem['flash_budget']} bytes over; weights {mem['weights']} bytes); nothing written")


def _inputs(q, count: int, seed: int) -> np.ndarray:
    """int8 inputs: quantized calibration images when there are any, else seeded normal noise."""
    shape = q.shapes[q.input]
    data = q.calibration_data
    if data is not None and len(data) >= count:
        return np.stack([q.quantize_input(x[None]) for x in data[:count]])
    rng = np.random.default_rng(seed)
    return np.stack([q.quantize_input(rng.standard_normal(shape).astype(np.float32)) for _ in range(count)])


def write_project(folder: Path, files: dict[str, str], target, sram: int, flash: int, stack: int,
                  test_inputs: np.ndarray) -> None:
    """Generated sources, our kernels, the Cortex-M runtime + Makefile (project.mk: this target's board
    layout and budgets) and the seeded test inputs main_arm.c runs."""
    from . import toolchain

    for fname, text in files.items():
        (folder / fname).write_text(text)
    for src in sorted(KERNELS.glob("ev_*.[ch]")):
        shutil.copyfile(src, folder / src.name)
    opts = target.options
    toolchain.install_runtime(folder, opts["cpu"], opts.get("fpu"), flash, sram, stack,
                              flash_origin=int(opts.get("flash_origin", 0x08000000)),
                              ram_origin=int(opts.get("ram_origin", 0x20000000)))
    toolchain.write_test_inputs(folder, [x.astype(np.int8).tobytes() for x in test_inputs])


def verify_host(folder: Path, q, inputs: np.ndarray, sanitize: bool = False) -> dict:
    """Build with gcc, run every input, compare with the numpy int8 reference; ParityError on a mismatch."""
    from . import toolchain

    binary = toolchain.build_host(folder, sanitize=sanitize)
    out = q.outputs[0]
    got = np.frombuffer(toolchain.run_host(binary, inputs.astype(np.int8).tobytes()), np.int8)
    size = int(np.prod(q.shapes[out]))
    if got.size != size * len(inputs):
        raise ParityError(f"generated C wrote {got.size} output bytes for {len(inputs)} inputs, expected "
                          f"{size * len(inputs)}; nothing written")
    for i, x in enumerate(inputs):
        want = q.run(x)[out].reshape(-1)
        if not np.array_equal(got[i * size:(i + 1) * size], want):
            diff = int(np.sum(got[i * size:(i + 1) * size] != want))
            raise ParityError(f"generated C differs from the int8 reference on seeded input {i} "
                              f"({diff} of {size} outputs); nothing written")
    return {"inputs": len(inputs), "bit_exact": True, "sanitizers": sanitize}


def link_arm(folder: Path, sram: int, flash: int, test_input_bytes: int):
    """Link for the target's core within its budgets (QEMU's memory map; sizes do not depend on it).

    The stack reservation starts at an estimate and is re-linked with the measured worst case
    (-fstack-usage call graph) when that is larger. The embedded test inputs are not part of the
    deployment, so the flash budget is widened by their size (`test_input_bytes`).
    """
    from . import toolchain

    stack = STACK_ESTIMATE
    for _ in range(2):
        build = toolchain.build_arm(folder, flash_bytes=flash + test_input_bytes, ram_bytes=sram,
                                    stack_bytes=stack, flash_origin=0, ram_origin=0x20000000)
        measured = toolchain.max_stack_usage(folder)
        if measured <= stack:
            break
        stack = (measured + 255) // 256 * 256
    return build, measured


def compile_model(model, target, out_dir: Path, name: str, args=None) -> BackendResult:
    return build_project(model, target, out_dir, name, args)[0]


def build_project(model, target, out_dir: Path, name: str, args=None) -> tuple[BackendResult, dict]:
    """compile_model, plus what benchmarks need: {"q", "schedule", "plan"}."""
    from ...quant.command import quantize_model
    from . import toolchain

    sram, flash = budgets(target, args)
    with ui.step("calibrate and quantize to int8"):
        q = quantize_model(model, getattr(args, "calib", None), getattr(args, "method", "minmax") or "minmax")
    lowered = {wide: codegen.lower(q, wide_weights=wide) for wide in (False, True)}  # (schedule, calls)
    schedule, calls = lowered[False]
    with ui.step("plan the SRAM arena (liveness, sharing, order search)"):
        plan = planner.plan(schedule)
        planner.verify(schedule, plan)
    weights = codegen.data_bytes(q, calls)  # int8 weights, constants and tables: weights.c
    mem = memory_report(q, schedule, plan, STACK_ESTIMATE, sram, flash, weights, CODE_ESTIMATE, None)
    _check_budget(name, mem, schedule, plan)  # before any file is written

    # int16 conv/linear weights in flash save ~5–10 % of the instructions; use them when the doubled
    # weights fit the flash budget (the link decides; an overflow falls back to int8 weights)
    wide_extra = codegen.data_bytes(q, lowered[True][1]) - weights
    layouts = [True, False] if weights + wide_extra + CODE_ESTIMATE <= flash else [False]
    inputs = _inputs(q, max(VERIFY_SAMPLES, TEST_INPUTS), seed=0)
    linked = None
    for wide in layouts:
        schedule, calls = lowered[wide]
        files = codegen.generate(q, schedule, calls, plan, name)
        write_project(out_dir, files, target, sram, flash, STACK_ESTIMATE, inputs[:TEST_INPUTS])
        q.save(out_dir, name)  # the int8 model the C code reproduces (edgevit.quant.QuantizedModel.load)
        with ui.step(f"build for the host and check {VERIFY_SAMPLES} inputs bit-exact vs the int8 reference"):
            parity = verify_host(out_dir, q, inputs[:VERIFY_SAMPLES])
        if not toolchain.have_arm_toolchain():
            ui.console.print("[yellow]note:[/yellow] arm-none-eabi-gcc not found: flash is an estimate and the "
                             "Cortex-M link was not checked (Debian: apt-get install gcc-arm-none-eabi "
                             "libnewlib-arm-none-eabi)")
            break
        try:
            with ui.step(f"link for {target.options['cpu']} within {_kib(sram)} SRAM / {_kib(flash)} flash"
                         + (" (int16 weights)" if wide else "")):
                build, stack = link_arm(out_dir, sram, flash, inputs[:TEST_INPUTS].nbytes)
        except toolchain.LinkOverflowError as exc:
            if wide and set(exc.overflows) == {"FLASH"}:
                continue  # retry with int8 weights
            raise
        deployed_flash = build.flash_used - build.test_input_bytes
        linked = {"flash_used": deployed_flash, "ram_used": build.ram_used, "text": build.text,
                  "rodata": build.rodata - build.test_input_bytes, "data": build.data, "bss": build.bss,
                  "stack_reserved": build.stack, "stack_measured": stack}
        flash_weights = weights + (wide_extra if wide else 0)
        mem = memory_report(q, schedule, plan, stack, sram, flash, flash_weights, deployed_flash - flash_weights,
                            linked)
        _check_budget(name, mem, schedule, plan)
        toolchain.install_runtime(out_dir, target.options["cpu"], target.options.get("fpu"), flash, sram,
                                  build.stack, flash_origin=int(target.options.get("flash_origin", 0x08000000)),
                                  ram_origin=int(target.options.get("ram_origin", 0x20000000)))
        break
    mem["int16_weights"] = wide
    shutil.rmtree(out_dir / "build", ignore_errors=True)  # the folder ships sources, not objects

    md = "\n".join([
        f"# edgevit compile: {name} → {target.name} (int8 C runtime, {target.options['cpu']})", "",
        md_table(["memory", "bytes", "note"], [
            ["peak SRAM", mem["peak_sram"], f"arena + stack + input/output buffers; budget {mem['sram_budget']}"],
            ["arena", mem["arena"], f"{mem['arena_over_lower_bound']:.2f}× the live-tensor lower bound "
                                    f"({mem['lower_bound']}) of the chosen order"],
            ["no reuse (naive sum)", mem["naive_sum"], "every tensor its own buffer"],
            ["no sharing", mem["no_sharing_peak"], "live-tensor peak without in-place / token overwriting"],
            ["stack", mem["stack"], "-fstack-usage, deepest call chain" if linked else "reserved estimate"],
            ["flash", mem["flash"], f"{mem['flash_source']}; weights {mem['weights']} "
                                    f"({'int16' if wide else 'int8'} conv/linear weights); budget {mem['flash_budget']}"],
        ]), "",
        f"Peak at step {mem['peak_at']['step']}: {_peak_text(schedule, plan)}.", "",
        f"Host build bit-exact vs the numpy int8 reference on {parity['inputs']} seeded inputs. "
        "`make host` / `make arm` rebuild; `edgevit_model_run(in, out)` in model.h is the API.",
    ])
    summary = (f"C project, arena {_kib(mem['arena'])}, peak SRAM {_kib(mem['peak_sram'])} of {_kib(sram)}, "
               f"flash {_kib(mem['flash'])} of {_kib(flash)}, host build bit-exact")
    steps = [{"step": pos, "op": schedule.steps[i].op, "node": schedule.steps[i].name, "macs": schedule.steps[i].macs}
             for pos, i in enumerate(plan.order)]
    result = BackendResult(summary=summary,
                           report={"mcu": {"memory": mem, "host_check": parity, "cpu": target.options["cpu"],
                                           "macs": sum(st["macs"] for st in steps), "steps": steps,
                                           "quantization": q.calibration}},
                           markdown=md)
    return result, {"q": q, "schedule": schedule, "plan": plan, "steps": steps}
