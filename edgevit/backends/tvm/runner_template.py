#!/usr/bin/env python3
"""Run an edgevit TVM build on the device: copied as run.py next to <model>.so and <model>.tvm.json.

    python3 run.py                        seeded random inputs (seed 0), 10 timed runs
    python3 run.py --input x.npy          your inputs, one .npy per model input, in the order of the JSON
    python3 run.py --save results/        also write input_<i>.npy and output_<i>.npy there

Needs only numpy and the TVM runtime of the version recorded in the JSON (`pip install apache-tvm==…
apache-tvm-ffi==…`); it does not import edgevit, so it runs on a bare board. Seeded inputs are drawn
exactly as edgevit's parity checks draw them (numpy default_rng(seed), standard normal for floats), so
results can be compared with the host.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TVM_USE_RUNTIME_LIB", "1")  # the runtime is all a compiled model needs; loads 3x faster

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent


def fail(msg: str) -> None:
    print(f"run.py: error: {msg}", file=sys.stderr)
    sys.exit(2)


def seeded(specs: list[dict], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = []
    for s in specs:
        dtype = np.dtype(s["dtype"])
        if np.issubdtype(dtype, np.floating):
            arrays.append(rng.standard_normal(s["shape"]).astype(dtype))
        elif dtype == np.bool_:
            arrays.append(rng.integers(0, 2, s["shape"]).astype(dtype))
        else:
            arrays.append(rng.integers(0, 8, s["shape"]).astype(dtype))
    return arrays


def load_inputs(specs: list[dict], paths: list[str]) -> list[np.ndarray]:
    if len(paths) != len(specs):
        fail(f"the model has {len(specs)} input(s) ({', '.join(s['name'] for s in specs)}), got {len(paths)} --input")
    arrays = []
    for s, p in zip(specs, paths):
        a = np.load(p)
        if list(a.shape) != s["shape"] or a.dtype != np.dtype(s["dtype"]):
            fail(f"{p}: shape {list(a.shape)} {a.dtype}, input '{s['name']}' needs {s['shape']} {s['dtype']}")
        arrays.append(a)
    return arrays


def flatten(result) -> list[np.ndarray]:
    if hasattr(result, "numpy"):
        return [result.numpy()]
    return [a for r in result for a in flatten(r)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--meta", help="the <model>.tvm.json (default: the one next to this script)")
    ap.add_argument("--input", action="append", default=[], help=".npy file for the next model input")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: 0)")
    ap.add_argument("--repeat", type=int, default=10, help="timed runs after one warm-up (default: 10)")
    ap.add_argument("--save", help="folder for input_<i>.npy / output_<i>.npy")
    args = ap.parse_args()

    metas = [Path(args.meta)] if args.meta else sorted(HERE.glob("*.tvm.json"))
    if len(metas) != 1:
        fail(f"expected one *.tvm.json next to run.py, found {len(metas)}; pass --meta")
    meta = json.loads(metas[0].read_text())
    arch = meta["target"]["runtime_arch"]
    if platform.machine() != arch:
        fail(f"{meta['library']} is built for {arch}, this machine is {platform.machine()}")

    # TVM's thread pool takes half the logical CPUs on x86, assuming 2-way hyper-threading. Where the kernel says
    # there is none (e.g. 2-vCPU VMs), that is half the cores: use them all. TVM/OMP_NUM_THREADS set by you win.
    smt = Path("/sys/devices/system/cpu/smt/active")
    if (platform.machine() in ("x86_64", "AMD64") and smt.exists() and smt.read_text().strip() == "0"
            and not (os.environ.get("TVM_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS"))):
        os.environ["TVM_NUM_THREADS"] = str(len(os.sched_getaffinity(0)))
    import tvm
    from tvm.runtime.vm import VirtualMachine

    lib = tvm.runtime.load_module(str(metas[0].parent / meta["library"]))
    vm = VirtualMachine(lib, tvm.cpu())
    arrays = load_inputs(meta["inputs"], args.input) if args.input else seeded(meta["inputs"], args.seed)
    tensors = [tvm.runtime.tensor(a) for a in arrays]

    outputs = flatten(vm["main"](*tensors))  # warm-up, and the outputs we report
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        vm["main"](*tensors)
        times.append(time.perf_counter() - start)

    for spec, out in zip(meta["outputs"], outputs):
        print(f"output {spec['name']}: shape {list(out.shape)} {out.dtype}, min {out.min():.6g} max {out.max():.6g} "
              f"argmax {int(out.argmax())}")
    if times:
        print(f"latency median {1e3 * statistics.median(times):.3f} ms over {len(times)} runs "
              f"({meta['schedules']['status']} build, {platform.machine()})")
    if args.save:
        folder = Path(args.save)
        folder.mkdir(parents=True, exist_ok=True)
        for i, a in enumerate(arrays):
            np.save(folder / f"input_{i}.npy", a)
        for i, a in enumerate(outputs):
            np.save(folder / f"output_{i}.npy", a)


if __name__ == "__main__":
    main()
