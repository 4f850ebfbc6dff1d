"""Calibration: observe every activation of the float graph on sample inputs and pick int8 ranges.

Data (`load_calibration`):
  - a `.npy` file: float images, NCHW (or NHWC) at the model's input size, preprocessed as the model
    expects — used as is;
  - a folder of images (png/jpg/jpeg/bmp, sorted, at most 512): RGB, resized bilinearly to the input
    size, scaled to [0, 1] and normalised with the ImageNet mean/std (timm's default preprocessing);
  - nothing: the documented synthetic set — 32 seeded images of multi-scale smooth noise (Gaussian
    noise at 1/4, 1/8 and 1/16 of the resolution, upsampled and summed), standardised per channel to
    mean 0 / std 1 like normalised photos. Ranges from it are only as good as its resemblance to real
    inputs; give real images for deployment.

Methods (`Observer.range`): `minmax` (exact extremes: never clips, wastes resolution on outliers),
`percentile` (0.01 / 99.99 percentiles of the observed values), `mse` (the clipping range, among 40
shrinkings of the min/max range, whose int8 quantize-dequantize has the lowest mean squared error on
the observed values). Percentile and mse work on a seeded subsample of ≤ 65 536 values per tensor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import EdgevitError
from ..ir.numerics import ort_session
from .graph import FloatGraph, to_onnx
from .scheme import QMAX, QMIN, choose_qparams

METHODS = ("minmax", "percentile", "mse")
SYNTHETIC_SAMPLES = 32
MAX_IMAGES = 512
_SUBSAMPLE = 65536
_IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp"}
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)


def synthetic(shape: list[int], samples: int = SYNTHETIC_SAMPLES, seed: int = 0) -> np.ndarray:
    """The synthetic calibration set described in the module docstring: (samples, C, H, W) float32."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    c, h, w = shape[1:]
    images = torch.zeros(samples, c, h, w)
    for factor in (4, 8, 16):
        noise = torch.randn(samples, c, max(1, h // factor), max(1, w // factor), generator=gen)
        images += torch.nn.functional.interpolate(noise, size=(h, w), mode="bilinear", align_corners=False)
    images = (images - images.mean(dim=(0, 2, 3), keepdim=True)) / images.std(dim=(0, 2, 3), keepdim=True)
    return images.numpy().astype(np.float32)


def load_calibration(calib: str | Path | None, shape: list[int]) -> tuple[np.ndarray, str]:
    """(N, C, H, W) float32 calibration inputs and a one-line description of where they came from."""
    if calib is None:
        return synthetic(shape), f"synthetic: {SYNTHETIC_SAMPLES} seeded multi-scale noise images"
    path = Path(calib)
    if not path.exists():
        raise EdgevitError(f"calibration data {path} does not exist")
    if path.is_dir():
        return _load_images(path, shape), f"images: {path}"
    if path.suffix != ".npy":
        raise EdgevitError(f"calibration data must be a folder of images or a .npy file, got {path}")
    try:
        data = np.load(path)
    except Exception as exc:
        raise EdgevitError(f"cannot read {path} as .npy: {exc}") from None
    want = tuple(shape[1:])
    if data.ndim == 4 and data.shape[1:] != want and (data.shape[3], *data.shape[1:3]) == want:
        data = data.transpose(0, 3, 1, 2)
    if data.ndim != 4 or data.shape[1:] != want or len(data) == 0:
        raise EdgevitError(f"{path} has shape {data.shape}; expected (N, {', '.join(map(str, want))}) "
                           f"(or NHWC) at the model's input size")
    return np.ascontiguousarray(data, np.float32), f"npy: {path} ({len(data)} samples)"


def _load_images(folder: Path, shape: list[int]) -> np.ndarray:
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_EXTS)[:MAX_IMAGES]
    if not files:
        raise EdgevitError(f"no images ({', '.join(sorted(_IMAGE_EXTS))}) in {folder}")
    if shape[1] != 3:
        raise EdgevitError(f"image calibration needs a 3-channel input, the model takes {shape[1]}")
    h, w = shape[2:]
    arrays = []
    for f in files:
        try:
            with Image.open(f) as im:
                arrays.append(np.asarray(im.convert("RGB").resize((w, h), Image.BILINEAR), np.float32) / 255.0)
        except Exception as exc:
            raise EdgevitError(f"cannot read image {f}: {exc}") from None
    images = np.stack(arrays).transpose(0, 3, 1, 2)
    return ((images - _IMAGENET_MEAN) / _IMAGENET_STD).astype(np.float32)


class Observer:
    """Running min/max and a seeded subsample of one tensor's values."""

    def __init__(self, seed: int):
        self.lo, self.hi = np.inf, -np.inf
        self.samples: list[np.ndarray] = []
        self._count = 0
        self._rng = np.random.default_rng(seed)

    def update(self, x: np.ndarray) -> None:
        flat = x.reshape(-1).astype(np.float32)
        self.lo, self.hi = min(self.lo, float(flat.min())), max(self.hi, float(flat.max()))
        if self._count < _SUBSAMPLE:  # keep the first values until full, then thin uniformly
            self.samples.append(flat)
            self._count += flat.size
            if self._count > _SUBSAMPLE:
                values = np.concatenate(self.samples)
                self.samples = [self._rng.choice(values, _SUBSAMPLE, replace=False)]
        else:
            self.samples.append(self._rng.choice(flat, max(1, flat.size * _SUBSAMPLE // (self._count + flat.size)),
                                                 replace=False))

    def values(self) -> np.ndarray:
        return np.concatenate(self.samples)

    def range(self, method: str) -> tuple[float, float]:
        if method == "minmax":
            return self.lo, self.hi
        values = self.values()
        if method == "percentile":
            return float(np.percentile(values, 0.01)), float(np.percentile(values, 99.99))
        if method == "mse":
            best, best_err = (self.lo, self.hi), np.inf
            for f in np.linspace(1.0, 0.1, 40):
                qp = choose_qparams(self.lo * f, self.hi * f)
                q = np.clip(np.round(values / qp.scale) + qp.zero_point, QMIN, QMAX)
                err = float(np.mean(((q - qp.zero_point) * qp.scale - values) ** 2))
                if err < best_err:
                    best, best_err = (self.lo * f, self.hi * f), err
            return best
        raise EdgevitError(f"unknown calibration method '{method}' (choose from {', '.join(METHODS)})")


def observe(graph: FloatGraph, data: np.ndarray) -> tuple[dict[str, Observer], dict[str, list[int]]]:
    """Run the float graph in onnxruntime on `data`; observers and shapes of every activation."""
    names = [graph.input] + [o for n in graph.nodes for o in n.outputs if o]
    session = ort_session(to_onnx(graph, outputs=names[1:]))
    out_names = [o.name for o in session.get_outputs()]
    observers = {n: Observer(seed=i) for i, n in enumerate(names)}
    shapes: dict[str, list[int]] = {}
    batch = graph.input_shape[0]
    if len(data) < batch:
        raise EdgevitError(f"{len(data)} calibration samples, but the graph's batch is {batch}")
    for start in range(0, len(data) - batch + 1, batch):
        x = data[start:start + batch]
        observers[graph.input].update(x)
        for name, value in zip(out_names, session.run(out_names, {graph.input: x})):
            observers[name].update(value)
            shapes[name] = list(value.shape)
    shapes[graph.input] = list(graph.input_shape)
    return observers, shapes
