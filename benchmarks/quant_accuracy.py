"""int8 accuracy cost, measured: train an MCU ViT on scikit-learn's digits, quantize, compare top-1.

Digits (1797 8×8 grey images, 10 classes) are upsampled bilinearly to the model's input size, copied to
3 channels and standardised; a seeded stratified 80/20 split gives 1437 training and 360 held-out
images. The model trains for a fixed time budget (AdamW, cosine schedule, ±1-pixel random shifts on
the 8×8 grid), is exported and optimized by the normal pipeline (`edgevit.frontend.export` +
`edgevit.passes.pipeline`), calibrated on 256 training images saved as .npy, and quantized with each
calibration method. Reported on the held-out split: fp32 top-1 (onnxruntime), int8 top-1 (the numpy
reference executor — the semantics the C runtime must match), their top-1 agreement, and the QDQ
model's top-1 in onnxruntime as a cross-check.

    .venv/bin/python benchmarks/quant_accuracy.py [--model mcu_former] [--seconds 90] [--json out.json]

Measured (2 shared cores, torch 2.14.1, scikit-learn 1.9.1; 360 held-out images):
  mcu_former, 90 s budget (19 epochs, ~2.5 min end to end): fp32 98.9 %; int8 98.9 % with minmax, percentile and mse;
      agreement with fp32 100 %; QDQ in onnxruntime 98.9 %.
  mcu_deit, 120 s budget (12 epochs, under-trained — a plain ViT needs far more steps): fp32 54.4 %;
      int8 54.4 % (minmax) / 55.0 % (percentile, mse); agreement 96.4 / 96.1 / 95.0 %.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgevit import zoo
from edgevit.frontend.export import export
from edgevit.frontend.source import ModelSource
from edgevit.ir.numerics import ort_session
from edgevit.passes import pipeline
from edgevit.quant import quantize_model
from edgevit.quant.calibrate import METHODS
from edgevit.quant.qdq import to_qdq


def digits(size: tuple[int, int], seed: int = 0):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = torch.from_numpy(data.images.astype(np.float32) / 16.0)[:, None]
    y = torch.from_numpy(data.target.astype(np.int64))
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=0.2, random_state=seed, stratify=y)
    return (x[idx_train], y[idx_train]), (x[idx_test], y[idx_test])


def to_input(x8: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """8×8 [0, 1] digits → standardised 3-channel images at the model's input size."""
    x = F.interpolate(x8, size=size, mode="bilinear", align_corners=False)
    return ((x - 0.3) / 0.4).repeat(1, 3, 1, 1)


def shift(x8: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=gen))
    return torch.roll(F.pad(x8, (1, 1, 1, 1)), (dy, dx), (2, 3))[:, :, 1:-1, 1:-1]


def train(model, train_set, size, seconds: float, seed: int = 0) -> tuple[int, float]:
    x8, y = train_set
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    steps_per_epoch, start, epochs = (len(y) + 63) // 64, time.perf_counter(), 0
    model.train()
    while time.perf_counter() - start < seconds:
        perm = torch.randperm(len(y), generator=gen)
        for i in range(steps_per_epoch):
            batch = perm[i * 64:(i + 1) * 64]
            progress = min(1.0, (time.perf_counter() - start) / seconds)
            for group in opt.param_groups:
                group["lr"] = 2e-3 * 0.5 * (1 + np.cos(np.pi * progress))
            loss = F.cross_entropy(model(to_input(shift(x8[batch], gen), size)), y[batch], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
        epochs += 1
    return epochs, time.perf_counter() - start


class _Trained(ModelSource):
    """The trained module as an export source (the normal export path, with its parity check)."""

    def __init__(self, name: str, module):
        super().__init__("python", name, name)
        self.module = module

    def torch_module(self, input_size):
        return self.module.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mcu_former")
    ap.add_argument("--seconds", type=float, default=90.0, help="training time budget")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    size = zoo.lookup(args.model).input_size
    train_set, (x8_test, y_test) = digits(size)
    model = zoo.create(args.model)
    epochs, train_s = train(model, train_set, size, args.seconds)
    x_test = to_input(x8_test, size).numpy()
    y_test = y_test.numpy()

    onnx_model = export(_Trained(args.model, model), size, samples=1).model
    onnx_model, _ = pipeline.run(onnx_model)
    session = ort_session(onnx_model)
    fp32 = np.array([np.argmax(session.run(None, {"input": x[None]})[0]) for x in x_test])
    result = {"model": args.model, "params": zoo.stats(args.model)["params"], "train_epochs": epochs,
              "train_seconds": round(train_s, 1), "test_samples": len(y_test),
              "fp32_top1": float(np.mean(fp32 == y_test)), "int8": {}}
    with tempfile.TemporaryDirectory() as tmp:
        calib = Path(tmp) / "calib.npy"
        np.save(calib, to_input(train_set[0][:256], size).numpy())
        for method in METHODS:
            t = time.perf_counter()
            qmodel = quantize_model(onnx_model, calib, method)
            int8 = np.array([np.argmax(qmodel.run_float(x[None])[0]) for x in x_test])
            qdq = ort_session(to_qdq(qmodel.float_graph, qmodel, qmodel.qdq_consts))
            via_qdq = np.array([np.argmax(qdq.run(None, {"input": x[None]})[0]) for x in x_test])
            result["int8"][method] = {"top1": float(np.mean(int8 == y_test)),
                                      "agreement_with_fp32": float(np.mean(int8 == fp32)),
                                      "qdq_onnxruntime_top1": float(np.mean(via_qdq == y_test)),
                                      "seconds": round(time.perf_counter() - t, 1)}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
