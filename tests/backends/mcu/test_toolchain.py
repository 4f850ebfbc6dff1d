"""Build/run infrastructure of the MCU backend on a stub model: host builds (plain, sanitized), Cortex-M
builds run in QEMU, memory budgets enforced by the link, deterministic tick counts, faults.

Skipped only when gcc/make, arm-none-eabi-gcc or qemu-system-arm are missing (setup.sh installs them).
"""

from __future__ import annotations

import pytest

from edgevit.backends.mcu import toolchain as tc
from edgevit.errors import EdgevitError

needs_host = pytest.mark.skipif(not tc.have_host_toolchain(), reason="gcc/make missing")
needs_arm = pytest.mark.skipif(not tc.have_arm_toolchain(), reason=f"arm-none-eabi-gcc missing ({tc.APT_HINT})")
needs_qemu = pytest.mark.skipif(not (tc.have_arm_toolchain() and tc.have_qemu()),
                                reason=f"arm-none-eabi-gcc / qemu-system-arm missing ({tc.APT_HINT})")

IN, OUT, ARENA = 32, 16, 4096
MODEL_H = f"""#ifndef MODEL_H
#define MODEL_H
#include <stdint.h>
#define EDGEVIT_MODEL_INPUT_SIZE {IN}
#define EDGEVIT_MODEL_OUTPUT_SIZE {OUT}
int edgevit_model_run(const int8_t *input, int8_t *output);
#endif
"""
# out[i] = in[i] + 1 (the 1 from .data), after (uint8)in[0] · 64 sweeps over a static arena: work proportional to in[0].
MODEL_C = """#include "model.h"
#ifndef STUB_ARENA
#define STUB_ARENA 4096
#endif
static int8_t arena[STUB_ARENA];
static volatile int8_t one[2] = {1, 1}; /* initialized, writable: .data, copied from flash by the startup */
static volatile uint32_t sink;
int edgevit_model_run(const int8_t *input, int8_t *output) {
    uint32_t acc = 0, reps = (uint8_t)input[0] * 64u;
    for (uint32_t r = 0; r < reps; r++)
        for (uint32_t i = r % 64u; i < STUB_ARENA; i += 64u) {
            arena[i] = (int8_t)(arena[i] + input[r % EDGEVIT_MODEL_INPUT_SIZE]);
            acc += (uint8_t)arena[i];
        }
    sink = acc;
#ifdef STUB_OOB
    output[EDGEVIT_MODEL_OUTPUT_SIZE + (uint8_t)input[1]] = 1; /* out of bounds: ASan must catch it */
#endif
    for (int i = 0; i < EDGEVIT_MODEL_OUTPUT_SIZE; i++) output[i] = (int8_t)(input[i] + one[i & 1]);
    return 0;
}
"""
FAULT_MAIN = """#include <stdint.h>
#include "semihost.h"
int main(void) {
    ev_sh_write0("before\\n");
    volatile uint32_t v = *(volatile uint32_t *)0xF0000000u; /* unmapped on mps2: BusFault -> HardFault */
    ev_sh_write0("after\\n");
    return (int)(v & 0u);
}
"""
STACK_MAIN = """#include <stdint.h>
#include "semihost.h"
static __attribute__((noinline)) uint32_t deep(uint32_t n) {
    volatile uint8_t big[12 * 1024]; /* more than the 8 KiB reservation */
    for (uint32_t i = 0; i < sizeof big; i += 512) big[i] = (uint8_t)(i + n);
    return big[n % sizeof big];
}
int main(void) { return (int)(deep(7) & 0u); }
"""
# A 2-instruction loop (subs + bne) of n iterations: 2n instructions.
LOOP_MAIN = """#include <stdint.h>
#include "semihost.h"
static __attribute__((noinline)) void spin(uint32_t n) {
    __asm__ volatile("1: subs %0, %0, #1\\n\\tbne 1b" : "+r"(n) :: "cc");
}
int main(void) {
    static const uint32_t ns[] = {1000, 100000, 1000000, 4000000};
    for (uint32_t k = 0; k < 4; k++) {
        ev_timer_start();
        spin(ns[k]);
        uint64_t t = ev_timer_ticks();
        ev_sh_puts("ticks "); ev_sh_put_uint(k); ev_sh_putc(' '); ev_sh_put_uint(t); ev_sh_putc('\\n');
    }
    return 0;
}
"""
LOOP_ITERATIONS = [1000, 100000, 1000000, 4000000]


def _inputs() -> list[bytes]:
    first = bytes([10] + list(range(1, IN)))
    second = bytes([20] + [(250 - 3 * i) % 256 for i in range(1, IN)])  # includes 127 → -128 wrap, negatives
    return [first, second]


def _expected(x: bytes) -> bytes:
    return bytes((b + 1) % 256 for b in x[:OUT])


def _stub_project(folder, **runtime):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.h").write_text(MODEL_H)
    (folder / "model.c").write_text(MODEL_C)
    tc.install_runtime(folder, **runtime)
    tc.write_test_inputs(folder, _inputs())
    return folder


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return _stub_project(tmp_path_factory.mktemp("mcu-stub") / "proj")


@pytest.fixture(scope="module")
def arm_build(project):
    if not (tc.have_arm_toolchain() and tc.have_qemu()):
        pytest.skip("arm-none-eabi-gcc / qemu-system-arm missing")
    return tc.build_arm(project)


@needs_host
@pytest.mark.parametrize("sanitize", [False, True], ids=["plain", "sanitized"])
def test_host_round_trip(project, sanitize):
    binary = tc.build_host(project, sanitize=sanitize)
    assert binary.is_file() and binary.parent.name == ("host-san" if sanitize else "host")
    inputs = _inputs()
    assert tc.run_host(binary, inputs[0]) == _expected(inputs[0])
    assert tc.run_host(binary, b"".join(inputs)) == b"".join(map(_expected, inputs))  # a batch, one process
    with pytest.raises(EdgevitError, match=r"exited with 2: .*read 5 of 32 bytes"):
        tc.run_host(binary, b"12345")


@needs_host
def test_sanitizer_catches_out_of_bounds(tmp_path):
    folder = _stub_project(tmp_path / "oob")
    binary = tc.build_host(folder, sanitize=True, extra_cflags="-DSTUB_OOB")
    with pytest.raises(EdgevitError, match="AddressSanitizer"):
        tc.run_host(binary, bytes([1, 40] + [0] * (IN - 2)))


@needs_host
def test_compile_error_is_one_line_with_the_compiler_message(tmp_path):
    folder = _stub_project(tmp_path / "broken")
    (folder / "model.c").write_text(MODEL_C.replace("sink = acc;", "sink = acc"))
    with pytest.raises(EdgevitError, match=r"host build of .* failed: model\.c:\d+:\d+: error: expected ';'") as e:
        tc.build_host(folder)
    assert "\n" not in str(e.value)
    (folder / "model.c").unlink()
    with pytest.raises(EdgevitError, match=r"failed: undefined reference to `edgevit_model_run'"):
        tc.build_host(folder)


@needs_qemu
def test_arm_build_runs_in_qemu(arm_build):
    b = arm_build
    assert b.elf.is_file() and b.map.is_file()
    assert (b.cpu, b.fpu, b.qemu_machine) == ("cortex-m7", "fpv5-sp-d16", "mps2-an500")
    assert b.bss >= ARENA and b.stack == tc.DEFAULT_STACK_BYTES
    assert b.rodata >= b.test_input_bytes == 2 * IN  # the test inputs are const
    assert b.text > 0 and b.data >= 2
    assert b.ram_used >= b.data + b.bss + b.stack and b.ram_used - (b.data + b.bss + b.stack) < 16
    assert b.flash_used >= b.text + b.rodata + b.data
    run = tc.run_qemu(b, timeout=30)
    assert run.exit_code == 0, run.stdout + run.stderr
    assert run.check() is run
    assert run.outputs == [_expected(x) for x in _inputs()]
    assert len(run.ticks) == 2 and all(t > 0 for t in run.ticks)
    assert run.instructions == [t * tc.QEMU_INSNS_PER_TICK for t in run.ticks]
    assert run.fault is None and 0 < run.stack_used < b.stack_bytes


@needs_qemu
def test_ticks_are_deterministic_and_scale_with_work(arm_build):
    first, second = tc.run_qemu(arm_build, timeout=30), tc.run_qemu(arm_build, timeout=30)
    assert first.ticks == second.ticks
    # input 0 does 10·64 sweeps, input 1 does 20·64: twice the work
    assert first.ticks[1] / first.ticks[0] == pytest.approx(2.0, rel=0.03)


@needs_qemu
def test_instructions_per_tick(tmp_path, project):
    """Under -icount shift=0 a SysTick tick (25 MHz on mps2) is exactly 40 instructions."""
    (tmp_path / "main_loop.c").write_text(LOOP_MAIN)
    b = tc.build_arm(project, main=tmp_path / "main_loop.c", name="loop")
    run = tc.run_qemu(b, timeout=30)
    assert run.exit_code == 0, run.stdout
    for n, ticks in zip(LOOP_ITERATIONS, run.ticks, strict=True):
        assert abs(ticks * tc.QEMU_INSNS_PER_TICK - 2 * n) <= tc.QEMU_INSNS_PER_TICK, (n, ticks)


@needs_arm
def test_ram_budget_overflow_fails_the_link_with_the_excess(tmp_path):
    folder = _stub_project(tmp_path / "budget")
    fits = tc.build_arm(folder, extra_cflags="-DSTUB_ARENA=65536")
    assert fits.bss >= 65536
    budget = fits.ram_used - 1234
    with pytest.raises(tc.LinkOverflowError, match=r"region `RAM' overflowed by 1234 bytes") as e:
        tc.build_arm(folder, ram_bytes=budget, extra_cflags="-DSTUB_ARENA=65536")
    assert isinstance(e.value, EdgevitError) and "\n" not in str(e.value)
    assert (e.value.region, e.value.overflow_bytes) == ("RAM", 1234)
    # the stack reservation counts too: the same arena with 1234 bytes less stack fits exactly
    exact = tc.build_arm(folder, ram_bytes=budget, stack_bytes=tc.DEFAULT_STACK_BYTES - 1234,
                         extra_cflags="-DSTUB_ARENA=65536")
    assert exact.ram_used == budget and exact.ram_free == 0
    with pytest.raises(tc.LinkOverflowError) as e:
        tc.build_arm(folder, flash_bytes=fits.flash_used - 100, extra_cflags="-DSTUB_ARENA=65536")
    assert e.value.overflows.get("FLASH") == 100


@needs_qemu
def test_hardfault_exits_with_its_code(tmp_path, project):
    (tmp_path / "main_fault.c").write_text(FAULT_MAIN)
    b = tc.build_arm(project, main=tmp_path / "main_fault.c", name="fault")
    run = tc.run_qemu(b, timeout=20)
    assert run.exit_code == tc.EXIT_HARDFAULT == 3
    assert "before" in run.stdout and "after" not in run.stdout
    assert run.fault.startswith("fault 3 ") and "bfar=0xf0000000" in run.fault
    with pytest.raises(EdgevitError, match=r"exited with 3 \(HardFault\): fault 3 pc="):
        run.check()


@needs_qemu
def test_stack_overflow_exits_with_its_code(tmp_path, project):
    (tmp_path / "main_stack.c").write_text(STACK_MAIN)
    b = tc.build_arm(project, main=tmp_path / "main_stack.c", name="stack")
    assert tc.run_qemu(b, timeout=20).exit_code == tc.EXIT_STACK_OVERFLOW == 5
    assert tc.max_stack_usage(project, name="stack") > 12 * 1024


@needs_qemu
def test_stack_estimate_bounds_the_measured_use(arm_build):
    run = tc.run_qemu(arm_build, timeout=30)
    estimate = tc.max_stack_usage(arm_build.folder)
    assert run.stack_used <= estimate < 2048, (run.stack_used, estimate)


@needs_qemu
def test_cortex_m4_build_runs_on_an386(tmp_path):
    folder = _stub_project(tmp_path / "m4", cpu="cortex-m4", ram_bytes=128 * 1024, stack_bytes=4096)
    b = tc.build_arm(folder)  # core and budget from project.mk
    assert (b.cpu, b.fpu, b.qemu_machine, b.ram_bytes, b.stack) == ("cortex-m4", "fpv4-sp-d16", "mps2-an386",
                                                                    128 * 1024, 4096)
    run = tc.run_qemu(b, timeout=30).check()
    assert run.outputs == [_expected(x) for x in _inputs()]


def test_unknown_core_is_a_user_error():
    with pytest.raises(EdgevitError, match="unknown MCU core 'cortex-m99'"):
        tc.cpu_flags("cortex-m99")
