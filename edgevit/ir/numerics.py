"""Running graphs in onnxruntime and comparing outputs — the parity check every stage uses."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx

from ..errors import EdgevitError


def ort_session(model: onnx.ModelProto | bytes):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # Parity must measure *our* graph, not onnxruntime's own fusions of it.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    data = model if isinstance(model, bytes) else model.SerializeToString()
    try:
        return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgevitError(f"onnxruntime cannot load the model: {msg}") from None


def run_ort(model: onnx.ModelProto | bytes, feeds: dict[str, np.ndarray], session=None) -> list[np.ndarray]:
    sess = session or ort_session(model)
    try:
        return sess.run(None, feeds)
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgevitError(f"onnxruntime failed to run the model: {msg}") from None


@dataclass
class Parity:
    """Worst case over all compared outputs and inputs.

    `max_abs` is the largest absolute difference; `rel` divides it by the largest |reference| value;
    `ref_range` is max - min of the reference (the scale tolerances are stated against).
    """

    max_abs: float = 0.0
    rel: float = 0.0
    ref_range: float = 0.0
    samples: int = 0

    CHUNK = 1 << 20  # elements compared at a time: float64 copies of a whole large output would double RAM

    def update(self, ref: np.ndarray, got: np.ndarray) -> None:
        ref = np.asarray(ref)
        got = np.asarray(got)
        if ref.shape != got.shape:
            raise EdgevitError(f"output shape mismatch: reference {ref.shape}, got {got.shape}")
        flat_ref, flat_got = ref.reshape(-1), got.reshape(-1)
        got_finite = ref_finite = True
        diff, scale, lo, hi = 0.0, 0.0, np.inf, -np.inf
        for i in range(0, flat_ref.size, self.CHUNK):
            r = flat_ref[i:i + self.CHUNK].astype(np.float64)
            g = flat_got[i:i + self.CHUNK].astype(np.float64)
            got_finite = got_finite and bool(np.all(np.isfinite(g)))
            ref_finite = ref_finite and bool(np.all(np.isfinite(r)))
            diff = max(diff, float(np.max(np.abs(r - g))))
            scale = max(scale, float(np.max(np.abs(r))))
            lo, hi = min(lo, float(r.min())), max(hi, float(r.max()))
        if not got_finite and ref_finite:
            self.max_abs = self.rel = float("inf")
        elif ref.size:
            scale = scale or 1.0
            self.max_abs = max(self.max_abs, diff)
            self.rel = max(self.rel, diff / scale)
            self.ref_range = max(self.ref_range, hi - lo)
        self.samples += 1

    def within(self, tolerance: float) -> bool:
        """max_abs ≤ tolerance × the reference's range (a constant reference must be matched to 1e-6)."""
        return self.max_abs <= (tolerance * self.ref_range if self.ref_range > 0 else 1e-6)

    def as_dict(self) -> dict:
        return asdict(self)
