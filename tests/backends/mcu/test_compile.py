"""`edgevit compile --target stm32*`: the generated C project reproduces the numpy int8 reference bit for
bit — on the host under ASan + UBSan (20 seeded inputs per model) and on an emulated Cortex-M7 / Cortex-M4
(QEMU mps2-an500 / mps2-an386) linked within the target's SRAM/flash — and budgets are enforced.

Skipped only when gcc, arm-none-eabi-gcc or qemu-system-arm are missing (setup.sh installs them).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgevit.backends.mcu import toolchain as tc
from edgevit.quant.reference import QuantizedModel

needs_host = pytest.mark.skipif(not tc.have_host_toolchain(), reason="gcc/make missing")
needs_qemu = pytest.mark.skipif(not (tc.have_arm_toolchain() and tc.have_qemu()),
                                reason=f"arm-none-eabi-gcc / qemu-system-arm missing ({tc.APT_HINT})")
MODELS = ["mcu_former", "mcu_deit", "mcu_shvit"]  # the MCU-sized ViTs with real softmax attention
HOST_INPUTS = 20
QEMU_INPUTS = 3


def edgevit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgevit", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def projects(tmp_path_factory) -> dict[str, Path]:
    """Each MCU model compiled once for stm32f746 through the CLI."""
    root = tmp_path_factory.mktemp("mcu")
    out = {}
    for name in MODELS:
        folder = root / name
        r = edgevit("compile", "--target", "stm32f746", name, "-o", str(folder))
        assert r.returncode == 0, r.stderr
        out[name] = folder
    return out


def seeded_inputs(q: QuantizedModel, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = q.shapes[q.input]
    return np.stack([q.quantize_input(rng.standard_normal(shape).astype(np.float32) * 1.5) for _ in range(count)])


def references(q: QuantizedModel, inputs: np.ndarray) -> list[bytes]:
    return [q.run(x)[q.outputs[0]].astype(np.int8).tobytes() for x in inputs]


@needs_host
def test_project_layout_and_memory_report(projects):
    folder = projects["mcu_former"]
    for f in ("model.h", "model.c", "weights.c", "ev_kernels.h", "ev_conv.c", "Makefile", "project.mk",
              "startup_cortexm.c", "cortexm.ld.in", "mcu_former.int8.json", "mcu_former.compile.md"):
        assert (folder / f).is_file(), f
    assert not (folder / "build").exists()  # sources only
    header = (folder / "model.h").read_text()
    assert "int edgevit_model_run(const int8_t *in, int8_t *out);" in header
    assert "EDGEVIT_MODEL_INPUT_ZERO_POINT" in header and "EDGEVIT_MODEL_OUTPUT_SCALE" in header
    model_c = (folder / "model.c").read_text()
    assert "malloc" not in model_c and "float" not in model_c and "double" not in model_c
    assert "const int8_t" in (folder / "weights.c").read_text()  # weights stay in flash
    mem = json.loads((folder / "mcu_former.compile.json").read_text())["mcu"]["memory"]
    assert mem["lower_bound"] <= mem["arena"] <= mem["no_sharing_peak"] <= mem["naive_sum"]
    assert mem["peak_sram"] == mem["arena"] + mem["stack"] + mem["io_buffers"] <= mem["sram_budget"] == 320 * 1024
    assert mem["linked"] and mem["flash"] == mem["linked"]["flash_used"] <= mem["flash_budget"]
    assert mem["flash"] > mem["weights"] > 200_000
    # "weights" is exactly what weights.c defines (weights, int16 layouts, constants, tables)
    obj = folder.parent / "mcu_former_weights.o"
    subprocess.run(["gcc", "-c", "-I", str(folder), str(folder / "weights.c"), "-o", str(obj)], check=True)
    nm = subprocess.run(["nm", "-S", "--defined-only", str(obj)], capture_output=True, text=True, check=True).stdout
    assert sum(int(line.split()[1], 16) for line in nm.splitlines() if len(line.split()) == 4) == mem["weights"]
    assert 0 < mem["linked"]["stack_measured"] <= mem["linked"]["stack_reserved"]
    assert mem["peak_at"]["op"] and mem["peak_at"]["tensors"]


@needs_host
@pytest.mark.parametrize("name", MODELS)
def test_host_build_under_sanitizers_is_bit_exact(projects, name):
    folder = projects[name]
    q = QuantizedModel.load(folder, name)
    inputs = seeded_inputs(q, HOST_INPUTS, seed=1)
    binary = tc.build_host(folder, sanitize=True)
    got = tc.run_host(binary, inputs.tobytes())
    assert got == b"".join(references(q, inputs))


@needs_qemu
@pytest.mark.parametrize("name", MODELS)
def test_cortex_m7_in_qemu_is_bit_exact(projects, name, tmp_path):
    q = QuantizedModel.load(projects[name], name)
    inputs = seeded_inputs(q, QEMU_INPUTS, seed=2)
    tc.write_test_inputs(projects[name], [x.tobytes() for x in inputs])
    extra = inputs.nbytes
    build = tc.build_arm(projects[name], flash_bytes=1024 * 1024 + extra, ram_bytes=320 * 1024,
                         flash_origin=0, ram_origin=0x20000000)
    assert build.flash_used - build.test_input_bytes <= 1024 * 1024 and build.ram_used <= 320 * 1024
    run = tc.run_qemu(build, timeout=120)
    assert run.exit_code == 0, run.stdout + run.stderr
    assert run.outputs == references(q, inputs)
    assert len(run.ticks) == QEMU_INPUTS and all(t > 0 for t in run.ticks)


@needs_qemu
def test_cortex_m4_target_runs_in_qemu(tmp_path):
    folder = tmp_path / "m4"
    r = edgevit("compile", "--target", "stm32f446", "mcu_former", "-o", str(folder))
    assert r.returncode == 0, r.stderr
    q = QuantizedModel.load(folder, "mcu_former")
    mem = json.loads((folder / "mcu_former.compile.json").read_text())["mcu"]["memory"]
    assert mem["sram_budget"] == 128 * 1024 and mem["peak_sram"] <= 128 * 1024
    inputs = seeded_inputs(q, 2, seed=3)
    tc.write_test_inputs(folder, [x.tobytes() for x in inputs])
    build = tc.build_arm(folder, flash_bytes=512 * 1024 + inputs.nbytes, flash_origin=0, ram_origin=0x20000000)
    assert build.cpu == "cortex-m4"
    run = tc.run_qemu(build, timeout=120)
    assert run.exit_code == 0, run.stdout + run.stderr
    assert run.outputs == references(q, inputs)


@needs_qemu
def test_link_fails_when_the_arena_exceeds_the_ram_region(projects):
    folder = projects["mcu_former"]
    mem = json.loads((folder / "mcu_former.compile.json").read_text())["mcu"]["memory"]
    budget = mem["arena"] // 2  # the arena alone no longer fits
    with pytest.raises(tc.LinkOverflowError) as err:
        tc.build_arm(folder, ram_bytes=budget, flash_bytes=2 * 1024 * 1024, flash_origin=0, ram_origin=0x20000000)
    assert err.value.overflow_bytes > mem["arena"] - budget
    assert "overflowed by" in str(err.value)


@needs_host
def test_over_sram_budget_is_refused_with_the_peak(tmp_path):
    out = tmp_path / "small"
    r = edgevit("compile", "--target", "stm32f746", "mcu_former", "-o", str(out), "--sram", "20K")
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()[-1]
    assert "needs" in line and "budget 20.0 KB" in line and "bytes over" in line and "peak at conv2d" in line
    assert not out.exists() and not list(tmp_path.glob(".small*"))


@needs_host
def test_over_flash_budget_is_refused(tmp_path):
    out = tmp_path / "f"
    r = edgevit("compile", "--target", "stm32f746", "mcu_former", "-o", str(out), "--flash", "100K")
    assert r.returncode == 2
    assert "of flash, budget 100.0 KB" in r.stderr and not out.exists()


def test_bad_budget_option_is_one_line(tmp_path):
    r = edgevit("compile", "--target", "stm32f746", "mcu_former", "-o", str(tmp_path / "x"), "--sram", "lots")
    assert r.returncode == 2 and "--sram 'lots': give bytes" in r.stderr
    r = edgevit("compile", "--target", "rpi4", "mcu_former", "-o", str(tmp_path / "x"), "--sram", "20K")
    assert r.returncode == 2 and "only apply to microcontroller targets" in r.stderr


@needs_qemu
def test_bench_counts_instructions_per_op_class(tmp_path):
    out = tmp_path / "bench"
    r = edgevit("bench", "--target", "stm32f746", "mcu_former", "-o", str(out))
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "mcu_former.bench.json").read_text())
    assert doc["instructions"] > doc["macs"] / 4 > 0  # no kernel does 4 MACs per instruction
    assert sum(op["instructions"] for op in doc["by_op"]) <= doc["instructions"]
    assert sum(op["instructions"] for op in doc["by_op"]) > 0.95 * doc["instructions"]  # steps cover the run
    assert {op["op"] for op in doc["by_op"]} >= {"conv2d", "linear", "matmul", "softmax", "layernorm"}
    assert doc["estimated_ms"] == round(doc["instructions"] / 216e6 * 1e3, 3) and "estimated" in doc["estimate_note"]
    assert (out / "mcu_former.bench.png").stat().st_size > 0 and (out / "project" / "model.c").is_file()


@needs_host
def test_same_model_compiles_to_the_same_bytes(projects, tmp_path):
    again = tmp_path / "again"
    r = edgevit("compile", "--target", "stm32f746", "mcu_former", "-o", str(again))
    assert r.returncode == 0, r.stderr
    first = projects["mcu_former"]
    for f in sorted(first.iterdir()):
        if f.suffix in (".c", ".h", ".mk", ".in", ".npz") or f.name in ("Makefile", "mcu_former.int8.json"):
            if f.name.startswith("test_input"):  # rewritten by the QEMU tests above
                continue
            assert f.read_bytes() == (again / f.name).read_bytes(), f.name


@pytest.mark.skipif(not (tc.have_host_toolchain() and shutil.which("valgrind")), reason="gcc or valgrind missing")
@pytest.mark.parametrize("name", MODELS)
def test_gcc_analyzer_and_valgrind_are_clean(projects, name, tmp_path):
    """The generated C under -Wall -Wextra -Werror -fanalyzer, then valgrind on the host binary."""
    folder = projects[name]
    q = QuantizedModel.load(folder, name)
    binary = tc.build_host(folder, extra_cflags="-fanalyzer")  # -Werror: any analyzer finding fails the build
    inputs = seeded_inputs(q, 2, seed=4)
    r = subprocess.run(["valgrind", "-q", "--error-exitcode=99", str(binary)], input=inputs.tobytes(),
                       capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert r.stdout == b"".join(references(q, inputs))


@needs_qemu
def test_int16_weights_when_flash_allows_else_int8(tmp_path, monkeypatch):
    """Doubled (int16) conv/linear weights are used when they fit the flash budget; when the link says they do
    not, compile falls back to int8 weights instead of failing."""
    import edgevit.backends.mcu as mcu
    from edgevit.cli import main

    assert main(["compile", "--target", "stm32f746", "mcu_deit", "-o", str(tmp_path / "wide")]) == 0
    wide = json.loads((tmp_path / "wide" / "mcu_deit.compile.json").read_text())["mcu"]["memory"]
    assert wide["int16_weights"] and "const int16_t" in (tmp_path / "wide" / "weights.c").read_text()

    monkeypatch.setattr(mcu, "CODE_ESTIMATE", 0)  # the estimate says int16 fits; only the link can tell
    budget = wide["flash"] - 1024
    assert main(["compile", "--target", "stm32f746", "mcu_deit", "-o", str(tmp_path / "narrow"),
                 "--flash", str(budget)]) == 0
    narrow = json.loads((tmp_path / "narrow" / "mcu_deit.compile.json").read_text())["mcu"]["memory"]
    assert not narrow["int16_weights"] and narrow["flash"] < budget
    assert "_weight16" not in (tmp_path / "narrow" / "weights.h").read_text()
