"""PyTorch (or a user's ONNX) → a static-shape, simplified, checked ONNX graph, verified numerically.

The exported graph keeps BatchNormalization and the training-time branches as PyTorch has them: folding
and reparameterizing is the pass pipeline's job (edgevit/passes), where each rewrite is checked on its own.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from .. import ui
from ..errors import EdgevitError, ParityError
from ..ir import graph as G
from ..ir.numerics import Parity, ort_session, run_ort
from .source import ModelSource

DEFAULT_OPSET = 17
DEFAULT_TOLERANCE = 1e-4  # max abs error allowed, relative to the reference output's range
EXPORTERS = ("torchscript", "dynamo")


@dataclass
class ExportResult:
    model: onnx.ModelProto
    source: ModelSource
    input_shapes: dict[str, list[int]]
    parity: Parity
    opset: int
    exporter: str
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "model": self.source.spec,
            "model_kind": self.source.kind,
            "inputs": {k: v for k, v in self.input_shapes.items()},
            "outputs": [o.name for o in self.model.graph.output],
            "opset": self.opset,
            "exporter": self.exporter,
            "nodes": len(self.model.graph.node),
            "parity": self.parity.as_dict(),
            "seconds": self.timings,
        }


def _flatten_outputs(out) -> list[np.ndarray]:
    if isinstance(out, (tuple, list)):
        return [a for o in out for a in _flatten_outputs(o)]
    if isinstance(out, dict):
        return [a for o in out.values() for a in _flatten_outputs(o)]
    return [out.detach().cpu().numpy()]


@contextlib.contextmanager
def _quiet():
    """torch.onnx and onnxsim print warnings/tracer chatter; keep the terminal readable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()):
            yield


def torch_to_onnx(module, example, opset: int, exporter: str, path: Path) -> None:
    import torch

    try:
        with _quiet(), torch.no_grad():
            if exporter == "dynamo":
                program = torch.onnx.export(module, (example,), dynamo=True, opset_version=opset,
                                            input_names=["input"], output_names=["output"], verbose=False)
                program.save(str(path))
            else:
                torch.onnx.export(module, (example,), str(path), opset_version=opset, dynamo=False,
                                  input_names=["input"], output_names=["output"], do_constant_folding=True)
    except EdgevitError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgevitError(f"torch.onnx.export ({exporter}) failed at opset {opset}: {first}") from None


def simplify(model: onnx.ModelProto, input_shapes: dict[str, list[int]] | None = None) -> onnx.ModelProto:
    """onnxsim with static input shapes; BatchNorm is kept (folding is a pass with its own checks)."""
    import onnxsim

    try:
        with _quiet():
            simplified, ok = onnxsim.simplify(model, skip_fuse_bn=True, overwrite_input_shapes=input_shapes,
                                             initializers_as_constants=False)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgevitError(f"onnxsim could not simplify the graph: {first}") from None
    if not ok:
        raise EdgevitError("onnxsim's own check of the simplified graph failed")
    return simplified


def export(
    source: ModelSource,
    input_size: tuple[int, int] | None = None,
    batch: int = 1,
    opset: int = DEFAULT_OPSET,
    tolerance: float = DEFAULT_TOLERANCE,
    samples: int = 2,
    exporter: str = "torchscript",
) -> ExportResult:
    """Export and verify; raises EdgevitError (bad input) or ParityError (numerics off)."""
    if batch < 1:
        raise EdgevitError(f"--batch must be ≥ 1, got {batch}")
    if input_size is not None and min(input_size) < 1:
        raise EdgevitError(f"--input-size must be positive, got {input_size[0]} {input_size[1]}")
    if not 7 <= opset <= 23:
        raise EdgevitError(f"--opset {opset} is out of range (7..23; 17 or newer recommended)")
    if exporter not in EXPORTERS:
        raise EdgevitError(f"unknown exporter '{exporter}' (choose from {', '.join(EXPORTERS)})")
    from ..ir import limits

    limits.check_input(batch, input_size)
    timings: dict[str, float] = {}
    if source.is_torch:
        return _export_torch(source, input_size, batch, opset, tolerance, samples, exporter, timings)
    return _export_onnx(source, input_size, batch, tolerance, samples, timings)


def _export_torch(source, input_size, batch, opset, tolerance, samples, exporter, timings) -> ExportResult:
    import torch

    hw = tuple(input_size) if input_size else (source.default_input_size() or (224, 224))
    t = time.perf_counter()
    with ui.step(f"build {source.name}"):
        module = source.torch_module(hw)
        example = torch.zeros(batch, 3, *hw)
        try:
            with torch.no_grad():
                module(example)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EdgevitError(f"{source.name} does not run at input {batch}x3x{hw[0]}x{hw[1]}: {first}") from None
    timings["build"] = time.perf_counter() - t

    t = time.perf_counter()
    with ui.step(f"export to ONNX (opset {opset}, {exporter})"), tempfile.TemporaryDirectory() as tmp:
        raw_path = Path(tmp) / "raw.onnx"
        torch_to_onnx(module, example, opset, exporter, raw_path)
        raw = onnx.load(str(raw_path))
    timings["export"] = time.perf_counter() - t

    t = time.perf_counter()
    with ui.step("simplify (onnxsim) and check"):
        shapes = G.static_input_shapes(raw, batch=batch, input_size=hw)
        model = simplify(raw, shapes)
        _check(model)
    timings["simplify"] = time.perf_counter() - t

    t = time.perf_counter()
    parity = Parity()
    with ui.step(f"parity vs PyTorch ({samples} seeded inputs)"):
        sess = ort_session(model)
        for seed in range(samples):
            feeds = G.seeded_inputs(model, shapes, seed)
            with torch.no_grad():
                ref = _flatten_outputs(module(*[torch.from_numpy(v) for v in feeds.values()]))
            got = run_ort(model, feeds, sess)
            if len(ref) != len(got):
                raise ParityError(f"PyTorch gives {len(ref)} outputs, the ONNX graph {len(got)}")
            for r, g in zip(ref, got):
                parity.update(r, g)
    timings["parity"] = time.perf_counter() - t
    _enforce(parity, tolerance, "PyTorch")
    return ExportResult(model, source, shapes, parity, opset, exporter, timings)


def _export_onnx(source, input_size, batch, tolerance, samples, timings) -> ExportResult:
    from ..ir import limits

    original = G.load_onnx(source.path)
    t = time.perf_counter()
    with ui.step("make static, simplify (onnxsim) and check"):
        shapes = G.static_input_shapes(original, batch=batch, input_size=input_size)
        limits.check(original, shapes)
        model = simplify(original, shapes)
        _check(model)
    timings["simplify"] = time.perf_counter() - t
    t = time.perf_counter()
    parity = Parity()
    with ui.step(f"parity vs the input graph ({samples} seeded inputs)"):
        ref_sess, new_sess = ort_session(original), ort_session(model)
        for seed in range(samples):
            feeds = G.seeded_inputs(model, shapes, seed)
            for r, g in zip(run_ort(original, feeds, ref_sess), run_ort(model, feeds, new_sess)):
                parity.update(r, g)
    timings["parity"] = time.perf_counter() - t
    _enforce(parity, tolerance, "the input graph")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return ExportResult(model, source, shapes, parity, opset, "onnx", timings)


def _check(model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgevitError(f"exported graph fails onnx.checker: {first}") from None


def _enforce(parity: Parity, tolerance: float, against: str) -> None:
    ui.console.print(
        f"  parity vs {against}: max abs error {parity.max_abs:.3g}, relative {parity.rel:.3g} "
        f"(output range {parity.ref_range:.3g}, tolerance {tolerance:g} × range)"
    )
    if not parity.within(tolerance):
        raise ParityError(
            f"parity check failed: max abs error {parity.max_abs:.3g} > {tolerance:g} × output range "
            f"{parity.ref_range:.3g}; no file written"
        )
