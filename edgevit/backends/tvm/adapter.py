"""Every call into TVM goes through this module — the only one in edgevit that imports `tvm`.

TVM renames its Python API from release to release (Relay → Relax, `tvm.nd` → `tvm.runtime.tensor`,
`tvm.contrib.cc` → `tvm.support.cc`, `tvm.meta_schedule` → `tvm.s_tir.meta_schedule`), so an upgrade
should touch this file only. Verified against apache-tvm 0.27.0.post1 with apache-tvm-ffi 0.1.14.post1.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import from_onnx
from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map
from tvm.s_tir import meta_schedule as ms
from tvm.sym.pattern import detect_linear_equation
from tvm.support import cc
from tvm_ffi import structural_equal, structural_hash

from ...errors import EdgevitError
from . import host_cores

# Unless TVM_NUM_THREADS says otherwise, TVM's thread pool takes HALF the logical CPUs on x86, assuming 2-way
# hyper-threading. On the 2-core machines here (no SMT) every kernel ran on one thread, and MetaSchedule tuned
# for one thread, while onnxruntime used both cores. One thread per physical core instead; MetaSchedule's runner
# processes inherit it. Set before any kernel runs: the pool reads it once, when it starts. TVM_NUM_THREADS or
# OMP_NUM_THREADS (which TVM reads next) set by the user win.
if not (os.environ.get("TVM_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")):
    os.environ["TVM_NUM_THREADS"] = str(host_cores())

SCHEDULED_ATTR = "tirx.is_scheduled"  # what MetaScheduleApplyDatabase sets on each PrimFunc it schedules
_IMPORTER_BUILTINS = {"Constant", "If"}  # handled by the importer itself, not through the convert map
_MS_DOMAIN_OPS = {"Attention", "BiasGelu", "EmbedLayerNormalization", "FastGelu", "Gelu", "SkipLayerNormalization"}


def versions() -> dict[str, str]:
    import tvm_ffi

    return {"tvm": tvm.__version__, "tvm_ffi": getattr(tvm_ffi, "__version__", "unknown")}


def unsupported_ops(model: onnx.ModelProto) -> list[str]:
    """Ops the ONNX importer has no converter for, as `Op` or `domain.Op` (empty: all importable).

    The importer matches converters by op name alone, so a custom-domain op that shares a name with a
    standard one (edgevit.Attention vs com.microsoft.Attention) would be silently mis-imported: ops
    outside the standard domain count as unsupported unless they are the com.microsoft ops TVM knows.
    """
    convert_map = _get_convert_map()
    bad = set()
    for node in model.graph.node:
        known = node.op_type in convert_map or node.op_type in _IMPORTER_BUILTINS
        if node.domain in ("", "ai.onnx"):
            ok = known
        else:
            ok = node.domain == "com.microsoft" and node.op_type in _MS_DOMAIN_OPS and known
        if not ok:
            bad.add(node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}")
    return sorted(bad)


def import_onnx(model: onnx.ModelProto, shapes: dict[str, list[int]], dtypes: dict[str, str]) -> tvm.IRModule:
    """ONNX → Relax with the weights bound as constants (so they end up inside the .so)."""
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            return from_onnx(model, shape_dict=shapes, dtype_dict=dtypes, keep_params_in_input=False)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgevitError(f"TVM's ONNX importer failed: {first}") from None


def make_target(spec: dict, where: str) -> tvm.target.Target:
    """A TVM Target from the [tvm] target table of a target TOML; `where` names the file for errors."""
    try:
        return tvm.target.Target(dict(spec))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgevitError(f"{where}: TVM rejects the target {spec}: {first}") from None


CONV_LAYOUTS = {"NCHW": None, "NHWC": ["NHWC", "HWIO"]}  # [data, kernel] for relax.transform.ConvertLayout


def lower(mod: tvm.IRModule, target: tvm.target.Target, layout: str = "NCHW", gemm_isa: str | None = None) -> tvm.IRModule:
    """Relax → fused TIR PrimFuncs, exactly as MetaSchedule's static-shape tuning pipeline lowers it.

    `layout` NHWC converts every conv2d to NHWC data / HWIO kernels first (transposes only where the graph
    needs NCHW): output channels become the innermost, vectorizable axis, while NCHW leaves MetaSchedule the
    image width (14, 7 in late stages) to vectorize. `gemm_isa` (a target with GEMM micro-kernels): small
    conv MLPs become one PrimFunc each, already scheduled (`_FuseMLPs`). Tuning and compiling must see the same
    PrimFuncs, or a database's workloads would not match.
    """
    convert = [relax.transform.ConvertLayout({"relax.nn.conv2d": CONV_LAYOUTS[layout]})] if CONV_LAYOUTS[layout] else []
    mlps = [relax.transform.FoldConstant(), _FuseMLPs(gemm_isa)] if gemm_isa and layout == "NHWC" else []
    with target:
        return tvm.transform.Sequential([
            *convert,
            relax.transform.DecomposeOpsForInference(),
            relax.transform.CanonicalizeBindings(),
            *mlps,
            # erf/exp/tanh as vectorizable polynomials: otherwise every GELU element is a scalar call to libm's
            # erff (3.8 M calls per efficientformer_l1 inference); compile still checks parity vs onnxruntime
            relax.transform.FastMathTransform(),
            relax.transform.LegalizeOps({"relax.nn.gelu": _legalize_gelu}),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
        ])(mod)


def _gelu_te(x):
    """x·(½ + ½·erf(x·√½)) (a TE tensor in, one out): float32 and float16 with fast_erf's float32 polynomial, other
    dtypes with topi.erf in their own precision, as TVM's legalization does."""
    from tvm import topi

    if x.dtype not in ("float32", "float16"):
        return x * (tvm.tirx.const(0.5, x.dtype) + topi.erf(x * tvm.tirx.const(0.5 ** 0.5, x.dtype))
                    * tvm.tirx.const(0.5, x.dtype))
    wide = topi.cast(x, "float32") if x.dtype != "float32" else x
    erf = topi.fast_erf(wide * tvm.tirx.const(0.5 ** 0.5, "float32"))
    out = wide * (tvm.tirx.const(0.5, "float32") + erf * tvm.tirx.const(0.5, "float32"))
    return topi.cast(out, x.dtype) if x.dtype != "float32" else out


def _legalize_gelu(bb, call):
    """relax.nn.gelu as `_gelu_te`: TVM's own legalization calls topi.erf, which FastMathTransform (it rewrites
    relax.erf calls only) never reaches, so every element became a scalar call to libm's erff
    (efficientformer_l1: 21 ms instead of 7.5)."""
    return bb.call_te(_gelu_te, call.args[0], primfunc_name_hint="gelu")


def _builder():
    """One build worker (TVM's default pool times out on 2 cores while its workers import TVM, toolchain.md). Its
    timeout covers that import on the first call, and abandons a candidate whose LLVM build runs away (seen: an
    avg_pool schedule on znver4 still compiling after 10 min) instead of stalling the tune."""
    return ms.builder.LocalBuilder(max_workers=1, timeout_sec=180)


def tune(mod: tvm.IRModule, target: tvm.target.Target, work_dir: Path, max_trials: int,
         max_trials_per_task: int | None = None) -> None:
    """MetaSchedule-tune the PrimFuncs of a `lower`ed module on this host; the database lands in `work_dir`.

    Used by tests/backends/make_tiny_db.py; `edgevit tune` goes through `Tuner`, one task at a time.
    """
    ms.relax_integration.tune_relax(
        mod, {}, target, str(work_dir), max_trials_global=max_trials, max_trials_per_task=max_trials_per_task,
        num_trials_per_iter=min(max_trials, 64), builder=_builder(),
        runner=ms.runner.LocalRunner(timeout_sec=120))


def load_database(folder: Path):
    """The MetaSchedule JSON database (database_workload.json + database_tuning_record.json) in `folder`."""
    return ms.database.JSONDatabase(path_workload=str(folder / "database_workload.json"),
                                    path_tuning_record=str(folder / "database_tuning_record.json"),
                                    allow_missing=False)


def apply_database(mod: tvm.IRModule, target: tvm.target.Target, database) -> tvm.IRModule:
    """Replace each lowered PrimFunc that has a tuning record with its best schedule."""
    with target, database, tvm.transform.PassContext(opt_level=3):
        return relax.transform.MetaScheduleApplyDatabase()(mod)


def _flag(func, attr: str) -> bool:
    """Whether PrimFunc `func` carries the boolean attribute `attr` (SCHEDULED_ATTR, GEMM_ATTR, POOL_ATTR)."""
    return bool((func.attrs or {}).get(attr, False))


def scheduled_count(mod: tvm.IRModule) -> tuple[int, int]:
    """(PrimFuncs carrying the scheduled attribute, all PrimFuncs), those edgevit schedules itself (micro-kernels,
    pooling) left out of both: the proof a database was applied."""
    funcs = [f for _, f in mod.functions_items()
             if isinstance(f, tvm.tirx.PrimFunc) and not _flag(f, GEMM_ATTR) and not _flag(f, POOL_ATTR)]
    return sum(_flag(f, SCHEDULED_ATTR) for f in funcs), len(funcs)


# --- x86 GEMM micro-kernels (ev_gemm_x86.c) for 1x1 convolutions and matmuls --------------------------------
GEMM_SOURCE = Path(__file__).with_name("ev_gemm_x86.c")
GEMM_ATTR = "edgevit.gemm_microkernel"  # on each PrimFunc that calls into GEMM_SOURCE
GEMM_LANES = {"avx512": 16, "avx2": 8}  # floats per vector register
# A KxK conv on the micro-kernels first copies its padded input; MetaSchedule's direct conv pads on the fly.
# Measured on efficientformer_l1's stride-2 convs (MACs per copied element): 96→224 (441) and 224→448 (772) gained,
# 263→186 and 319→266 us; 48→96 (202) came out even; the 32→48 stem conv (104) lost, 179→270 us. The threshold
# sits between the loss and the break-even.
WINDOW_MIN_MACS_PER_COPY = 150
GEMM_MIN_DEPTH = 8  # below (e.g. an RGB stem conv's 3 input channels) loading and storing the tile costs more than its FMAs
# (MR rows, NV vectors) that ev_gemm_x86.c defines: the MR x NV accumulators, one row of B (NV vectors) and the
# broadcast A value fit the 32 zmm / 16 ymm registers. A 7x4 tile needs 33: gcc kept one accumulator on the stack
# (a load and a store per k), and it ran slower than 7x2 (244 vs 257 GFLOP/s per core at K = 1792, hot caches;
# 6x4 and 8x3: 265). efficientformer_l1's stages 3-4 moved from 7x4 to 7x2/7x3 tiles: -230 us per inference.
GEMM_TILES = {"avx512": [(mr, nv) for mr in range(1, 9) for nv in range(1, 5) if mr * nv + nv + 1 <= 32],
              "avx2": [(mr, nv) for mr in range(1, 9) for nv in range(1, 5) if mr * nv + nv + 1 <= 16]}


def _gemm_intrin(isa: str, mr: int, nv: int, k: int) -> str:
    """Register (once) the tensor intrinsic C[mr, L·nv] += A[mr, k] · B[k, L·nv] → ev_gemm_f32_<isa>_<mr>x<nv>."""
    from tvm.script import tirx as T

    name = f"edgevit_gemm_f32_{isa}_{mr}x{nv}_k{k}"
    if name in _gemm_intrin.registered:
        return name
    nr = GEMM_LANES[isa] * nv

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle):
        A = T.match_buffer(a, (mr, k), "float32", offset_factor=1)
        B = T.match_buffer(b, (k, nr), "float32", offset_factor=1)
        C = T.match_buffer(c, (mr, nr), "float32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:mr, 0:nr], A[0:mr, 0:k], B[0:k, 0:nr])
            T.writes(C[0:mr, 0:nr])
            for i, j, r in T.grid(mr, nr, k):
                with T.sblock("update"):
                    vi, vj, vr = T.axis.remap("SSR", [i, j, r])
                    C[vi, vj] = C[vi, vj] + A[vi, vr] * B[vr, vj]

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle):
        sa, sb, sc = T.int64(), T.int64(), T.int64()
        A = T.match_buffer(a, (mr, k), "float32", offset_factor=1, strides=[sa, 1])
        B = T.match_buffer(b, (k, nr), "float32", offset_factor=1, strides=[sb, 1])
        C = T.match_buffer(c, (mr, nr), "float32", offset_factor=1, strides=[sc, 1])
        with T.sblock("root"):
            T.reads(C[0:mr, 0:nr], A[0:mr, 0:k], B[0:k, 0:nr])
            T.writes(C[0:mr, 0:nr])
            T.evaluate(T.call_extern("int32", f"ev_gemm_f32_{isa}_{mr}x{nv}", A.access_ptr("r"), sa, B.access_ptr("r"), sb,
                                     C.access_ptr("rw"), sc, T.int64(k)))

    tvm.s_tir.TensorIntrin.register(name, desc, impl, override=True)
    _gemm_intrin.registered.add(name)
    return name


_gemm_intrin.registered = set()


def _gemm_tile(isa: str, rows: int, cols: int) -> tuple[int, int] | None:
    """(MR, NV) for an output of rows x cols: the most accumulators (then the most rows) whose tile divides it.

    For an NHWC conv the rows are the image WIDTH (a tile never spans two image rows: its A operand must be one
    strided [MR, K] region), so a prime width gets MR = 1 or 7 only where 7 divides it."""
    lanes = GEMM_LANES[isa]
    fits = [(mr * nv, mr, nv) for mr, nv in GEMM_TILES[isa] if rows % mr == 0 and cols % (lanes * nv) == 0]
    return max(fits)[1:] if fits else None


PREPACK_ATTR = "meta_schedule.layout_rewrite_preproc"  # what relax.transform.SplitLayoutRewritePreproc splits out


def _prepack_weights(sch, gemm, weights: set[str], nr: int) -> None:
    """Read the gemm's B operand, if it is one of the constant parameters named `weights`, through a copy packed as
    [N / nr, .., K, nr]: each micro-kernel call then streams one contiguous K x nr panel instead of K rows strided
    by N (3.2 MB per stage-4 conv of efficientformer_l1, read from DRAM every inference). The copy is a
    layout-rewrite block: `build` splits it out and folds it into the constant at compile time."""
    reads = sch.get(gemm).reads
    # the first constant operand: B for every shape _schedule_gemm takes (a constant A would be packed along K, and
    # tensorize would then reject the PrimFunc, which keeps MetaSchedule's TIR)
    index = next((i for i, r in enumerate(reads) if r.source.name in weights), None)
    if index is None or int(reads[index].source.shape[-1]) % nr:
        return
    packed = sch.cache_read(gemm, index, "global")
    sch.annotate(packed, PREPACK_ATTR, True)
    sch.transform_layout(gemm, ("read", index), lambda *ix: (ix[-1] // nr, *ix[:-1], ix[-1] % nr))


def _window_input(sch, conv, pad) -> bool:
    """Prepare a KxK NHWC conv's padded input (block `pad`) for the micro-kernel, which reads, per window offset
    (ry, rx), MR output pixels' input channels as MR rows of one strided [MR, C] region.

    Stride 1: the rows are already evenly spaced. Stride 2: the padded rows are stored even columns first, then odd
    ([n, h, w % 2, w // 2, c]), so the pixels 2x + rx of consecutive x are again consecutive. The copy runs in
    parallel over padded rows (vectorizing its select over channels made it 2-3x slower). False if the stride or
    the padded width does not allow that, or the copy would cost more than the kernels save."""
    buffer = sch.get(pad).writes[0].source
    read = next((r for r in sch.get(conv).reads if r.source.same_as(buffer)), None)
    if read is None or len(read.region) != 4:
        return False
    macs = math.prod(int(sch.get(lp).extent) for lp in sch.get_loops(conv))
    if macs < WINDOW_MIN_MACS_PER_COPY * math.prod(int(d) for d in buffer.shape):
        return False
    width_var = sch.get(conv).iter_vars[2].var  # NHWC: n, y, x, f, then ry, rx, rc
    stride = detect_linear_equation(read.region[2].min, [width_var])
    if len(stride) != 2 or int(stride[0]) not in (1, 2):
        return False
    if int(stride[0]) == 2:
        if int(buffer.shape[2]) % 2:
            return False
        sch.transform_layout(pad, ("write", 0), lambda n, h, w, c: (n, h, w % 2, w // 2, c))
    sch.parallel(sch.fuse(*sch.get_loops(pad)[:2]))  # n, padded rows
    return True


def _vectorize_channels(sch, block, lanes: int) -> None:
    """Vectorize `block`'s innermost loop (the channels of an elementwise epilogue) by one register's lanes."""
    sch.vectorize(sch.split(sch.get_loops(block)[-1], [None, lanes])[-1])


def _schedule_gemm(func, isa: str, constants: frozenset = frozenset()):
    """`func` with its one reduction tensorized onto an ev_gemm micro-kernel and its elementwise epilogue fused per
    output tile; None if it is not a shape the kernels fit. The shapes: a [.., M, K] x [K, N] matmul; an NHWC conv2d,
    1x1 (one kernel call per tile, K = input channels), or KxK with stride 1 or 2 (one call per window offset,
    accumulating into the same tile). `constants`: indices of `func`'s parameters that are compile-time constants
    (their layout is ours to pick)."""
    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": func}))
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    reductions = [b for b in blocks if any(int(iv.iter_type) == 2 for iv in sch.get(b).iter_vars)]
    if len(reductions) != 1 or sch.get(reductions[0]).writes[0].source.dtype != "float32":
        return None
    gemm = reductions[0]
    at = [sch.get(b).name_hint for b in blocks].index(sch.get(gemm).name_hint)
    before, after = blocks[:at], blocks[at + 1:]  # e.g. the conv's pad_temp copy; bias, GELU, residual add
    loops = sch.get_loops(gemm)
    kinds = [int(iv.iter_type) for iv in sch.get(gemm).iter_vars]
    if len(loops) != len(kinds):
        return None
    spatial = [lp for lp, kind in zip(loops, kinds) if kind == 0]
    reduce = [lp for lp, kind in zip(loops, kinds) if kind == 2]
    window = any(int(sch.get(lp).extent) > 1 for lp in reduce[:-1])  # a KxK conv's ry, rx
    if len(spatial) < 2 or (window and (len(before) != 1 or len(reduce) != 3 or len(spatial) != 4)):
        return None
    rows, cols = (int(sch.get(lp).extent) for lp in spatial[-2:])
    depth = int(sch.get(reduce[-1]).extent) if window else math.prod(int(sch.get(lp).extent) for lp in reduce)
    tile = _gemm_tile(isa, rows, cols)
    if tile is None or depth < GEMM_MIN_DEPTH:
        return None
    mr, nv = tile
    lanes = GEMM_LANES[isa]
    intrin = _gemm_intrin(isa, mr, nv, depth)  # our bug if it fails
    # A shape the kernels do not fit raises ScheduleError (a RuntimeError), from inline or tensorize: e.g. matmul
    # weights stored [N, K], or a grouped conv whose tile would span two groups. Such a PrimFunc keeps
    # MetaSchedule's TIR (depthwise convs never get here: no input-channel reduction deep enough).
    try:
        if window:
            if not _window_input(sch, gemm, before[0]):
                return None
        else:
            for b in before:
                sch.compute_inline(b)
        for b in after[:-1]:
            sch.compute_inline(b)
        _prepack_weights(sch, gemm, {func.params[i].name for i in constants}, lanes * nv)
        k = reduce[-1] if window or len(reduce) == 1 else sch.fuse(*reduce)
        offsets = reduce[:-1] if window else []
        ro, ri = sch.split(spatial[-2], [None, mr])
        co, ci = sch.split(spatial[-1], [None, lanes * nv])
        sch.reorder(co, *spatial[:-2], ro, *offsets, ri, ci, k)  # column blocks outermost: each core keeps its B panel
        outer = sch.fuse(co, *spatial[:-2], ro)
        sch.parallel(outer)
        if after:
            sch.reverse_compute_at(after[-1], outer)
            _vectorize_channels(sch, after[-1], lanes)
        sch.decompose_reduction(gemm, offsets[0] if offsets else ri)
        sch.tensorize(ri, intrin)
    except RuntimeError:
        return None
    return sch.mod["main"].with_attrs({SCHEDULED_ATTR: True, GEMM_ATTR: True})


# --- NHWC pooling, scheduled by hand: a vector of channels at a time, the window summed in registers -------------
POOL_ATTR = "edgevit.pool"  # on each pooling PrimFunc _schedule_pool scheduled


def _schedule_pool(func, lanes: int):
    """`func` — a 2-D pooling window (pool_sum / pool_max, after its padding copy, if any) and the elementwise ops fused
    after it, e.g. PoolFormer's and EfficientFormer's token mixer x + s·(avgpool(x) - x) — scheduled one output
    pixel and `lanes` channels at a time: the padding read in place (bounds checked per window offset, no padded
    copy), the window accumulated in a register, everything after it applied before the one store; parallel over
    rows. efficientformer_l1's token mixers on x86-avx512, each timed alone: 1.6-1.9x faster than its database's
    schedules (32-128 trials) in stages 1, 2 and 4, even in stage 3; no tuning needed. None unless it is that
    shape, NHWC, with whole vectors of channels."""
    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": func}))
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    reductions = [i for i, b in enumerate(blocks) if any(int(iv.iter_type) == 2 for iv in sch.get(b).iter_vars)]
    if len(reductions) != 1 or reductions[0] > 1:
        return None
    pool = blocks[reductions[0]]
    kinds = [int(iv.iter_type) for iv in sch.get(pool).iter_vars]
    if kinds != [0, 0, 0, 0, 2, 2] or len(sch.get_loops(pool)) != 6:
        return None
    # NHWC: the window moves over the middle two axes only, and channel c reads channel c
    channel = sch.get(pool).iter_vars[3].var
    read = sch.get(pool).reads
    if len(read) != 1 or not read[0].region[3].min.same_as(channel) or int(read[0].region[3].extent) != 1:
        return None
    try:
        for b in blocks[:reductions[0]]:
            sch.compute_inline(b)  # the padding: a branch on each window offset's row and column
        for b in blocks[reductions[0] + 1:-1]:
            sch.compute_inline(b)
        out = blocks[-1] if len(blocks) > reductions[0] + 1 else sch.cache_write(pool, 0, "local")  # a bare pool
        loops = sch.get_loops(out)
        if len(loops) != 4 or int(sch.get(loops[-1]).extent) % lanes:
            return None
        n, y, x, c = loops
        co, ci = sch.split(c, [None, lanes])
        sch.parallel(sch.fuse(n, y))
        sch.compute_at(pool, co)
        sch.set_scope(pool, 0, "local")  # one vector: LLVM keeps it in a register
        channels, ry, rx = sch.get_loops(pool)[-3:]
        sch.reorder(ry, rx, channels)
        sch.vectorize(channels)
        sch.unroll(ry)
        sch.unroll(rx)
        sch.vectorize(sch.get_loops(sch.decompose_reduction(pool, ry))[-1])
        sch.vectorize(ci)
    except RuntimeError:
        return None
    return sch.mod["main"].with_attrs({SCHEDULED_ATTR: True, POOL_ATTR: True})


def _constant_params(mod: tvm.IRModule) -> dict[int, frozenset]:
    """structural hash of each PrimFunc -> indices of the parameters every caller passes a constant (weights).

    Read off TVM's own analysis (AttachAttrLayoutFreeBuffers) run on a copy: on `mod` its attribute would change
    the PrimFuncs MetaSchedule databases are keyed on. The pass renames the functions it annotates, so they are
    matched back by structure; a PrimFunc called with a constant at one site and not at another gets the
    intersection."""
    out: dict[int, frozenset] = {}
    for _, func in relax.transform.AttachAttrLayoutFreeBuffers()(mod).functions_items():
        if isinstance(func, tvm.tirx.PrimFunc):
            free = frozenset(int(i) for i in (func.attrs or {}).get("layout_free_buffers", []))
            key = structural_hash(func.without_attr("layout_free_buffers"))
            out[key] = out[key] & free if key in out else free
    return out


def apply_gemm_microkernels(mod: tvm.IRModule, isa: str) -> tuple[tvm.IRModule, list[str]]:
    """Every PrimFunc of `mod` that `_schedule_gemm` takes, scheduled onto the `isa` ("avx512" or "avx2")
    micro-kernels; and their names. The library must then be linked with GEMM_SOURCE (export_library(...,
    gemm=True)); a database applied afterwards leaves these PrimFuncs alone (they are marked scheduled)."""
    constants = _constant_params(mod)
    return _reschedule(mod, lambda func: _schedule_gemm(func, isa, constants.get(structural_hash(func), frozenset())))


def apply_pool_schedules(mod: tvm.IRModule, isa: str) -> tuple[tvm.IRModule, list[str]]:
    """Every pooling PrimFunc of `mod` that `_schedule_pool` takes, scheduled for `isa`'s vector width; and their
    names. Like the micro-kernel PrimFuncs, they are marked scheduled: no tuning task, no database record used."""
    return _reschedule(mod, lambda func: _schedule_pool(func, GEMM_LANES[isa]))


def _reschedule(mod: tvm.IRModule, schedule) -> tuple[tvm.IRModule, list[str]]:
    """`mod` with each PrimFunc not yet scheduled replaced by `schedule(func)` where that is not None; and the
    names of those replaced."""
    names = []
    for gv, func in list(mod.functions_items()):
        if isinstance(func, tvm.tirx.PrimFunc) and not _flag(func, SCHEDULED_ATTR):
            scheduled = schedule(func)
            if scheduled is not None:
                mod[gv] = scheduled
                names.append(gv.name_hint)
    return mod, names


# --- conv MLPs (1x1 conv → GELU → 1x1 conv + residual) on the micro-kernels, one row tile at a time ------------
MLP_ATTR = "edgevit.fused_mlp"
# Both weight matrices of a fused MLP are read again for every row tile, so they must stay in one core's L2 (1 MiB
# on these EPYCs) next to the tile: efficientformer_l1's stages 1-2 (72 and 295 KB) fuse, stage 3 (1.6 MB) not.
MLP_MAX_WEIGHT_BYTES = 512 * 1024


def _mlp_pattern():
    """conv2d(x, W1) + b1 → gelu → conv2d(·, W2) + b2 + residual, weights and biases constant."""
    from tvm.relax.dpl import is_const, is_op, wildcard

    parts = {name: is_const() for name in ("w1", "b1", "w2", "b2")}
    parts["x"], parts["res"] = wildcard(), wildcard()
    parts["conv1"] = is_op("relax.nn.conv2d")(parts["x"], parts["w1"])
    hidden = is_op("relax.nn.gelu")(is_op("relax.add")(parts["conv1"], parts["b1"]))
    parts["conv2"] = is_op("relax.nn.conv2d")(hidden, parts["w2"])
    out = is_op("relax.add")(parts["conv2"], parts["b2"])
    return is_op("relax.add")(out, parts["res"]) | is_op("relax.add")(parts["res"], out), parts


def _mlp_prim_func(x, w1, b1, w2, b2, res):
    """The MLP as one TIR PrimFunc (NHWC, 1x1 HWIO weights), from TE: fc1, bias, GELU (as _gelu_te), fc2, bias and
    residual."""
    from tvm import te, topi

    X, W1, B1, W2, B2, R = (te.placeholder([int(d) for d in v.ty.shape], "float32", name)
                            for v, name in ((x, "x"), (w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"), (res, "res")))
    k1 = te.reduce_axis((0, W1.shape[2]), "k1")
    fc1 = te.compute((*X.shape[:3], W1.shape[3]), lambda n, i, j, f: te.sum(X[n, i, j, k1] * W1[0, 0, k1, f], axis=k1),
                     name="fc1")
    hidden = _gelu_te(topi.add(fc1, B1))
    k2 = te.reduce_axis((0, W2.shape[2]), "k2")
    fc2 = te.compute((*X.shape[:3], W2.shape[3]), lambda n, i, j, f: te.sum(hidden[n, i, j, k2] * W2[0, 0, k2, f],
                                                                            axis=k2), name="fc2")
    out = topi.add(topi.add(fc2, B2), R)
    return te.create_prim_func([X, W1, B1, W2, B2, R, out]).without_attr("global_symbol")  # private, like FuseTIR's


def _schedule_mlp(func, isa: str):
    """The `_mlp_prim_func` scheduled per tile of MR pixels, in parallel: fc1 on the micro-kernels into an [MR, hidden]
    tile, bias + GELU over it, then fc2 + bias + residual; the hidden activations never leave the core's
    caches. Both weights prepacked. None if a tile does not fit."""
    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": func}))
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    names = [sch.get(b).name_hint for b in blocks]
    fc1, fc2 = sch.get_sblock("fc1"), sch.get_sblock("fc2")
    between = blocks[names.index("fc1") + 1:names.index("fc2")]  # bias add, GELU's stages: the last is the hidden
    after = blocks[names.index("fc2") + 1:]  # bias add, residual add
    cols = int(func.params[5].shape[2])  # the residual: [1, H, W, C]; a tile is MR pixels of one image row
    hidden_cols = int(func.params[1].shape[3])
    tile = _gemm_tile(isa, cols, int(func.params[3].shape[3]))
    lanes = GEMM_LANES[isa]
    if tile is None:
        return None
    mr, nv2 = tile
    nv1 = max((nv for m, nv in GEMM_TILES[isa] if m == mr and hidden_cols % (lanes * nv) == 0), default=None)
    if nv1 is None:
        return None
    intrin1 = _gemm_intrin(isa, mr, nv1, int(func.params[1].shape[2]))
    intrin2 = _gemm_intrin(isa, mr, nv2, hidden_cols)
    try:
        for b in between[:-1]:
            sch.compute_inline(b)
        for b in after[:-1]:
            sch.compute_inline(b)
        hidden = between[-1]
        _prepack_weights(sch, fc1, {"w1"}, lanes * nv1)
        _prepack_weights(sch, fc2, {"w2"}, lanes * nv2)
        b_n, b_y, b_x, b_f, b_k = sch.get_loops(fc2)
        xo, xi = sch.split(b_x, [None, mr])
        fo, fi = sch.split(b_f, [None, lanes * nv2])
        sch.reorder(b_n, b_y, xo, fo, xi, fi, b_k)
        outer = sch.fuse(b_n, b_y, xo)
        sch.parallel(outer)
        sch.compute_at(hidden, outer)
        sch.compute_at(fc1, outer)
        _vectorize_channels(sch, hidden, lanes)
        sch.reverse_compute_at(after[-1], outer)
        _vectorize_channels(sch, after[-1], lanes)
        a_x, a_f, a_k = sch.get_loops(fc1)[-3:]  # under `outer` (its unit n, y loops are gone): MR pixels, 4C, C
        f1o, f1i = sch.split(a_f, [None, lanes * nv1])
        sch.reorder(f1o, a_x, f1i, a_k)
        sch.decompose_reduction(fc1, a_x)
        sch.tensorize(a_x, intrin1)
        sch.decompose_reduction(fc2, xi)
        sch.tensorize(xi, intrin2)
    except RuntimeError:
        return None
    return sch.mod["main"].with_attrs({SCHEDULED_ATTR: True, GEMM_ATTR: True, MLP_ATTR: True, "op_pattern": 8})


@tvm.transform.module_pass(opt_level=0, name="EdgevitFuseMLPs")
class _FuseMLPs:
    """Every conv MLP `_mlp_pattern` matches whose weights fit MLP_MAX_WEIGHT_BYTES, replaced by a call to one
    PrimFunc scheduled by `_schedule_mlp` (op_pattern opaque: FuseOps leaves it alone)."""

    def __init__(self, isa: str):
        self.isa = isa

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        from tvm.relax.dpl import rewrite_call

        pattern, parts = _mlp_pattern()
        added: list = []  # GlobalVars of the MLP PrimFuncs

        def rewrite(expr, match):
            v = {name: match[p] for name, p in parts.items()}
            for conv in (v["conv1"], v["conv2"]):
                a = conv.attrs
                if (a.data_layout, a.kernel_layout, a.out_layout) != ("NHWC", "HWIO", "NHWC") or int(a.groups) != 1 \
                        or any(int(d) != 1 for d in (*a.strides, *a.dilation)) or any(int(d) for d in a.padding):
                    return expr
            tensors = ("x", "w1", "b1", "w2", "b2", "res")
            if any(v[k].ty.dtype != "float32" or v[k].ty.shape is None or
                   not all(isinstance(d, tvm.tirx.IntImm) for d in v[k].ty.shape) for k in tensors):
                return expr
            dims = {k: [int(d) for d in v[k].ty.shape] for k in tensors}
            w1, w2 = dims["w1"], dims["w2"]
            if w1[:2] != [1, 1] or w2[:2] != [1, 1] or w2[2] != w1[3] or len(dims["x"]) != 4 or \
                    4 * (math.prod(w1) + math.prod(w2)) > MLP_MAX_WEIGHT_BYTES or \
                    dims["res"] != [*dims["x"][:3], w2[3]] or \
                    any(dims[b][-1] != n or math.prod(dims[b]) != n for b, n in (("b1", w1[3]), ("b2", w2[3]))) or \
                    [int(d) for d in expr.ty.shape] != dims["res"]:
                return expr  # (biases: one value per output channel, on the last, NHWC axis; no broadcast beyond)
            func = _schedule_mlp(_mlp_prim_func(v["x"], v["w1"], v["b1"], v["w2"], v["b2"], v["res"]), self.isa)
            if func is None:
                return expr
            added.append(builder.add_func(func, "fused_mlp_conv2d_gelu_conv2d"))  # typed GlobalVar, unique name
            return relax.call_tir(added[-1], [v[k] for k in tensors], expr.ty)

        builder = relax.BlockBuilder(mod)
        rewritten = {gv: rewrite_call(pattern, rewrite, func) for gv, func in mod.functions_items()
                     if isinstance(func, relax.Function)}
        if not added:
            return mod
        out = builder.get()
        for gv, func in rewritten.items():
            out[out.get_global_var(gv.name_hint)] = func
        return relax.transform.DeadCodeElimination()(out)


def gemm_microkernel_funcs(mod: tvm.IRModule) -> list[str]:
    """Names of the PrimFuncs in `mod` that call the micro-kernels (the library must be linked with them)."""
    return [gv.name_hint for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc) and _flag(f, GEMM_ATTR)]


def fold_prepacked_weights(mod: tvm.IRModule) -> tvm.IRModule:
    """The weights the GEMM micro-kernels read prepacked (_prepack_weights), packed now, into new constants: the
    packing blocks become PrimFuncs of their own, run once by FoldConstant; then dropped with the unpacked weights."""
    return tvm.transform.Sequential([relax.transform.SplitLayoutRewritePreproc(), relax.transform.FoldConstant(),
                                     relax.transform.DeadCodeElimination()])(mod)


def build(mod: tvm.IRModule, target: tvm.target.Target):
    """The Relax VM executable for `target` (schedules already applied to `mod` are kept)."""
    with tvm.transform.PassContext(opt_level=3):
        return tvm.compile(fold_prepacked_weights(mod), target=target)


def export_library(executable, path: Path, cross_compiler: str, gemm: bool = False) -> None:
    """Link the executable into a shared library; `cross_compiler` ('' = host compiler) links for the board;
    `gemm`: with the micro-kernels apply_gemm_microkernels calls into."""
    fcompile = cc.cross_compiler(cross_compiler) if cross_compiler else None
    extra = {"addons": [str(GEMM_SOURCE)], "options": ["-O3"]} if gemm else {}
    try:
        executable.export_library(str(path), fcompile=fcompile, **extra)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = f" (is {cross_compiler} installed?)" if cross_compiler else ""
        raise EdgevitError(f"linking {path.name} failed{hint}: {first}") from None


def _outputs(result) -> list[np.ndarray]:
    if isinstance(result, tvm.runtime.Tensor):
        return [result.numpy()]
    return [a for r in result for a in _outputs(r)]


def run_local(library: Path | object, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Run a host-arch library (a path) or executable on the CPU with the Relax VM."""
    lib = tvm.runtime.load_module(str(library)) if isinstance(library, (str, Path)) else library
    vm = relax.VirtualMachine(lib, tvm.cpu())
    return _outputs(vm["main"](*[tvm.runtime.tensor(a) for a in inputs]))


def run_rpc(library: Path, inputs: list[np.ndarray], host: str, port: int,
            repeat: int = 3, key: str | None = None) -> tuple[list[np.ndarray], float]:
    """Upload `library` to a TVM RPC server (or a device the tracker at host:port hands out for `key`), run it
    there; (outputs, median latency in seconds)."""
    from tvm import rpc

    try:
        if key:
            remote = rpc.connect_tracker(host, port).request(key, priority=1, session_timeout=600)
        else:
            remote = rpc.connect(host, port, session_timeout=600)
    except Exception as exc:
        where = f"a '{key}' device from the TVM RPC tracker" if key else "the TVM RPC server"
        raise EdgevitError(f"cannot get {where} at {host}:{port}: {exc}") from None
    remote.upload(str(library))
    lib = remote.load_module(Path(library).name)
    dev = remote.cpu()
    vm = relax.VirtualMachine(lib, dev)
    args = [tvm.runtime.tensor(a, device=dev) for a in inputs]
    outputs = _outputs(vm["main"](*args))
    timer = vm.time_evaluator("main", dev, number=1, repeat=repeat)
    return outputs, float(timer(*args).median)


# ------------------------------------------------------------------------------------------- tuning
def _direct_session(config):
    """RPCRunner session for a bare RPC server (no tracker): RPCConfig's tracker fields carry host/port."""
    from tvm import rpc

    return rpc.connect(config.tracker_host, int(config.tracker_port), session_timeout=config.session_timeout_sec)


class Tuner:
    """Tunes the tasks of a `lower`ed module one bounded chunk at a time.

    The builder and runner (and their worker processes, slow to start on 2 cores) are shared by all
    chunks; each chunk tunes one task into its own JSON database, which is complete when `tune_task`
    returns (MetaSchedule joins records lazily, so only a finished chunk is a committed one).
    """

    def __init__(self, mod: tvm.IRModule, target: tvm.target.Target, rpc: dict | None = None):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tasks = ms.relax_integration.extract_tasks(mod, target)
        # PrimFuncs already scheduled (the GEMM micro-kernels) are not MetaSchedule's to tune
        self.tasks = [t for t in tasks if not _flag(t.dispatched[0]["main"], SCHEDULED_ATTR)]
        self.target = target
        self.rpc = rpc
        self.builder = self.runner = None  # started by the first chunk: a resumed run may need none

    def _workers(self) -> None:
        if self.builder is not None:
            return
        self.builder = _builder()
        rpc = self.rpc
        if rpc is None:
            self.runner = ms.runner.LocalRunner(timeout_sec=120)
        else:  # {"host", "port", "key" (None: a bare server), "timeout"}
            config = ms.runner.RPCConfig(tracker_host=rpc["host"], tracker_port=int(rpc["port"]),
                                         tracker_key=rpc.get("key") or "edgevit-direct",
                                         session_timeout_sec=int(rpc.get("timeout", 60)))
            self.runner = ms.runner.RPCRunner(config, f_create_session=None if rpc.get("key") else _direct_session,
                                              max_workers=1)

    def task_names(self) -> list[str]:
        return [t.task_name for t in self.tasks]

    def task_hashes(self) -> list[str]:
        """Each task's structural hash as the JSON database writes it (a workload line's first field)."""
        return [str(structural_hash(t.dispatched[0])) for t in self.tasks]

    def task_weights(self) -> list[float]:
        return [float(t.weight) for t in self.tasks]

    def records(self, folder: Path) -> list[tuple[int, float | None]]:
        """Per task: (tuning records in the database in `folder`, best mean latency in seconds or None)."""
        if not (folder / "database_workload.json").exists():
            return [(0, None) for _ in self.tasks]
        db = load_database(folder)
        by_hash: dict[int, list] = {}
        for rec in db.get_all_tuning_records():
            by_hash.setdefault(structural_hash(rec.workload.mod), []).append(rec)
        out = []
        for task in self.tasks:
            recs = [r for r in by_hash.get(structural_hash(task.dispatched[0]), [])
                    if structural_equal(r.workload.mod, task.dispatched[0])]
            times = [float(np.mean([float(s) for s in r.run_secs])) for r in recs
                     if r.run_secs is not None and len(r.run_secs) and min(float(s) for s in r.run_secs) < 1e9]
            out.append((len(recs), min(times) if times else None))
        return out

    def tune_task(self, index: int, work_dir: Path, trials: int) -> None:
        """Spend up to `trials` measurements on task `index`; records land in `work_dir`'s JSON database."""
        self._workers()
        task = self.tasks[index]
        db = ms.database.JSONDatabase(path_workload=str(work_dir / "database_workload.json"),
                                      path_tuning_record=str(work_dir / "database_tuning_record.json"))
        logs = work_dir / "logs"
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            try:
                contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts([task], str(logs))
                ms.tune.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(logs),
                                   max_trials_global=trials, max_trials_per_task=trials,
                                   num_trials_per_iter=min(trials, 64), builder=self.builder, runner=self.runner,
                                   database=db)
            except Exception as exc:  # finished chunks stay committed; say which task broke
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise EdgevitError(f"MetaSchedule failed while tuning task {task.task_name}: {first} "
                                   f"(logs in {logs} are removed; tasks tuned before it are kept)") from None


def runtime_threads() -> int:
    """Threads of this process's TVM thread pool (starts the pool)."""
    return int(tvm.get_global_func("runtime.NumThreads")())


def load_local(library: Path, inputs: list[np.ndarray]):
    """(outputs, run): a host-arch library loaded in the Relax VM with `inputs` on the device; run() is one
    inference, for timing."""
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())
    args = [tvm.runtime.tensor(a) for a in inputs]
    main = vm["main"]
    return _outputs(main(*args)), lambda: main(*args)


def profile_local(library: Path, inputs: list[np.ndarray], runs: int = 3) -> list[dict]:
    """Per compiled function (fused TIR kernel / VM builtin): calls and seconds per inference, from the Relax
    VM's call instrumentation (a host-arch library; one warm-up run is not counted)."""
    import time

    vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())
    args = [tvm.runtime.tensor(a) for a in inputs]
    vm["main"](*args)
    totals: dict[str, list] = {}
    started: dict[str, float] = {}

    def instrument(func, symbol, before_run, ret_value, *_):
        if before_run:
            started[symbol] = time.perf_counter()
        else:
            row = totals.setdefault(symbol, [0, 0.0])
            row[0] += 1
            row[1] += time.perf_counter() - started.pop(symbol, time.perf_counter())
        return 0  # VMInstrumentReturnKind.NO_OP: run the call as usual

    vm.set_instrument(instrument)
    for _ in range(runs):
        vm["main"](*args)
    return [{"function": s, "calls": c // runs, "seconds": t / runs} for s, (c, t) in totals.items()]
