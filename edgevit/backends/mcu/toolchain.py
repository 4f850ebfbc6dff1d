"""Build and run the generated microcontroller C projects: natively (gcc), for Cortex-M (arm-none-eabi-gcc)
and in QEMU (qemu-system-arm, mps2 boards, semihosting).

A project folder holds the generated model (`model.h model.c weights.c ev_kernels.h ev_*.c`, optionally
`test_input.h/.c`) plus the runtime copied by `install_runtime` from ./runtime: `Makefile`,
`cortexm.ld.in`, `startup_cortexm.c`, `semihost.c/.h`, `main_host.c`, `main_arm.c`, and a generated
`project.mk` with the target's CPU flags and memory budget. Everything here drives that Makefile, so
`make host` / `make arm` / `make qemu` in the folder do exactly what these functions do.

Sizes (`ArmBuild`, from the section headers, `arm-none-eabi-objdump -h`: sizes, VMAs and load addresses):
  text   = .isr_vector + .text + .ARM.extab + .ARM.exidx (every flash section but .rodata)
  rodata = .rodata (weights, tables, test inputs)           data = .data    bss = .bss (the arena)
  stack  = .stack (the STACK_SIZE reservation)
  flash_used = end of the last flash byte (load addresses, so including the .data image) − FLASH origin
             = text + rodata + data + alignment padding
  ram_used   = end of the last RAM section − RAM origin = data + bss + stack + alignment padding
ram_used / flash_used are what the linker compares against the budgets: when one is over, the link fails
with "region `RAM' overflowed by N bytes" and N = ram_used − ram_bytes (raised as `LinkOverflowError`).

API: install_runtime, write_test_inputs (project folder); have_host_toolchain, have_arm_toolchain,
have_qemu; build_host → Path, run_host → bytes; build_arm → ArmBuild (LinkOverflowError when over budget);
run_qemu → QemuRun; max_stack_usage → int; symbol_sizes; cpu_flags / CORES (per-core gcc flags, QEMU machine).

Timing: main_arm.c reports SysTick ticks per run. On hardware those are CPU cycles; in QEMU under
`-icount shift=0` each tick is exactly QEMU_INSNS_PER_TICK = 40 guest instructions (measured: a
2-instruction loop of n iterations takes n/20 ticks, exact to ±1 tick up to 10^9 instructions, identical
from run to run), i.e. a deterministic instruction count, not a cycle estimate.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ...errors import EdgevitError

RUNTIME_DIR = Path(__file__).resolve().parent / "runtime"
RUNTIME_FILES = ("Makefile", "cortexm.ld.in", "startup_cortexm.c", "semihost.c", "semihost.h", "main_host.c",
                 "main_arm.c", "main_profile.c")
APT_HINT = "apt-get install -y --no-install-recommends make gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"
ARM_PREFIX = "arm-none-eabi-"
QEMU = "qemu-system-arm"
QEMU_INSNS_PER_TICK = 40  # semihost.h EV_QEMU_INSNS_PER_TICK: mps2 SysTick 25 MHz, icount shift=0 → 1 ns/insn

# Exit codes of the Cortex-M runtime (semihost.h); qemu-system-arm exits with them.
EXIT_CODES = {0: "ok", 1: "edgevit_model_run failed", 2: "usage error in main", 3: "HardFault",
              4: "unexpected exception or interrupt", 5: "stack overflow (STACK_SIZE reservation used up)"}
EXIT_HARDFAULT = 3
EXIT_STACK_OVERFLOW = 5

DEFAULT_FLASH_ORIGIN = 0x00000000  # where QEMU's mps2 boards boot from (STM32 parts alias flash there too)
DEFAULT_RAM_ORIGIN = 0x20000000
DEFAULT_FLASH_BYTES = 1024 * 1024
DEFAULT_RAM_BYTES = 320 * 1024
DEFAULT_STACK_BYTES = 8 * 1024

# Stack estimate allowances (max_stack_usage): a call into code without .su/.ci information (newlib's
# memcpy/memset, libgcc's 64-bit division), and one interrupt (SysTick) on top of the deepest frame:
# 8 bytes of alignment + the 104-byte exception frame with FP context + the handler's own frame.
LIBRARY_CALL_ALLOWANCE = 64
EXCEPTION_FRAME_BYTES = 8 + 104


@dataclass(frozen=True)
class Core:
    """A Cortex-M core: its gcc flags, default FPU and the QEMU machine that runs its builds."""

    name: str
    mcpu: str
    default_fpu: str  # "" = no FPU (soft float)
    qemu_machine: str

    def flags(self, fpu: str | None = None) -> list[str]:
        fpu = self.default_fpu if fpu is None else fpu
        flags = [f"-mcpu={self.mcpu}", "-mthumb"]
        if fpu and fpu != "none":
            return flags + [f"-mfpu={fpu}", "-mfloat-abi=hard"]
        return flags + ["-mfloat-abi=soft"]


CORES: dict[str, Core] = {
    "cortex-m7": Core("cortex-m7", "cortex-m7", "fpv5-sp-d16", "mps2-an500"),
    "cortex-m4": Core("cortex-m4", "cortex-m4", "fpv4-sp-d16", "mps2-an386"),
}


def core(cpu: str) -> Core:
    try:
        return CORES[cpu]
    except KeyError:
        raise EdgevitError(f"unknown MCU core {cpu!r}; known: {', '.join(sorted(CORES))}") from None


def cpu_flags(cpu: str, fpu: str | None = None) -> list[str]:
    """gcc flags for `cpu` ("cortex-m7", "cortex-m4"); fpu None = the core's default, "none"/"" = soft float."""
    return core(cpu).flags(fpu)


# ---- availability --------------------------------------------------------------------------------------

def have_host_toolchain() -> bool:
    return bool(shutil.which("gcc") and shutil.which("make"))


@functools.lru_cache(maxsize=None)
def have_arm_toolchain() -> bool:
    """arm-none-eabi-gcc/objdump, make, and newlib-nano (libnewlib-arm-none-eabi: nano.specs)."""
    if not all(shutil.which(t) for t in (f"{ARM_PREFIX}gcc", f"{ARM_PREFIX}objdump", "make")):
        return False
    proc = subprocess.run([f"{ARM_PREFIX}gcc", "-print-file-name=nano.specs"], capture_output=True, text=True)
    return proc.returncode == 0 and os.path.isabs(proc.stdout.strip())


def have_qemu() -> bool:
    return bool(shutil.which(QEMU))


def _require(tool: str) -> None:
    if not shutil.which(tool):
        raise EdgevitError(f"{tool} not found; install it with: {APT_HINT}")


# ---- project folder ------------------------------------------------------------------------------------

def install_runtime(folder: str | Path, cpu: str = "cortex-m7", fpu: str | None = None,
                    flash_bytes: int = DEFAULT_FLASH_BYTES, ram_bytes: int = DEFAULT_RAM_BYTES,
                    stack_bytes: int = DEFAULT_STACK_BYTES, flash_origin: int = DEFAULT_FLASH_ORIGIN,
                    ram_origin: int = DEFAULT_RAM_ORIGIN) -> None:
    """Copy the runtime into `folder` and write its project.mk (the defaults of `make arm` there)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in RUNTIME_FILES:
        shutil.copyfile(RUNTIME_DIR / name, folder / name)
    c = core(cpu)
    fpu = c.default_fpu if fpu is None else fpu
    lines = [
        "# Written by edgevit: this project's target. Command-line variables override these.",
        f"EDGEVIT_CPU := {cpu}",
        f"EDGEVIT_FPU := {fpu or 'none'}",
        f"CPU_FLAGS := {' '.join(c.flags(fpu))}",
        f"FLASH_ORIGIN := {flash_origin:#010x}",
        f"FLASH_LENGTH := {int(flash_bytes)}",
        f"RAM_ORIGIN := {ram_origin:#010x}",
        f"RAM_LENGTH := {int(ram_bytes)}",
        f"STACK_SIZE := {int(stack_bytes)}",
        f"QEMU_MACHINE := {c.qemu_machine}",
    ]
    (folder / "project.mk").write_text("\n".join(lines) + "\n")


def write_test_inputs(folder: str | Path, inputs: Sequence[bytes]) -> None:
    """test_input.h/.c with `edgevit_test_inputs[EDGEVIT_TEST_COUNT][EDGEVIT_MODEL_INPUT_SIZE]` (int8)."""
    folder = Path(folder)
    inputs = [bytes(x) for x in inputs]
    if not inputs or len({len(x) for x in inputs}) != 1:
        raise EdgevitError("test inputs must be one or more byte strings of the same length")
    size = len(inputs[0])
    (folder / "test_input.h").write_text(
        "/* Generated by edgevit: inputs main_arm.c runs the model on. */\n"
        "#ifndef EDGEVIT_TEST_INPUT_H\n#define EDGEVIT_TEST_INPUT_H\n\n#include <stdint.h>\n\n#include \"model.h\"\n\n"
        f"#define EDGEVIT_TEST_COUNT {len(inputs)}\n"
        "extern const int8_t edgevit_test_inputs[EDGEVIT_TEST_COUNT][EDGEVIT_MODEL_INPUT_SIZE];\n\n#endif\n")
    rows = []
    for x in inputs:
        values = [str(b - 256 if b > 127 else b) for b in x]
        lines = [", ".join(values[i:i + 24]) for i in range(0, len(values), 24)]
        rows.append("    {\n        " + ",\n        ".join(lines) + "\n    }")
    (folder / "test_input.c").write_text(
        "/* Generated by edgevit. */\n#include \"test_input.h\"\n\n"
        f"typedef char edgevit_test_input_size_check[EDGEVIT_MODEL_INPUT_SIZE == {size} ? 1 : -1];\n\n"
        "const int8_t edgevit_test_inputs[EDGEVIT_TEST_COUNT][EDGEVIT_MODEL_INPUT_SIZE] = {\n"
        + ",\n".join(rows) + "\n};\n")


def _project_settings(folder: Path) -> dict[str, str]:
    settings: dict[str, str] = {}
    mk = folder / "project.mk"
    if mk.is_file():
        for line in mk.read_text().splitlines():
            m = re.match(r"\s*([A-Z_]+)\s*:?=\s*(.*?)\s*$", line)
            if m:
                settings[m.group(1)] = m.group(2)
    return settings


def _ld_int(text: str) -> int:
    """An ld-syntax size: 0x1000, 4096, 320K, 1M."""
    m = re.fullmatch(r"\s*(0[xX][0-9a-fA-F]+|\d+)\s*([KkMm]?)\s*", text)
    if not m:
        raise EdgevitError(f"cannot read size {text!r} in project.mk")
    return int(m.group(1), 0) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]


# ---- make ----------------------------------------------------------------------------------------------

# Most specific first; the match (not the whole line) is reported, so paths and make's noise drop out.
_ERROR_PATTERNS = (
    re.compile(r"region [`'‘]?\w+['’]? overflowed by \d+ bytes?"),
    re.compile(r"undefined reference to .*"),
    re.compile(r"multiple definition of .*"),
    re.compile(r"No rule to make target .*"),
    re.compile(r"cannot (find|read spec file) .*"),
    re.compile(r"^(?!collect2).*\berror\b:.*"),  # "file.c:3:4: error: ..." (not "collect2: error: ld returned")
    re.compile(r".*\berror\b:.*"),
)


def _key_error_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for pattern in _ERROR_PATTERNS:
        for line in lines:
            m = pattern.search(line)
            if m:
                return m.group(0)
    return lines[-1] if lines else "no output"


def _make(folder: Path, target: str, variables: dict[str, str], timeout: float, what: str) -> None:
    _require("make")
    args = ["make", "-C", str(folder), f"-j{max(1, min(8, os.cpu_count() or 1))}", target]
    args += [f"{k}={v}" for k, v in variables.items() if v is not None]
    env = {**os.environ, "LC_ALL": "C"}
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise EdgevitError(f"{what} of {folder} timed out after {timeout:g} s") from None
    if proc.returncode != 0:
        output = proc.stderr + "\n" + proc.stdout
        overflows = {m.group(1): int(m.group(2)) for m in
                     re.finditer(r"region [`'‘]?(\w+)['’]? overflowed by (\d+) bytes?", output)}
        if overflows:
            raise LinkOverflowError(folder, overflows)
        raise EdgevitError(f"{what} of {folder} failed: {_key_error_line(output)}")


class LinkOverflowError(EdgevitError):
    """The ARM link does not fit the memory budget: `overflows` maps region ("RAM", "FLASH") → bytes over."""

    def __init__(self, folder: Path, overflows: dict[str, int]):
        self.overflows = dict(overflows)
        self.region = "RAM" if "RAM" in overflows else next(iter(overflows))
        self.overflow_bytes = overflows[self.region]
        detail = "; ".join(f"region `{r}' overflowed by {n} bytes" for r, n in overflows.items())
        super().__init__(f"ARM link of {folder} does not fit the memory budget: {detail}")


def _common_vars(name: str | None, main: str | Path | None, extra_srcs: Sequence[str | Path],
                 extra_cflags: str | Sequence[str]) -> dict[str, str]:
    variables: dict[str, str] = {}
    if name:
        variables["NAME"] = name
    if main:
        variables["MAIN"] = str(main)
    if extra_srcs:
        variables["EXTRA_SRCS"] = " ".join(str(s) for s in extra_srcs)
    if extra_cflags:
        variables["EXTRA_CFLAGS"] = extra_cflags if isinstance(extra_cflags, str) else " ".join(extra_cflags)
    return variables


# ---- host ----------------------------------------------------------------------------------------------

def build_host(folder: str | Path, sanitize: bool = False, main: str | Path | None = None, *,
               name: str | None = None, extra_srcs: Sequence[str | Path] = (),
               extra_cflags: str | Sequence[str] = "", timeout: float = 600) -> Path:
    """`make host` in `folder`: the native binary (build/host[-san]/<name>). `main` replaces main_host.c."""
    folder = Path(folder).resolve()
    _require("gcc")
    variables = _common_vars(name, main, extra_srcs, extra_cflags)
    variables["SANITIZE"] = "1" if sanitize else "0"
    _make(folder, "host", variables, timeout, "host build" + (" (sanitized)" if sanitize else ""))
    return folder / "build" / ("host-san" if sanitize else "host") / (name or "model")


def run_host(binary: str | Path, input_bytes: bytes = b"", timeout: float = 60) -> bytes:
    """Run a host binary with `input_bytes` on stdin; its stdout. Non-zero exit → EdgevitError."""
    env = {**os.environ}
    env.setdefault("ASAN_OPTIONS", "detect_leaks=0")  # no heap to leak; LeakSanitizer needs ptrace
    try:
        proc = subprocess.run([str(binary)], input=input_bytes, capture_output=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise EdgevitError(f"{Path(binary).name} timed out after {timeout:g} s") from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace")
        key = next((line.strip() for line in err.splitlines()
                    if "ERROR: AddressSanitizer" in line or "runtime error:" in line), None)
        if key is None:
            lines = [line.strip() for line in err.splitlines() if line.strip()]
            key = lines[-1] if lines else "no message"
        raise EdgevitError(f"{Path(binary).name} exited with {proc.returncode}: {key}")
    return proc.stdout


# ---- arm -----------------------------------------------------------------------------------------------

@dataclass
class ArmBuild:
    elf: Path
    map: Path
    folder: Path
    name: str
    cpu: str
    fpu: str
    qemu_machine: str
    flash_origin: int
    flash_bytes: int  # budgets
    ram_origin: int
    ram_bytes: int
    stack_bytes: int
    sections: dict[str, int] = field(default_factory=dict)  # every allocated section's size
    text: int = 0
    rodata: int = 0
    data: int = 0
    bss: int = 0
    stack: int = 0
    flash_used: int = 0
    ram_used: int = 0
    test_input_bytes: int = 0  # rodata of edgevit_test_inputs (in flash_used; not part of a deployment)

    @property
    def flash_free(self) -> int:
        return self.flash_bytes - self.flash_used

    @property
    def ram_free(self) -> int:
        return self.ram_bytes - self.ram_used


def build_arm(folder: str | Path, cpu: str | None = None, fpu: str | None = None, flash_bytes: int | None = None,
              ram_bytes: int | None = None, stack_bytes: int | None = None, *, flash_origin: int | None = None,
              ram_origin: int | None = None, main: str | Path | None = None, name: str | None = None,
              extra_srcs: Sequence[str | Path] = (), extra_cflags: str | Sequence[str] = "",
              opt: str | None = None, timeout: float = 600) -> ArmBuild:
    """`make arm` in `folder` → ArmBuild (elf, map, sizes). Unset arguments come from the folder's project.mk
    (install_runtime), else the defaults (cortex-m7, 1 MiB flash at 0, 320 KiB RAM at 0x20000000, 8 KiB
    stack). Over budget → LinkOverflowError (an EdgevitError) with `.overflow_bytes`; other failures →
    EdgevitError with the compiler's key line."""
    folder = Path(folder).resolve()
    _require(f"{ARM_PREFIX}gcc")
    settings = _project_settings(folder)
    project_cpu = settings.get("EDGEVIT_CPU", "cortex-m7")
    cpu = cpu or project_cpu
    c = core(cpu)
    if fpu is None:  # the project's FPU for the project's core, else the core's default
        fpu = settings.get("EDGEVIT_FPU", c.default_fpu) if cpu == project_cpu else c.default_fpu
    fpu = "" if fpu == "none" else fpu

    def pick(value: int | None, key: str, default: int) -> int:
        return int(value) if value is not None else (_ld_int(settings[key]) if key in settings else default)

    build = ArmBuild(
        elf=folder / "build" / "arm" / f"{name or 'model'}.elf", map=folder / "build" / "arm" / f"{name or 'model'}.map",
        folder=folder, name=name or "model", cpu=cpu, fpu=fpu or "none", qemu_machine=c.qemu_machine,
        flash_origin=pick(flash_origin, "FLASH_ORIGIN", DEFAULT_FLASH_ORIGIN),
        flash_bytes=pick(flash_bytes, "FLASH_LENGTH", DEFAULT_FLASH_BYTES),
        ram_origin=pick(ram_origin, "RAM_ORIGIN", DEFAULT_RAM_ORIGIN),
        ram_bytes=pick(ram_bytes, "RAM_LENGTH", DEFAULT_RAM_BYTES),
        stack_bytes=pick(stack_bytes, "STACK_SIZE", DEFAULT_STACK_BYTES))
    variables = _common_vars(name, main, extra_srcs, extra_cflags)
    variables.update(CPU_FLAGS=" ".join(c.flags(fpu)), FLASH_ORIGIN=f"{build.flash_origin:#x}",
                     FLASH_LENGTH=str(build.flash_bytes), RAM_ORIGIN=f"{build.ram_origin:#x}",
                     RAM_LENGTH=str(build.ram_bytes), STACK_SIZE=str(build.stack_bytes),
                     QEMU_MACHINE=c.qemu_machine)
    if opt:
        variables["ARM_OPT"] = opt
    _make(folder, "arm", variables, timeout, f"ARM build ({cpu})")
    _read_sizes(build)
    return build


def _read_sizes(build: ArmBuild) -> None:
    objdump = f"{ARM_PREFIX}objdump"
    _require(objdump)
    proc = subprocess.run([objdump, "-h", str(build.elf)], capture_output=True, text=True,
                          env={**os.environ, "LC_ALL": "C"})
    if proc.returncode != 0:
        raise EdgevitError(f"{objdump} -h {build.elf} failed: {proc.stderr.strip()}")
    lines = proc.stdout.splitlines()
    flash_end = build.flash_origin
    ram_end = build.ram_origin
    flash_range = range(build.flash_origin, build.flash_origin + build.flash_bytes + 1)
    ram_range = range(build.ram_origin, build.ram_origin + build.ram_bytes + 1)
    for i, line in enumerate(lines):
        m = re.match(r"\s*\d+\s+(\S+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+[0-9a-f]+\s+2\*\*\d+", line)
        if not m or i + 1 >= len(lines) or "ALLOC" not in lines[i + 1]:
            continue
        name, size, vma, lma = m.group(1), int(m.group(2), 16), int(m.group(3), 16), int(m.group(4), 16)
        build.sections[name] = size
        if lma in flash_range and "LOAD" in lines[i + 1]:
            flash_end = max(flash_end, lma + size)
        if vma in ram_range:
            ram_end = max(ram_end, vma + size)
    s = build.sections
    build.rodata = s.get(".rodata", 0)
    build.data = s.get(".data", 0)
    build.bss = s.get(".bss", 0)
    build.stack = s.get(".stack", 0)
    build.text = sum(n for k, n in s.items() if k not in (".rodata", ".data", ".bss", ".stack"))
    build.flash_used = flash_end - build.flash_origin
    build.ram_used = ram_end - build.ram_origin
    build.test_input_bytes = symbol_sizes(build.elf).get("edgevit_test_inputs", 0)


def symbol_sizes(elf: str | Path) -> dict[str, int]:
    """Sizes of the sized symbols (functions, arrays) of an ELF, from `arm-none-eabi-nm -S`."""
    nm = f"{ARM_PREFIX}nm"
    _require(nm)
    proc = subprocess.run([nm, "-S", str(elf)], capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"})
    if proc.returncode != 0:
        raise EdgevitError(f"{nm} -S {elf} failed: {proc.stderr.strip()}")
    sizes: dict[str, int] = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4:
            sizes[parts[3]] = max(sizes.get(parts[3], 0), int(parts[1], 16))
    return sizes


# ---- qemu ----------------------------------------------------------------------------------------------

@dataclass
class QemuRun:
    exit_code: int
    stdout: str
    stderr: str
    outputs: list[bytes]  # "out <i> <hex>" lines, by i
    ticks: list[int]  # "ticks <i> <n>" lines, by i
    instructions: list[int] | None  # ticks · QEMU_INSNS_PER_TICK when run with icount, else None
    stack_used: int | None  # "stack <bytes>": the measured stack high-water mark
    fault: str | None  # the "fault ..." line of a HardFault

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def check(self) -> "QemuRun":
        """self, or EdgevitError describing the failure."""
        if self.exit_code != 0:
            what = EXIT_CODES.get(self.exit_code, "non-zero exit")
            detail = self.fault or next((line for line in reversed(self.stdout.splitlines()) if line.strip()), "")
            raise EdgevitError(f"QEMU run exited with {self.exit_code} ({what})" + (f": {detail}" if detail else ""))
        return self


def run_qemu(elf: str | Path | ArmBuild, timeout: float = 60, icount: bool = True,
             machine: str | None = None) -> QemuRun:
    """Run an ELF on a QEMU mps2 board (the build's core's machine, else mps2-an500 = Cortex-M7) with
    semihosting on stdout; parse main_arm.c's lines. A non-zero exit is returned, not raised (see .check())."""
    _require(QEMU)
    if isinstance(elf, ArmBuild):
        machine = machine or elf.qemu_machine
        elf = elf.elf
    machine = machine or CORES["cortex-m7"].qemu_machine
    args = [QEMU, "-M", machine, "-display", "none", "-monitor", "none", "-serial", "none",
            "-chardev", "stdio,id=sh0", "-semihosting-config", "enable=on,target=native,chardev=sh0",
            "-kernel", str(elf)]
    if icount:
        args[3:3] = ["-icount", "shift=0"]
    try:
        proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise EdgevitError(f"QEMU run of {Path(elf).name} timed out after {timeout:g} s") from None
    stdout = proc.stdout.decode(errors="replace")
    outputs: dict[int, bytes] = {}
    ticks: dict[int, int] = {}
    stack_used = fault = None
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "out" and parts[1].isdigit():
            outputs[int(parts[1])] = bytes.fromhex(parts[2])
        elif len(parts) == 2 and parts[0] == "out" and parts[1].isdigit():
            outputs[int(parts[1])] = b""
        elif len(parts) == 3 and parts[0] == "ticks" and parts[1].isdigit() and parts[2].isdigit():
            ticks[int(parts[1])] = int(parts[2])
        elif len(parts) == 2 and parts[0] == "stack" and parts[1].isdigit():
            stack_used = int(parts[1])
        elif parts and parts[0] == "fault":
            fault = line.strip()
    tick_list = [ticks[i] for i in sorted(ticks)]
    return QemuRun(exit_code=proc.returncode, stdout=stdout, stderr=proc.stderr.decode(errors="replace"),
                   outputs=[outputs[i] for i in sorted(outputs)], ticks=tick_list,
                   instructions=[t * QEMU_INSNS_PER_TICK for t in tick_list] if icount else None,
                   stack_used=stack_used, fault=fault)


# ---- stack estimate -------------------------------------------------------------------------------------

def max_stack_usage(folder: str | Path, name: str = "model") -> int:
    """Worst-case stack bytes of the last `build_arm(folder, name=name)`, from gcc's -fcallgraph-info=su
    (.ci: the call graph after inlining, with each function's frame) and -fstack-usage (.su) files.

    Estimate = the deepest call chain from Reset_Handler (sum of frames along it; a call to a function
    without stack information — newlib, libgcc — counts LIBRARY_CALL_ALLOWANCE bytes; an indirect call
    counts the largest frame of any function plus that allowance) + EXCEPTION_FRAME_BYTES + the largest
    handler frame for one interrupt (SysTick) arriving at the deepest point. Conservative: every call edge
    is taken to be live, tail calls included. Without .ci files it falls back to the sum of the frames of
    main and edgevit_model_run and twice the largest other frame (kernel + one helper) plus the same
    allowances. Recursion or an unbounded dynamic frame (a VLA, alloca) → EdgevitError.
    """
    folder = Path(folder).resolve()
    arm_dir = folder / "build" / "arm"
    link = arm_dir / f"{name}.link"
    if not link.is_file():
        raise EdgevitError(f"no ARM build named {name!r} in {folder} (run build_arm first)")
    stems = [Path(tok).stem for tok in link.read_text().split() if tok.endswith(".o")]
    frames: dict[str, int] = {}
    edges: dict[str, list[str]] = {}
    have_ci = all((arm_dir / f"{s}.ci").is_file() for s in stems)
    for stem in stems:
        su = arm_dir / f"{stem}.su"
        if not su.is_file():
            raise EdgevitError(f"{su} is missing (the build did not use -fstack-usage)")
        for line in su.read_text().splitlines():
            parts = line.rsplit("\t", 2)
            if len(parts) != 3:
                continue
            if parts[2].strip() == "dynamic":
                raise EdgevitError(f"unbounded stack frame in {parts[0]} (a variable-length array or alloca)")
        if not have_ci:
            for line in su.read_text().splitlines():
                parts = line.rsplit("\t", 2)
                if len(parts) == 3:
                    fn = parts[0].rsplit(":", 1)[-1]
                    frames[fn] = max(frames.get(fn, 0), int(parts[1]))
            continue
        text = (arm_dir / f"{stem}.ci").read_text()
        for m in re.finditer(r'node: \{ title: "([^"]+)" label: "[^"]*?\\n(\d+) bytes \(([^)]*)\)', text):
            if m.group(3) == "dynamic":
                raise EdgevitError(f"unbounded stack frame in {m.group(1)} (a variable-length array or alloca)")
            frames[m.group(1)] = max(frames.get(m.group(1), 0), int(m.group(2)))
        for m in re.finditer(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"', text):
            edges.setdefault(m.group(1), []).append(m.group(2))
    handlers = ("SysTick_Handler", "HardFault_Handler", "Default_Handler", "NMI_Handler")
    interrupt = EXCEPTION_FRAME_BYTES + max((frames.get(h, 0) for h in handlers), default=0)
    if not have_ci:
        others = sorted((n for f, n in frames.items() if f not in ("main", "edgevit_model_run", "Reset_Handler")
                         and f not in handlers), reverse=True)
        biggest = others[0] if others else 0
        return (frames.get("Reset_Handler", 0) + frames.get("main", 0) + frames.get("edgevit_model_run", 0)
                + 2 * biggest + LIBRARY_CALL_ALLOWANCE + interrupt)

    largest = max(frames.values(), default=0)
    depth: dict[str, int] = {}
    active: set[str] = set()

    def deepest(fn: str) -> int:
        if fn in depth:
            return depth[fn]
        if fn == "__indirect_call":
            return largest + LIBRARY_CALL_ALLOWANCE
        if fn not in frames:
            return LIBRARY_CALL_ALLOWANCE
        if fn in active:
            raise EdgevitError(f"recursion through {fn.split(':')[-1]}: the stack depth has no static bound")
        active.add(fn)
        below = max((deepest(callee) for callee in edges.get(fn, ())), default=0)
        active.discard(fn)
        depth[fn] = frames[fn] + below
        return depth[fn]

    root = "Reset_Handler" if "Reset_Handler" in frames else "main"
    return deepest(root) + interrupt
