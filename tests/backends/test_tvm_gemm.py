"""x86-avx512's GEMM micro-kernels (edgevit/backends/tvm/ev_gemm_avx512.c): which PrimFuncs call them, and that
a library linked with them computes what onnxruntime does."""

from __future__ import annotations

import pytest

from edgevit import targets
from edgevit.backends.tvm import TOLERANCE, compile_model, host_mismatch, prepare

from . import gemm_model


@pytest.mark.parametrize("rows, cols, tile", [
    (196, 224, (7, 2)),    # efficientformer_l1 stage 3 fc2: 14 zmm accumulators
    (3136, 48, (8, 3)),    # stage 1 fc2: 48 output channels are 3 zmm; 8 rows divide 3136
    (49, 1792, (7, 4)),    # stage 4 fc1: 28 accumulators, the most that leave registers for A and B
    (16, 32, (8, 2)),
    (196, 20, None),       # 20 columns are no whole zmm: MetaSchedule's TIR stays
])
def test_tile_is_the_most_accumulators_that_divide_the_output(rows, cols, tile):
    from edgevit.backends.tvm import adapter

    assert adapter._gemm_tile(rows, cols) == tile


def test_1x1_convs_and_matmul_call_the_microkernels_and_are_not_tuned():
    _, _, adapter, tvm_target, mod = prepare(gemm_model(), targets.load("x86-avx512"))
    gemm = adapter.gemm_microkernel_funcs(mod)
    assert len(gemm) == 3  # conv C→2C + GELU, conv 2C→C + residual, matmul + bias
    for name in gemm:
        script = mod[name].script()
        assert "ev_gemm_f32_" in script and "T.parallel" in script
    assert not set(gemm) & set(adapter.Tuner(mod, tvm_target).task_names())

    _, _, _, _, plain = prepare(gemm_model(), targets.load("x86-avx2"))  # only targets that ask for them
    assert adapter.gemm_microkernel_funcs(plain) == []


def test_shapes_without_a_tile_keep_their_tir():
    _, _, adapter, _, mod = prepare(gemm_model(out_channels=20), targets.load("x86-avx512"))
    assert len(adapter.gemm_microkernel_funcs(mod)) == 1  # only conv 32→64: 20 output channels fit no tile


@pytest.mark.parametrize("out_channels", [None, 20])
def test_library_with_microkernels_matches_onnxruntime(tmp_path, out_channels):
    target = targets.load("x86-avx512")
    result = compile_model(gemm_model(out_channels=out_channels), target, tmp_path, name="gemm")
    report = result.report["tvm"]
    assert report["schedules"]["gemm_microkernel_prim_funcs"] == (3 if out_channels is None else 1)
    assert b"ev_gemm_f32_7x" in (tmp_path / "gemm.so").read_bytes()  # linked in, not left to the loader
    if host_mismatch(target) is None:
        assert report["parity"]["max_abs"] <= TOLERANCE * report["parity"]["ref_range"]
    else:
        assert report["parity"] is None
