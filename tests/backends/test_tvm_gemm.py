"""The x86 targets' GEMM micro-kernels (edgevit/backends/tvm/ev_gemm_x86.c): which PrimFuncs call them, and that
a library linked with them computes what onnxruntime does."""

from __future__ import annotations

import subprocess

import onnx

import pytest

from edgevit import targets
from edgevit.backends.tvm import TOLERANCE, compile_model, host_mismatch, prepare

from . import conv_mlp_model, gemm_model, pool_mixer_model, window_conv_model


def _assert_compiles_to_onnxruntime(model: onnx.ModelProto, target, out_dir, name: str) -> None:
    """compile_model succeeds (its own parity check passes) and, on this host, reports a parity within TOLERANCE."""
    parity = compile_model(model, target, out_dir, name=name).report["tvm"]["parity"]
    if host_mismatch(target) is None:
        assert parity["max_abs"] <= TOLERANCE * parity["ref_range"]


@pytest.mark.parametrize("isa, rows, cols, tile", [  # rows: an NHWC conv's image width (a tile stays in one row)
    ("avx512", 14, 224, (7, 2)),    # efficientformer_l1 stage 3 fc2: 14 zmm accumulators
    ("avx512", 56, 48, (8, 3)),     # stage 1 fc2: 48 output channels are 3 zmm; 8 pixels divide the width 56
    ("avx512", 7, 1792, (7, 2)),    # stage 4 fc1: 7x4 would need 33 zmm (28 accumulators, 4 of B, 1 broadcast)
    ("avx512", 49, 1536, (7, 3)),   # attention qkv: 21 accumulators
    ("avx512", 14, 20, None),       # 20 columns are no whole zmm: MetaSchedule's TIR stays
    ("avx2", 14, 224, (2, 4)),      # 16 ymm registers: at most 12 accumulators
    ("avx2", 56, 48, (4, 3)),
    ("avx2", 7, 1792, (7, 1)),
])
def test_tile_is_the_most_accumulators_that_divide_the_output(isa, rows, cols, tile):
    from edgevit.backends.tvm import adapter

    assert adapter._gemm_tile(isa, rows, cols) == tile


def test_1x1_convs_and_matmul_call_the_microkernels_and_are_not_tuned():
    _, _, adapter, tvm_target, mod = prepare(gemm_model(), targets.load("x86-avx512"))
    gemm = adapter.gemm_microkernel_funcs(mod)
    assert len(gemm) == 3  # conv C→2C + GELU, conv 2C→C + residual, matmul + bias
    for name in gemm:
        script = mod[name].script()
        assert "ev_gemm_f32_" in script and "T.parallel" in script
    assert not set(gemm) & set(adapter.Tuner(mod, tvm_target).task_names())

    _, _, _, _, avx2 = prepare(gemm_model(), targets.load("x86-avx2"))
    assert len(adapter.gemm_microkernel_funcs(avx2)) == 3 and "ev_gemm_f32_avx2_" in avx2[gemm[0]].script()
    _, _, _, _, arm = prepare(gemm_model(), targets.load("rpi4"))  # only targets that ask for them
    assert adapter.gemm_microkernel_funcs(arm) == []


def test_shapes_without_a_tile_keep_their_tir():
    _, _, adapter, _, mod = prepare(gemm_model(out_channels=20), targets.load("x86-avx512"))
    assert len(adapter.gemm_microkernel_funcs(mod)) == 1  # only conv 32→64: 20 output channels fit no tile


@pytest.mark.parametrize("target_name, out_channels, channels", [
    ("x86-avx512", None, 32), ("x86-avx512", 20, 32), ("x86-avx2", None, 32),
    ("x86-avx512", None, 64),  # weights of several packed panels
])
def test_library_with_microkernels_matches_onnxruntime(tmp_path, target_name, out_channels, channels):
    target = targets.load(target_name)
    result = compile_model(gemm_model(channels=channels, out_channels=out_channels), target, tmp_path, name="gemm")
    report = result.report["tvm"]
    assert report["schedules"]["gemm_microkernel_prim_funcs"] == (3 if out_channels is None else 1)
    isa = target.options["gemm_microkernels"]
    defined = subprocess.run(["nm", "-D", "--defined-only", str(tmp_path / "gemm.so")], capture_output=True,
                             text=True, check=True).stdout
    assert f"ev_gemm_f32_{isa}_" in defined  # linked in, not left to the loader
    if host_mismatch(target) is None:
        assert report["parity"]["max_abs"] <= TOLERANCE * report["parity"]["ref_range"]
    else:
        assert report["parity"] is None


def test_every_tile_the_scheduler_may_pick_is_in_the_c_file(tmp_path):
    """GEMM_TILES (what _gemm_tile picks from) and ev_gemm_x86.c's kernel list are kept by hand: compile the file
    and look every tile's symbol up."""
    from edgevit.backends.tvm import adapter

    obj = tmp_path / "ev_gemm.o"
    subprocess.run(["gcc", "-O1", "-c", str(adapter.GEMM_SOURCE), "-o", str(obj)], check=True)
    defined = set(subprocess.run(["nm", "--defined-only", str(obj)], capture_output=True, text=True,
                                 check=True).stdout.split())
    for isa, tiles in adapter.GEMM_TILES.items():
        for mr, nv in tiles:
            assert f"ev_gemm_f32_{isa}_{mr}x{nv}" in defined


def test_microkernels_on_a_non_x86_target_are_a_one_line_error():
    import dataclasses

    from edgevit.errors import EdgevitError

    rpi4 = targets.load("rpi4")
    with pytest.raises(EdgevitError, match="needs an x86_64 target"):
        prepare(gemm_model(), dataclasses.replace(rpi4, options={**rpi4.options, "gemm_microkernels": "avx2"}))


def _canonical_gelu_model(blocked: bool) -> onnx.ModelProto:
    """gemm_model after canonicalize-gelu: Gelu-20, or (`blocked`: a ReduceMean with an axes attribute keeps the
    opset at 17, see test_canonicalize_gelu) edgevit.Gelu with its function body."""
    import onnx_ir as ir
    from onnx import helper

    from edgevit.passes.canonicalize_gelu import PASS

    model = gemm_model()
    if blocked:
        model.graph.node.append(helper.make_node("ReduceMean", ["y"], ["y_mean"], axes=[1]))
        model.graph.output.append(helper.make_tensor_value_info("y_mean", onnx.TensorProto.FLOAT, [1, 1, 32]))
    irm = ir.from_proto(model)
    assert PASS.run(irm) == 1
    return ir.to_proto(irm)


@pytest.mark.parametrize("blocked, domain", [(False, ""), (True, "edgevit")])
def test_gelu_is_one_vectorizable_polynomial(blocked, domain):
    """Gelu-20 and edgevit.Gelu both lower to relax.nn.gelu with fast_erf: no scalar libm erf call, and fast_erf's
    division is the only one (edgevit.Gelu's function body, x/√2, is not what TVM sees)."""
    model = _canonical_gelu_model(blocked)
    assert {n.domain for n in model.graph.node if n.op_type == "Gelu"} == {domain}
    _, _, _, _, mod = prepare(model, targets.load("x86-avx512"))
    (script,) = [mod[gv].script() for gv in mod.get_global_vars() if "gelu" in gv.name_hint]
    assert "ev_gemm_f32_avx512_" in script  # still the fc1 micro-kernel's epilogue
    assert "erf" not in script.replace("fast_erf", "") and script.count(" / ") == 1


def test_edgevit_gelu_compiles_to_what_onnxruntime_computes(tmp_path):
    """edgevit.Gelu reaches TVM as com.microsoft.Gelu: compile's parity check against onnxruntime holds."""
    target = targets.load("x86-avx512")
    _assert_compiles_to_onnxruntime(_canonical_gelu_model(blocked=True), target, tmp_path, "gelu")


def _activation_matmul_model() -> onnx.ModelProto:
    """MatMul of two graph inputs [14, 32] x [32, 64]: a micro-kernel shape whose B is no constant."""
    from onnx import helper

    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "act_matmul",
                              [helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [1, 14, 32]),
                               helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [1, 32, 64])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 14, 64])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_constant_weights_are_packed_into_panels_at_compile_time():
    from edgevit.backends.tvm import adapter

    _, _, _, _, mod = prepare(gemm_model(channels=64), targets.load("x86-avx512"))
    gemm = adapter.gemm_microkernel_funcs(mod)
    assert all(adapter.PREPACK_ATTR in mod[name].script() for name in gemm)
    # conv 64→128: HWIO weights [1, 1, 64, 128], tile 7x2 → four [64 x 32] panels
    assert "T.sblock_alloc_buffer((T.int64(4), T.int64(1), T.int64(1), T.int64(64), T.int64(32)))" in mod.script()

    folded = adapter.fold_prepacked_weights(mod)
    names = [gv.name_hint for gv in folded.get_global_vars()]
    assert sum(name.endswith("_prepacked") for name in names) == len(gemm)
    assert not any("weight_prepack" in name for name in names)  # packed by FoldConstant, not at run time

    _, _, _, _, act = prepare(_activation_matmul_model(), targets.load("x86-avx512"))
    (name,) = adapter.gemm_microkernel_funcs(act)
    assert adapter.PREPACK_ATTR not in act[name].script()  # an activation operand keeps its layout


@pytest.mark.parametrize("target_name, stride, width, out_channels, groups, on_kernels", [
    ("x86-avx512", 1, 14, 128, 1, True),   # 3x3 stride 1: 9 kernel calls per tile, rows read from the padded copy
    ("x86-avx512", 2, 28, 128, 1, True),   # stride 2: the padded copy stored even columns first
    ("x86-avx2", 2, 28, 128, 1, True),
    ("x86-avx512", 2, 28, 32, 1, False),   # 32 output channels: too few MACs per copied element to pay the copy
    ("x86-avx512", 1, 14, 32, 32, False),  # depthwise: no input-channel reduction to call the kernels on
])
def test_3x3_convs_on_the_microkernels_match_onnxruntime(tmp_path, target_name, stride, width, out_channels, groups,
                                                         on_kernels):
    from edgevit.backends.tvm import adapter

    model = window_conv_model(stride, width=width, out_channels=out_channels, groups=groups)
    target = targets.load(target_name)
    _, _, _, _, mod = prepare(model, target)
    assert len(adapter.gemm_microkernel_funcs(mod)) == int(on_kernels)
    _assert_compiles_to_onnxruntime(model, target, tmp_path, "conv")


@pytest.mark.parametrize("target_name, width, channels, activation, fused", [
    ("x86-avx512", 14, 32, "Gelu", True),   # weights 2 x 16 KB: one PrimFunc, hidden activations per row tile
    ("x86-avx2", 28, 48, "Gelu", True),
    ("x86-avx512", 7, 192, "Gelu", False),  # 2 x 576 KB of weights would not stay in L2 for every row tile
    ("x86-avx512", 14, 32, "Relu", False),  # only the GELU MLP is matched
])
def test_conv_mlp_fuses_into_one_primfunc_that_matches_onnxruntime(tmp_path, target_name, width, channels, activation,
                                                                    fused):
    from edgevit.backends.tvm import adapter

    model = conv_mlp_model(width=width, channels=channels, activation=activation)
    target = targets.load(target_name)
    _, _, _, tvm_target, mod = prepare(model, target)
    mlps = [gv.name_hint for gv, f in mod.functions_items() if (f.attrs or {}).get(adapter.MLP_ATTR)]
    assert len(mlps) == int(fused)
    assert len(adapter.gemm_microkernel_funcs(mod)) == (1 if fused else 2)
    assert not set(mlps) & set(adapter.Tuner(mod, tvm_target).task_names())
    _assert_compiles_to_onnxruntime(model, target, tmp_path, "mlp")


def test_conv_mlp_stays_unfused_without_microkernels():
    from edgevit.backends.tvm import adapter

    _, _, _, _, mod = prepare(conv_mlp_model(), targets.load("rpi4"))  # ARM: MetaSchedule schedules everything
    assert not any((f.attrs or {}).get(adapter.MLP_ATTR) for _, f in mod.functions_items())
    assert adapter.gemm_microkernel_funcs(mod) == []


@pytest.mark.parametrize("target_name, pool, channels, scheduled", [
    ("x86-avx512", "AveragePool", 32, True),  # the token mixer: pool, subtract, scale, add in one pass
    ("x86-avx2", "AveragePool", 24, True),    # 3 ymm of channels
    ("x86-avx512", "MaxPool", 32, True),      # stride 2, -inf padding
    ("x86-avx512", "AveragePool", 20, False),  # 20 channels are no whole zmm: MetaSchedule's TIR stays
])
def test_pooling_is_scheduled_by_hand_and_matches_onnxruntime(tmp_path, target_name, pool, channels, scheduled):
    from edgevit.backends.tvm import adapter

    model = pool_mixer_model(channels=channels, pool=pool)
    target = targets.load(target_name)
    _, _, _, tvm_target, mod = prepare(model, target)
    pools = [gv.name_hint for gv, f in mod.functions_items() if (f.attrs or {}).get(adapter.POOL_ATTR)]
    assert len(pools) == int(scheduled)
    for name in pools:
        script = mod[name].script()
        assert "T.parallel" in script and "T.vectorized" in script and "pad_temp" not in script  # padding read in place
    assert not set(pools) & set(adapter.Tuner(mod, tvm_target).task_names())
    _assert_compiles_to_onnxruntime(model, target, tmp_path, "pool")


def test_pooling_keeps_metaschedule_without_microkernels():
    from edgevit.backends.tvm import adapter

    _, _, _, _, mod = prepare(pool_mixer_model(), targets.load("rpi4"))
    assert not any((f.attrs or {}).get(adapter.POOL_ATTR) for _, f in mod.functions_items())
