"""TVM backend: optimized ONNX → Relax → one shared library per target (x86, ARM boards), plus a runner.

out/ receives `<name>.so` (weights embedded as constants: no params file to ship), `<name>.tvm.json`
(inputs/outputs, target, TVM version, schedules applied) and `run.py`. MetaSchedule databases come from
`schedules/<target>/<model>/` (or `$EDGEVIT_SCHEDULES/<target>/<model>/`); without one the build is
untuned, and the terminal says so. Host-arch builds are checked against onnxruntime before being written.
Targets with `gemm_microkernels = "avx512"` or `"avx2"` (the x86 ones) take their 1x1 and 3x3 convs, matmuls and small
conv MLPs off MetaSchedule: those PrimFuncs call edgevit's micro-kernels (ev_gemm_x86.c, linked into the library),
with the weights packed into panels at compile time.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import platform
import shutil
import time
from pathlib import Path

import onnx
import onnx.inliner

from .. import BackendResult
from ... import ui
from ...artifacts import md_table
from ...errors import EdgevitError, ParityError
from ...ir import graph as G
from ...ir.numerics import Parity, run_ort

TOLERANCE = 1e-4  # max abs error vs onnxruntime, as a fraction of the output range
RUNNER = Path(__file__).with_name("runner_template.py")


def schedules_dir() -> Path:
    """schedules/ beside the package (the repository checkout), or $EDGEVIT_SCHEDULES."""
    return Path(os.environ.get("EDGEVIT_SCHEDULES") or Path(__file__).resolve().parents[3] / "schedules")


def _tensor_specs(model: onnx.ModelProto) -> list[dict]:
    specs = []
    for vi in G.graph_inputs(model):
        shape = G.value_shape(vi)
        if not all(isinstance(d, int) and d > 0 for d in shape):
            raise EdgevitError(f"input '{vi.name}' has a dynamic shape {shape}; give --input-size/--batch")
        specs.append({"name": vi.name, "shape": shape, "dtype": G.value_dtype(vi).name})
    return specs


def _constants_as_tensors(model: onnx.ModelProto) -> None:
    """Rewrite Constant(value_float/value_ints/...) as Constant(value=tensor), in place.

    TVM's importer reads only `value`, and inlined function bodies (edgevit.Attention's scale) use the
    scalar forms.
    """
    kinds = {"value_float": (onnx.TensorProto.FLOAT, False), "value_floats": (onnx.TensorProto.FLOAT, True),
             "value_int": (onnx.TensorProto.INT64, False), "value_ints": (onnx.TensorProto.INT64, True)}
    for node in model.graph.node:
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or len(node.attribute) != 1:
            continue
        attr = node.attribute[0]
        if attr.name in kinds:
            elem, is_list = kinds[attr.name]
            value = onnx.helper.get_attribute_value(attr)
            tensor = onnx.helper.make_tensor("value", elem, [len(value)] if is_list else [],
                                             list(value) if is_list else [value])
            del node.attribute[:]
            node.attribute.append(onnx.helper.make_attribute("value", tensor))


def _gelu_as_contrib_op(model: onnx.ModelProto) -> onnx.ModelProto:
    """edgevit.Gelu nodes as com.microsoft.Gelu, the same exact (erf) GELU, on a copy.

    TVM's importer takes that op to relax.nn.gelu (adapter._legalize_gelu), which scales erf's input by a
    multiply; inlining edgevit.Gelu's function body instead divides by √2: one more vdivps per element, on
    top of fast_erf's own, in every fc1 + GELU kernel."""
    if not any(n.domain == "edgevit" and n.op_type == "Gelu" for n in model.graph.node):
        return model
    model = copy.deepcopy(model)
    for node in model.graph.node:
        if node.domain == "edgevit" and node.op_type == "Gelu":
            node.domain = "com.microsoft"
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return model


def schedule_folder_name(name: str, input_size: tuple[int, int] | None) -> str:
    """`<model>` for the model's default input size, `<model>-<H>x<W>` for a size given with --input-size."""
    return f"{name}-{input_size[0]}x{input_size[1]}" if input_size else name


def _image_size(inputs: list[dict]) -> tuple[int, int] | None:
    for spec in inputs:
        if len(spec["shape"]) == 4:
            return tuple(spec["shape"][2:])  # type: ignore[return-value]
    return None


def _database_folder(target, name: str, inputs: list[dict] | None = None) -> Path | None:
    """`<target>/<model>-<H>x<W>/` (tuned with --input-size) if present, else `<target>/<model>/`."""
    size = _image_size(inputs or [])
    names = ([schedule_folder_name(name, size)] if size else []) + [name]
    for candidate in names:
        folder = schedules_dir() / target.name / candidate
        files = [folder / "database_workload.json", folder / "database_tuning_record.json"]
        present = [f.exists() for f in files]
        if not any(present):
            continue
        if not all(present):
            raise EdgevitError(f"{folder}: needs both database_workload.json and database_tuning_record.json")
        return folder
    return None


def conv_layout(target) -> str:
    """The conv2d layout the target's [tvm] table asks for (NCHW unless it sets `layout`)."""
    return target.options.get("layout", "NCHW")


def compare_outputs(reference: list, got: list) -> Parity:
    """Worst difference of `got` from the onnxruntime `reference` outputs."""
    p = Parity()
    for r, g in zip(reference, got):
        p.update(r, g)
    return p


@functools.cache
def host_cpu_flags() -> frozenset[str]:
    """This host's CPU feature flags as /proc/cpuinfo names them (empty where there is no /proc/cpuinfo)."""
    try:
        return frozenset(Path("/proc/cpuinfo").read_text().split())
    except OSError:  # not Linux: nothing to compare, so a target asking for flags is not run here
        return frozenset()


def count_cores(cpuinfo: str, allowed: set[int]) -> int:
    """Physical cores among the `allowed` CPUs: distinct (physical id, core id) pairs in /proc/cpuinfo's text
    (hyper-threads of one core count once); len(allowed) where the text says nothing of the topology."""
    cores = set()
    for block in cpuinfo.split("\n\n"):
        fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in block.splitlines() if ":" in line)}
        if "core id" in fields and fields.get("processor", "").isdigit() and int(fields["processor"]) in allowed:
            cores.add((fields.get("physical id", "0"), fields["core id"]))
    return min(len(cores), len(allowed)) if cores else len(allowed)


@functools.cache
def host_cores() -> int:
    """Physical cores this process may run on (its CPU affinity mask, hyper-threads counted once)."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    try:
        return count_cores(Path("/proc/cpuinfo").read_text(), allowed)
    except OSError:
        return len(allowed)


def host_mismatch(target) -> str | None:
    """Why this host cannot run `target`'s libraries, or None if it can: another architecture, or CPU features
    (the [tvm] table's `cpu_flags`, as /proc/cpuinfo names them) it lacks — running would die on SIGILL."""
    arch = target.options.get("runtime_arch", platform.machine())
    if arch != platform.machine():
        return f"runs on {arch}, not on this {platform.machine()} host"
    missing = sorted(set(target.options.get("cpu_flags", [])) - host_cpu_flags())
    if missing:
        return f"needs CPU features this host lacks ({', '.join(missing)})"
    return None


def require_runnable(target, remote) -> None:
    """Fail early (before any model work) when `target` cannot run here and no remote device was given."""
    why = host_mismatch(target)
    if why and remote is None:
        raise EdgevitError(f"target {target.name} {why}: pass --rpc HOST:PORT of a TVM RPC server on the device "
                           "(or --tracker HOST:PORT --key K)")


def prepare(model: onnx.ModelProto, target):
    """What compile and tune share: (inlined model, input specs, adapter, TVM target, lowered module).

    Tuning and compiling must lower identically, or a database's workloads would not match.
    """
    opts = target.options
    if target.backend != "tvm" or not isinstance(opts.get("target"), dict):
        raise EdgevitError(f"{target.path}: the [tvm] table needs a 'target' table (TVM target dict)")
    model = onnx.inliner.inline_local_functions(_gelu_as_contrib_op(model))
    _constants_as_tensors(model)
    inputs = _tensor_specs(model)

    from . import adapter

    bad = adapter.unsupported_ops(model)
    if bad:
        raise EdgevitError(f"TVM's ONNX importer cannot convert {len(bad)} op type(s): {', '.join(bad)}; "
                           "nothing was compiled")
    tvm_target = adapter.make_target(opts["target"], str(target.path))
    isa = gemm_microkernels(target)  # checked before any model work
    layout = conv_layout(target)
    if layout not in adapter.CONV_LAYOUTS:
        raise EdgevitError(f"{target.path}: layout '{layout}' is not one of {', '.join(adapter.CONV_LAYOUTS)}")
    with ui.step("import ONNX into TVM Relax"):
        mod = adapter.import_onnx(model, {s["name"]: s["shape"] for s in inputs}, {s["name"]: s["dtype"] for s in inputs})
    with ui.step("lower to TIR (legalize, fold, fuse)"):
        mod = adapter.lower(mod, tvm_target, layout, gemm_isa=isa)
    if isa:
        with ui.step(f"schedule convs and matmuls onto the {isa} GEMM micro-kernels"):
            mod, _ = adapter.apply_gemm_microkernels(mod, isa)
        mlps = sum(bool((f.attrs or {}).get(adapter.MLP_ATTR)) for _, f in mod.functions_items())
        ui.console.print(f"  {len(adapter.gemm_microkernel_funcs(mod))} PrimFunc(s) call the micro-kernels"
                         + (f", {mlps} of them a whole conv MLP (fc1, GELU, fc2 per row tile)" if mlps else ""))
        with ui.step(f"schedule pooling for {isa}'s vector width"):
            mod, pools = adapter.apply_pool_schedules(mod, isa)
        if pools:
            ui.console.print(f"  {len(pools)} pooling PrimFunc(s) scheduled by edgevit (not tuned)")
    return model, inputs, adapter, tvm_target, mod


def gemm_microkernels(target) -> str | None:
    """The target's [tvm] `gemm_microkernels` ("avx512" or "avx2"): its convs, matmuls and MLPs call ev_gemm_x86.c
    (linked into the library) instead of MetaSchedule's code, which keeps at most ~14 accumulators in registers."""
    from .adapter import GEMM_LANES

    isa = target.options.get("gemm_microkernels") or None
    if isa and isa not in GEMM_LANES:
        raise EdgevitError(f"{target.path}: gemm_microkernels = '{isa}' is not one of {', '.join(GEMM_LANES)}")
    if isa and not str(target.options.get("target", {}).get("mtriple", "")).startswith("x86_64"):
        raise EdgevitError(f"{target.path}: gemm_microkernels = '{isa}' needs an x86_64 target (the kernels are "
                           "AVX-512/AVX2 C); remove it from the [tvm] table")
    return isa


def _database_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for f in ("database_workload.json", "database_tuning_record.json"):
        h.update((folder / f).read_bytes())
    return h.hexdigest()


def compile_model(model: onnx.ModelProto, target, out_dir: Path, name: str, args=None) -> BackendResult:
    """Compile `model` for `target` into `out_dir`; see the module docstring for what lands there."""
    opts = target.options
    cross = opts.get("cross_compiler", "")
    if cross and not shutil.which(cross):
        raise EdgevitError(f"cross compiler '{cross}' for target {target.name} not found "
                           f"(Debian: apt-get install g++-aarch64-linux-gnu libc6-dev-arm64-cross)")
    native = host_mismatch(target) is None
    seconds: dict[str, float] = {}

    def timed(label, step, fn, *a):
        start = time.perf_counter()
        with ui.step(step):
            result = fn(*a)
        seconds[label] = round(time.perf_counter() - start, 3)
        return result

    given = model
    start = time.perf_counter()
    # Model-local functions (e.g. edgevit.Attention's reference body) are plain ONNX once inlined.
    model, inputs, adapter, tvm_target, mod = prepare(model, target)
    seconds["import_and_lower"] = round(time.perf_counter() - start, 3)
    schedules = {"status": "untuned", "database": None, "sha256": None}
    folder = _database_folder(target, name, inputs)
    if folder:
        mod = timed("apply_schedules", f"apply MetaSchedule database {folder}", adapter.apply_database,
                    mod, tvm_target, adapter.load_database(folder))
        done, total = adapter.scheduled_count(mod)
        status = "tuned" if done == total else f"partially tuned ({done}/{total} PrimFuncs)" if done else "untuned"
        schedules = {"status": status, "database": str(folder), "sha256": _database_hash(folder),
                     "scheduled_prim_funcs": done, "prim_funcs": total}
        if not done:
            ui.console.print(f"[yellow]warning:[/yellow] the database in {folder} matched none of the {total} "
                             "PrimFuncs (tuned at another input size or TVM version?)")
    gemm = adapter.gemm_microkernel_funcs(mod)
    if gemm:
        schedules["gemm_microkernel_prim_funcs"] = len(gemm)
    executable = timed("build", f"build for {target.name} ({tvm_target.kind.name}, "
                                f"{opts['target'].get('mtriple', 'host')})", adapter.build, mod, tvm_target)
    library = out_dir / f"{name}.so"
    timed("link", f"link {library.name}" + (f" with {cross}" if cross else ""),
          adapter.export_library, executable, library, cross, bool(gemm))

    feeds = G.seeded_inputs(model, {s["name"]: s["shape"] for s in inputs}, seed=0)
    reference = run_ort(given, feeds)  # the graph as the passes proved it, before our rewrites
    outputs = [{"name": o.name, "shape": list(r.shape), "dtype": r.dtype.name}
               for o, r in zip(model.graph.output, reference)]
    parity = None
    if native:
        got = timed("parity", "parity vs onnxruntime (seeded input)", adapter.run_local, library, list(feeds.values()))
        p = compare_outputs(reference, got)
        if not p.within(TOLERANCE):
            raise ParityError(f"TVM build differs from onnxruntime: max abs error {p.max_abs:.3g} > "
                              f"{TOLERANCE:g} × output range {p.ref_range:.3g}; nothing written")
        parity = p.as_dict()

    meta = {
        "model": name,
        "library": library.name,
        "weights": "embedded in the library",
        "inputs": inputs,
        "outputs": outputs,
        "target": {"name": target.name, "tvm": opts["target"], "layout": conv_layout(target),
                   "cross_compiler": cross,
                   "runtime_arch": opts.get("runtime_arch", platform.machine())},
        "versions": adapter.versions(),
        "schedules": schedules,
        "runner": "run.py",
    }
    (out_dir / f"{name}.tvm.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.copyfile(RUNNER, out_dir / "run.py")
    (out_dir / "run.py").chmod(0o755)

    size = library.stat().st_size
    check = (f"max abs err {parity['max_abs']:.2g} vs onnxruntime" if parity
             else f"not run here (target {host_mismatch(target)})")
    ui.console.print(f"TVM build: {schedules['status']}" + (f" (database {folder})" if folder else
                                                            " (no schedules/ database for this target and model)"))
    md = "\n".join([
        f"# edgevit compile: {name} → {target.name} (TVM {meta['versions']['tvm']})", "",
        md_table(["library", "size", "schedules", "parity"],
                 [[library.name, f"{size / 2**20:.2f} MiB", schedules["status"], check]]), "",
        *([f"{len(gemm)} PrimFunc(s) (convs, matmuls, MLPs) call edgevit's {gemm_microkernels(target)} GEMM "
           "micro-kernels, linked into the library.", ""] if gemm else []),
        f"Run on the device: `python3 run.py` (needs apache-tvm=={meta['versions']['tvm']} and "
        f"apache-tvm-ffi=={meta['versions']['tvm_ffi']}).",
    ])
    return BackendResult(
        summary=f"{library.name} {size / 2**20:.2f} MiB for {target.name}, {schedules['status']}, {check}",
        report={"tvm": {**meta, "parity": parity, "seconds": seconds, "library_bytes": size}},
        markdown=md,
    )
