"""`edgevit bench`: the TVM build vs onnxruntime vs PyTorch eager, one process, the same seeded inputs.

- edgevit: the optimized graph compiled by the TVM backend for the target (shipped schedules applied if
  `schedules/<target>/<model>/` has them; the report says tuned/untuned), timed in the Relax VM on this
  host, or on the device through TVM RPC `time_evaluator` for a non-native target (`--rpc HOST:PORT`).
- onnxruntime: the exported (un-optimized) graph with ORT's own graph optimizations on, CPU provider.
- PyTorch: the eager module under `torch.inference_mode()` (zoo models and python factories only).

Each is warmed up once, then timed `runs` times; medians are compared, ratios are latency / onnxruntime
latency (below 1 = faster than onnxruntime). onnxruntime and PyTorch always run on this host, so for
an RPC target the ratios compare a device with this host: the report says so.
"""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

import numpy as np
import onnx

from .. import ui
from ..artifacts import md_table, write_report
from ..errors import EdgevitError
from ..ir import graph as G


def _timed(fn, runs: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


ORT_OPTIMIZED = "onnxruntime (optimized graph)"


def _interleaved(runtimes: dict, runs: int, block: int = 5, pause: float = 0.05) -> dict[str, list[float]]:
    """Per-run seconds of each callable in `runtimes`, timed in alternating blocks of `block` runs.

    Timed one after the other, 20 s apart (the TVM build sits between them), the runtimes met different machines:
    on a shared host the load moves both by ±15 % within seconds. Alternating blocks give both the same drift;
    the `pause` before each block lets the other runtime's spinning worker threads go idle first."""
    for fn in runtimes.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in runtimes}
    while any(len(t) < runs for t in times.values()):
        for name, fn in runtimes.items():
            if len(times[name]) < runs:
                time.sleep(pause)
                times[name] += _timed(fn, min(block, runs - len(times[name])), warmup=0)
    return times


def _max_abs(ref: list[np.ndarray], got: list[np.ndarray]) -> float:
    return float(max(np.max(np.abs(r.astype(np.float64) - g.astype(np.float64))) for r, g in zip(ref, got)))


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray], runs: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    outputs = session.run(None, feeds)
    run = lambda: session.run(None, feeds)  # noqa: E731
    return (list(outputs), _timed(run, runs), f"onnxruntime {ort.__version__}, its default threads (one per physical "
            "core)", run)


def _torch(source, input_size: tuple[int, int] | None, feeds: dict[str, np.ndarray], runs: int):
    import torch

    torch.manual_seed(0)  # as before the export (cmd_bench): a factory's random init gives the same weights
    module = source.torch_module(input_size).eval()
    args = [torch.from_numpy(a) for a in feeds.values()]
    with torch.inference_mode():
        out = module(*args)
        outs = [out] if isinstance(out, torch.Tensor) else [o for o in out if isinstance(o, torch.Tensor)]
        outputs = [o.detach().numpy() for o in outs]
        times = _timed(lambda: module(*args), runs)
    return outputs, times, f"PyTorch {torch.__version__} eager, {torch.get_num_threads()} threads"


def _chart(path: Path, title: str, rows: list[dict]) -> None:
    """A horizontal bar chart of median latencies (Pillow: matplotlib is not a dependency)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    width, bar_h, gap, left, top = 760, 34, 16, 150, 56
    height = top + len(rows) * (bar_h + gap) + 30
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((12, 14), title, fill="black", font=font)
    draw.text((12, 32), "median latency (ms), lower is better; ratio vs onnxruntime", fill="#555555", font=font)
    longest = max(r["median_ms"] for r in rows) or 1.0
    colors = {"edgevit (TVM)": "#2a7ab0", "onnxruntime": "#7f7f7f", ORT_OPTIMIZED: "#a9a9a9", "PyTorch": "#e07b39"}
    for k, r in enumerate(rows):
        y = top + k * (bar_h + gap)
        length = max(2, int((width - left - 190) * r["median_ms"] / longest))
        draw.text((12, y + bar_h // 2 - 6), r["runtime"], fill="black", font=font)
        draw.rectangle([left, y, left + length, y + bar_h], fill=colors.get(r["runtime"], "#4c9a2a"))
        label = f"{r['median_ms']:.3f} ms" + (f"  ({r['ratio_vs_onnxruntime']:.2f}x)" if r.get("ratio_vs_onnxruntime")
                                              is not None else "")
        draw.text((left + length + 8, y + bar_h // 2 - 6), label, fill="black", font=font)
    img.save(path)


def run_bench(source, model: onnx.ModelProto, optimized: onnx.ModelProto, target, out_dir: Path,
              input_size: tuple[int, int] | None, runs: int, remote: tuple | None = None) -> dict:
    """Benchmark into `out_dir` (a folder the caller moves into place): JSON + Markdown report, PNG chart.
    `remote`: (host, port) of a TVM RPC server, or (host, port, key) of a tracker and a device key."""
    from ..backends.tvm import compile_model, require_runnable
    from ..backends.tvm.tune import is_native

    if runs < 1:
        raise EdgevitError(f"--runs {runs}: must be at least 1")
    if target.backend != "tvm":
        raise EdgevitError(f"target {target.name} uses the {target.backend} backend; bench runs TVM targets")
    require_runnable(target, remote)
    native = is_native(target)
    name = source.name
    shapes = {vi.name: [int(d) for d in G.value_shape(vi)] for vi in G.graph_inputs(model)}
    feeds = G.seeded_inputs(model, shapes, seed=0)
    image = next((s for s in shapes.values() if len(s) == 4), None)
    size = input_size or (tuple(image[2:]) if image else None)

    results = []
    # on this host onnxruntime is timed after the build, interleaved with TVM: now only its outputs are needed
    ort_runs = 0 if native else runs
    timing = f" × {ort_runs}" if ort_runs else " (reference outputs)"
    with ui.step(f"onnxruntime{timing}"):
        ref, times, version, ort_run = _ort(model, feeds, ort_runs)
    ort_result = {"runtime": "onnxruntime", "device": f"host {platform.machine()}", "version": version, "times_ms": times}
    results.append(ort_result)
    # the stricter peer: onnxruntime on the graph edgevit's passes produced (what `edgevit optimize` gives anyone),
    # e.g. MobileOne's branches already reparameterized; the ratio against it is edgevit's backend alone
    with ui.step(f"onnxruntime on the optimized graph{timing}"):
        got, times, version, ort_opt_run = _ort(optimized, feeds, ort_runs)
    ort_opt_result = {"runtime": ORT_OPTIMIZED, "device": f"host {platform.machine()}", "version": version,
                      "times_ms": times, "max_abs_vs_onnxruntime": _max_abs(ref, got)}
    results.append(ort_opt_result)
    # PyTorch before the TVM build: TVM's thread pool (started by the build's own check run) keeps its workers
    # spinning, which slowed PyTorch's threads 5-10x on a 2-core machine when timed after it. So PyTorch is timed
    # alone, unlike onnxruntime, whose host numbers are retaken after the build, interleaved with TVM's.
    if source.is_torch:
        with ui.step(f"PyTorch × {runs}"):
            got, times, version = _torch(source, size, feeds, runs)
        results.append({"runtime": "PyTorch", "device": f"host {platform.machine()}", "version": version,
                        "times_ms": times, "max_abs_vs_onnxruntime": _max_abs(ref, got)})
    else:
        ui.console.print(f"[yellow]note:[/yellow] {source.spec} is an ONNX file: no PyTorch module to time")
    build = out_dir / "build"
    build.mkdir()
    built = compile_model(optimized, target, build, name=name)
    library = build / f"{name}.so"
    schedules = built.report["tvm"]["schedules"]["status"]

    from ..backends.tvm import adapter

    if native:
        with ui.step(f"edgevit (TVM, {schedules}) and onnxruntime × {runs}, interleaved"):
            got, tvm_run = adapter.load_local(library, list(feeds.values()))
            timed = _interleaved({"tvm": tvm_run, "ort": ort_run, "ort_opt": ort_opt_run}, runs)
        times = timed["tvm"]
        for result, key in ((ort_result, "ort"), (ort_opt_result, "ort_opt")):
            result["times_ms"] = timed[key]
            result["version"] += "; timed interleaved with edgevit's library"
        device = f"host {platform.machine()}"
        threads = f", {adapter.runtime_threads()} threads"
    else:
        host, port, key = (tuple(remote) + (None,))[:3]  # type: ignore[misc]
        via = f"tracker {host}:{port} key {key}" if key else f"RPC {host}:{port}"
        with ui.step(f"edgevit (TVM, {schedules}) × {runs} via {via}"):
            got, median = adapter.run_rpc(library, list(feeds.values()), host, port, repeat=runs, key=key)
        times = [median]
        device = f"{target.name} via {via}"
        threads = ""
    results.insert(0, {"runtime": "edgevit (TVM)", "device": device, "version": f"TVM {adapter.versions()['tvm']}, "
                       f"{schedules}{threads}", "times_ms": times, "max_abs_vs_onnxruntime": _max_abs(ref, got)})

    for r in results:
        r["times_ms"] = [round(t * 1e3, 4) for t in r["times_ms"]]
        r["median_ms"] = statistics.median(r["times_ms"])
        r["min_ms"] = min(r["times_ms"])
    ort_median = next(r for r in results if r["runtime"] == "onnxruntime")["median_ms"]
    opt_median = next(r for r in results if r["runtime"] == ORT_OPTIMIZED)["median_ms"]
    for r in results:
        r["ratio_vs_onnxruntime"] = round(r["median_ms"] / ort_median, 3) if ort_median else None
        r["ratio_vs_onnxruntime_optimized_graph"] = round(r["median_ms"] / opt_median, 3) if opt_median else None

    from .opprofile import ort_op_profile, tvm_op_profile

    tvm_ops = None
    if native:
        with ui.step(f"per-op profile of the TVM build × {min(runs, 5)}"):
            tvm_ops = tvm_op_profile(library, feeds, min(runs, 5))
    with ui.step(f"per-op profile (onnxruntime profiler on the optimized graph) × {min(runs, 10)}"):
        ops = ort_op_profile(optimized, feeds, min(runs, 10))

    shape_text = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in shapes.items())
    payload = {"model": source.spec, "target": target.name, "inputs": shapes, "runs": runs,
               "schedules": built.report["tvm"]["schedules"], "remote": ":".join(map(str, remote[:2])) + (f" (tracker, key {remote[2]})" if len(remote) > 2
                                                                       and remote[2] else "") if remote else None,
               "results": results, "op_breakdown": tvm_ops or ops, "op_breakdown_tvm": tvm_ops,
               "op_breakdown_onnxruntime": ops}
    rows = [[r["runtime"], r["device"], f"{r['median_ms']:.3f}", f"{r['min_ms']:.3f}",
             f"{r['ratio_vs_onnxruntime']:.2f}×", f"{r['ratio_vs_onnxruntime_optimized_graph']:.2f}×",
             f"{r['max_abs_vs_onnxruntime']:.2g}" if "max_abs_vs_onnxruntime" in r else "reference"] for r in results]
    notes = [(f"{runs} timed runs after 1 warm-up; seeded standard-normal input ({shape_text}); ratio = median / "
              "onnxruntime median (below 1 is faster). onnxruntime runs the exported graph, and, as the stricter "
              "peer, the graph edgevit's passes produced (what TVM compiles).")]
    notes.append("Runtimes: " + "; ".join(f"{r['runtime']}: {r['version']}" for r in results) + ".")
    if not native:
        notes.append("The TVM number was measured on the device; onnxruntime and PyTorch ran on this host.")
    else:
        notes.append("edgevit and both onnxruntime sessions were timed in alternating blocks of 5 runs; PyTorch "
                     "alone, before the build (its ratio carries the host's drift between the two).")
    ref_range = float(max(np.ptp(r) for r in ref)) or 1.0
    if any(r.get("max_abs_vs_onnxruntime", 0.0) > 1e-3 * ref_range for r in results):
        notes.append("A runtime's outputs differ from onnxruntime by more than 1e-3 × the output range (for "
                     "PyTorch: a factory whose weights are not reproducible from torch.manual_seed(0)?).")
    if schedules == "untuned":
        notes.append(f"The TVM build is untuned: run `edgevit tune --target {target.name} {source.spec}` first.")
    tvm_section = []
    if tvm_ops:
        tvm_section = [f"edgevit's TVM build ({tvm_ops['source']}; mean of {tvm_ops['runs']} runs after a warm-up, "
                       f"{tvm_ops['total_ms']:.3f} ms in kernels), grouped by each fused kernel's leading op:", "",
                       md_table(["op", "calls", "ms", "share"], [[r["op"], r["nodes"], f"{r['ms']:.3f}",
                                                                  f"{r['share']:.1%}"] for r in tvm_ops["by_op"]]), "",
                       "Heaviest TVM kernels:", "",
                       md_table(["kernel (fused ops)", "ms", "share"],
                                [[t["node"], f"{t['ms']:.3f}", f"{t['share']:.1%}"] for t in tvm_ops["top_nodes"]]), ""]
    md = "\n".join([f"# edgevit bench: {name} on {target.name}", "",
                    md_table(["runtime", "device", "median ms", "min ms", "vs onnxruntime",
                              "vs onnxruntime (optimized graph)", "max abs diff"], rows),
                    "", *notes, "", f"![median latency]({name}.bench.png)", "",
                    "## Per-op breakdown", "", *tvm_section,
                    f"onnxruntime on edgevit's optimized graph ({ops['source']}; mean of {ops['runs']} runs after a "
                    f"warm-up, {ops['total_ms']:.3f} ms of kernel time):", "",
                    md_table(["op", "ORT kernels", "ms", "share"],
                             [[r["op"], r["nodes"], f"{r['ms']:.3f}", f"{r['share']:.1%}"] for r in ops["by_op"]]),
                    "", f"![per-op breakdown]({name}.ops.png)"])
    write_report(out_dir / f"{name}.onnx", "bench", payload, md)
    _chart(out_dir / f"{name}.bench.png", f"{name} on {target.name} ({shape_text}), TVM {schedules}", results)
    from .charts import bars

    shown = tvm_ops or ops
    bars(out_dir / f"{name}.ops.png", f"{name}: per-op breakdown on this host ({shape_text})",
         ("edgevit TVM build, Relax VM instrumentation; ms per inference by leading op of each fused kernel"
          if tvm_ops else "onnxruntime profiler on edgevit's optimized graph (ORT optimizations off); ms per inference"),
         [(r["op"], r["ms"], f"{r['ms']:.3f} ms ({r['share']:.0%}, {r['nodes']} calls)") for r in shown["by_op"]])
    return payload
