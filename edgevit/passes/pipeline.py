"""The pass pipeline: run rewrite passes in order, measure each, and prove each numerically.

After every pass the graph is cleaned (unused nodes/initializers dropped, topologically sorted), checked
with onnx.checker and run in onnxruntime on seeded inputs against the *input* graph. A pass that breaks
the checker, raises, or drifts past the tolerance is rolled back and reported — the output graph is
always one that was verified, never a silently changed one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import onnx
import onnx_ir as ir
import onnx_ir.passes.common as ir_common

from .. import ui
from ..errors import EdgevitError
from ..ir import graph as G
from ..ir.analysis import analyze
from ..ir.numerics import Parity, ort_session, run_ort
from . import registry
from .base import Pass

DEFAULT_TOLERANCE = 1e-4  # max abs error vs the input graph, as a fraction of its output range


@dataclass
class GraphStats:
    nodes: int
    params: int
    macs: int

    @classmethod
    def of(cls, model: onnx.ModelProto) -> "GraphStats":
        a = analyze(model)
        return cls(len(model.graph.node), a.params, a.macs)


@dataclass
class PassRecord:
    name: str
    matches: int
    before: GraphStats
    after: GraphStats
    max_abs: float  # vs the input graph, after this pass
    seconds: float
    status: str = "applied"  # applied | no-match | rolled back: <why>


@dataclass
class PipelineReport:
    passes: list[PassRecord] = field(default_factory=list)
    input: GraphStats | None = None
    output: GraphStats | None = None
    parity: Parity = field(default_factory=Parity)
    op_histogram_before: dict[str, int] = field(default_factory=dict)
    op_histogram_after: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "input": asdict(self.input) if self.input else None,
            "output": asdict(self.output) if self.output else None,
            "parity": self.parity.as_dict(),
            "passes": [asdict(p) for p in self.passes],
            "op_histogram_before": self.op_histogram_before,
            "op_histogram_after": self.op_histogram_after,
        }


def select(passes: list[str] | None = None, skip: list[str] | None = None) -> list[Pass]:
    """The pipeline's passes in order; `passes` keeps only those, `skip` drops those."""
    available = registry.all_passes()
    names = [p.name for p in available]
    for name in (passes or []) + (skip or []):
        if name not in names:
            raise EdgevitError(f"unknown pass '{name}'; passes: {', '.join(names)}")
    chosen = [p for p in available if passes is None or p.name in passes]
    return [p for p in chosen if p.name not in (skip or [])]


def _cleanup(model: ir.Model) -> None:
    for cleanup in (ir_common.RemoveUnusedNodesPass(), ir_common.RemoveUnusedFunctionsPass(),
                    ir_common.RemoveUnusedOpsetsPass(), ir_common.TopologicalSortPass()):
        cleanup(model)


def _histogram(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in model.graph.node:
        key = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def run(
    model: onnx.ModelProto,
    passes: list[Pass] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    samples: int = 2,
) -> tuple[onnx.ModelProto, PipelineReport]:
    """Optimize a static-shape ONNX model; returns the verified result and the pass report."""
    passes = registry.all_passes() if passes is None else passes
    if not G.is_static(model):
        raise EdgevitError("the graph has dynamic input dimensions; run `edgevit export` on it first "
                           "(with --input-size) so shapes are static")
    shapes = G.static_input_shapes(model)
    feeds = [G.seeded_inputs(model, shapes, seed) for seed in range(samples)]
    ref_session = ort_session(model)
    references = [run_ort(model, f, ref_session) for f in feeds]

    report = PipelineReport(input=GraphStats.of(model), op_histogram_before=_histogram(model))
    current = model
    for p in ui.track(passes, "optimizing"):
        start = time.perf_counter()
        before = GraphStats.of(current) if report.passes else report.input
        record = PassRecord(p.name, 0, before, before, report.passes[-1].max_abs if report.passes else 0.0, 0.0)
        try:
            candidate_ir = ir.from_proto(current)
            record.matches = p.run(candidate_ir)
            if record.matches == 0:
                record.status = "no-match"
            else:
                _cleanup(candidate_ir)
                candidate = ir.to_proto(candidate_ir)
                onnx.checker.check_model(candidate, full_check=True)
                parity = _parity(candidate, feeds, references)
                if not parity.within(tolerance):
                    record.status = f"rolled back: max abs error {parity.max_abs:.3g} over tolerance"
                else:
                    current, record.max_abs = candidate, parity.max_abs
                    record.after = GraphStats.of(current)
        except EdgevitError as exc:
            record.status = f"rolled back: {exc}"
        except Exception as exc:  # a pass bug must not cost the user their model
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            record.status = f"rolled back: {type(exc).__name__}: {first}"[:300]
        record.seconds = round(time.perf_counter() - start, 3)
        if record.status.startswith("rolled back"):
            ui.console.print(f"[yellow]warning:[/yellow] pass {p.name} {record.status}")
        report.passes.append(record)

    report.output = GraphStats.of(current)
    report.op_histogram_after = _histogram(current)
    report.parity = _parity(current, feeds, references)
    return current, report


def _parity(model: onnx.ModelProto, feeds, references) -> Parity:
    parity = Parity()
    session = ort_session(model)
    for f, ref in zip(feeds, references):
        for r, g in zip(ref, run_ort(model, f, session)):
            parity.update(r, g)
    return parity

