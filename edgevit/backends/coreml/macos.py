"""macOS only: real Core ML prediction and on-device timing of a compiled package.

NOT VERIFIABLE ON LINUX. coremltools' `MLModel.predict` and `MLComputePlan` need Apple's Core ML
framework (macOS); on Linux they raise "Model prediction is only supported on macOS". Nothing here runs
in the Linux test suite: every entry point checks `available()` first and `compile_model` only calls
`measure()` on macOS. The code follows coremltools 9's documented API but has not been executed by the
authors (no Mac in CI) — treat its first run on a Mac as its test.
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

NOT_AVAILABLE = ("skipped: Core ML prediction needs macOS (coremltools cannot predict on "
                 f"{platform.system() or sys.platform}); numerics were checked with edgevit's MIL evaluator")


def available() -> bool:
    """True on macOS, where coremltools can load and run a package."""
    return sys.platform == "darwin"


def measure(package: Path, feeds: dict[str, np.ndarray], compute_units: str = "ALL", runs: int = 20) -> dict:
    """Load `package` with Core ML, predict on `feeds`, time `runs` predictions (macOS only).

    Returns outputs and median/min latency in ms. On a Mac this measures the Mac's chip, not an iPhone:
    use Xcode's performance report on a connected device for iPhone numbers.
    """
    if not available():
        raise RuntimeError(NOT_AVAILABLE)
    import coremltools as ct  # pragma: no cover - macOS only

    model = ct.models.MLModel(str(package), compute_units=getattr(ct.ComputeUnit, compute_units))  # pragma: no cover
    outputs = model.predict(feeds)  # pragma: no cover
    times = []  # pragma: no cover
    for _ in range(runs):  # pragma: no cover
        start = time.perf_counter()
        model.predict(feeds)
        times.append((time.perf_counter() - start) * 1e3)
    return {"status": "measured on this Mac (not an iPhone)", "compute_units": compute_units,  # pragma: no cover
            "median_ms": statistics.median(times), "min_ms": min(times), "runs": runs,
            "outputs": {k: np.asarray(v).tolist() if hasattr(v, "shape") else v for k, v in outputs.items()}}


def compute_plan(package: Path, compute_units: str = "ALL") -> dict:
    """Per-op preferred device from Core ML's own MLComputePlan (macOS 14.4+ only)."""
    if not available():
        raise RuntimeError(NOT_AVAILABLE)
    import coremltools as ct  # pragma: no cover - macOS only
    from coremltools.models.compute_plan import MLComputePlan  # pragma: no cover

    compiled = ct.models.MLModel(str(package), compute_units=getattr(ct.ComputeUnit, compute_units)).get_compiled_model_path()  # pragma: no cover
    plan = MLComputePlan.load_from_path(path=compiled, compute_units=getattr(ct.ComputeUnit, compute_units))  # pragma: no cover
    program = plan.model_structure.program  # pragma: no cover
    devices: dict[str, int] = {}  # preferred device type → op count
    for op in program.functions["main"].block.operations:  # pragma: no cover
        usage = plan.get_compute_device_usage_for_mlprogram_operation(op)
        if usage is not None:
            device = type(usage.preferred_compute_device).__name__
            devices[device] = devices.get(device, 0) + 1
    return {"status": "Core ML compute plan on this Mac", "ops_by_preferred_device": devices}  # pragma: no cover
