"""The `edgevit` command line. Each subcommand is a thin shell over a pipeline module."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__, ui
from .errors import EdgevitError


def _human(n: float, unit: str = "") -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def _bytes(n: int) -> str:
    for div, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= div:
            return f"{n / div:.2f} {suffix}"
    return f"{n} B"


# ----------------------------------------------------------------------------------------------- models
def cmd_models(args) -> int:
    from rich.table import Table

    from . import zoo

    entries = list(zoo.entries().values())
    if args.family:
        known = zoo.families()
        if args.family not in known:
            raise EdgevitError(f"unknown family '{args.family}'; families: {', '.join(known)}")
        entries = [e for e in entries if e.family == args.family]
    rows = [zoo.stats(e.name) for e in ui.track(entries, "computing params/MACs")]
    for row, e in zip(rows, entries):
        row["paper"] = e.paper
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title=f"edgevit zoo: {len(rows)} models, {len({r['family'] for r in rows})} families")
    for col, justify in (("model", "left"), ("family", "left"), ("input", "right"),
                         ("params", "right"), ("MACs", "right"), ("int8 weights", "right")):
        table.add_column(col, justify=justify, no_wrap=(col == "model"))
    for r in rows:
        table.add_row(r["name"], r["family"], "x".join(map(str, r["input_size"])),
                      _human(r["params"]), _human(r["macs"]), _bytes(r["int8_weight_bytes"]))
    ui.console.print(table)
    return 0


# ----------------------------------------------------------------------------------------------- export
def cmd_export(args) -> int:
    from .artifacts import atomic_path, md_table, write_report
    from .frontend.export import export
    from .frontend.source import resolve

    output = Path(args.output)
    if output.suffix != ".onnx":
        raise EdgevitError(f"-o {output}: the output must end in .onnx")
    source = resolve(args.model)
    result = export(source, tuple(args.input_size) if args.input_size else None, args.batch, args.opset,
                    args.tolerance, args.samples, args.exporter)
    import onnx

    with atomic_path(output) as tmp:
        onnx.save(result.model, str(tmp))
    summary = result.summary()
    md = "\n".join([
        f"# edgevit export: {source.spec}",
        "",
        md_table(["output", "opset", "exporter", "nodes", "max abs err", "rel err"],
                 [[output.name, result.opset, result.exporter, summary["nodes"],
                   f"{result.parity.max_abs:.3g}", f"{result.parity.rel:.3g}"]]),
    ])
    json_path, _ = write_report(output, "export", {"output": str(output), **summary}, md)
    ui.console.print(f"[bold]wrote[/bold] {output} ({len(result.model.graph.node)} nodes); report {json_path}")
    return 0


# ---------------------------------------------------------------------------------------------- analyze
def _load_for_analysis(args):
    """An ONNX model for MODEL: loaded as is, or exported first (zoo name / python factory)."""

    from .frontend.export import export, simplify
    from .frontend.source import resolve
    from .ir import graph as G
    from .ir import limits

    source = resolve(args.model)
    size = tuple(args.input_size) if args.input_size else None
    if source.kind == "onnx":
        model = G.load_onnx(source.path)
        shapes = G.static_input_shapes(model, args.batch, size)
        limits.check(model, shapes)  # MACs/params/activation bounds before onnxsim or onnxruntime allocate
        if not G.is_static(model) or size or args.batch:
            model = simplify(model, shapes)
        return source, model
    result = export(source, size, args.batch or 1, samples=1)
    limits.check(result.model)
    return source, result.model


def cmd_analyze(args) -> int:
    from rich.table import Table

    from .artifacts import md_table, write_report
    from .ir.analysis import analyze

    source, model = _load_for_analysis(args)
    with ui.step("analyze graph"):
        a = analyze(model)

    summary = Table(title=f"{source.spec}: {len(a.nodes)} nodes, {_human(a.params)} params "
                          f"({_bytes(a.param_bytes)}), {_human(a.macs)} MACs")
    for col in ("op", "count", "MACs", "% MACs"):
        summary.add_column(col, justify="left" if col == "op" else "right")
    for op, count in a.op_histogram.items():
        macs = a.macs_by_op.get(op, 0)
        summary.add_row(op, str(count), _human(macs) if macs else "-",
                        f"{100 * macs / a.macs:.1f}" if a.macs and macs else "-")
    ui.console.print(summary)
    largest = Table(title=f"largest activations (of {len(a.tensors)} tensors, "
                          f"{_bytes(sum(t['bytes'] for t in a.tensors.values()))} in all)")
    for col in ("tensor", "shape", "dtype", "size"):
        largest.add_column(col, justify="right" if col == "size" else "left")
    for name, t in a.largest_tensors(args.top):
        largest.add_row(name, "x".join(map(str, t["shape"])), t["dtype"], _bytes(t["bytes"]))
    ui.console.print(largest)

    output = Path(args.output) if args.output else Path(f"{source.name}.onnx")
    md = "\n".join([
        f"# edgevit analyze: {source.spec}", "",
        f"{len(a.nodes)} nodes, {a.params} params ({a.param_bytes} bytes), {a.macs} MACs", "",
        md_table(["op", "count", "MACs"], [[op, c, a.macs_by_op.get(op, 0)] for op, c in a.op_histogram.items()]),
        "", "Largest activations:", "",
        md_table(["tensor", "shape", "bytes"],
                 [[n, "x".join(map(str, t["shape"])), t["bytes"]] for n, t in a.largest_tensors(args.top)]),
    ])
    json_path, _ = write_report(output, "analysis", {"model": source.spec, **a.as_dict(args.top)}, md)
    ui.console.print(f"report {json_path}")
    if args.json:
        print(json.dumps({"model": source.spec, **a.as_dict(args.top)}, indent=2, default=str))
    return 0


# --------------------------------------------------------------------------------------------- optimize
def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def cmd_optimize(args) -> int:
    import onnx
    from rich.table import Table

    from .artifacts import atomic_path, md_table, write_report
    from .passes import pipeline

    if args.list:
        for p in pipeline.select():
            ui.console.print(f"{p.name:26s} {p.summary}")
        return 0
    if not args.model or not args.output:
        raise EdgevitError("optimize needs MODEL and -o OUTPUT.onnx (or --list)")
    output = Path(args.output)
    if output.suffix != ".onnx":
        raise EdgevitError(f"-o {output}: the output must end in .onnx")
    chosen = pipeline.select(_csv(args.passes), _csv(args.skip))
    source, model = _load_for_analysis(args)
    optimized, report = pipeline.run(model, chosen, tolerance=args.tolerance, samples=args.samples)
    with atomic_path(output) as tmp:
        onnx.save(optimized, str(tmp))

    rows = [[r.name, r.matches, f"{r.before.nodes}→{r.after.nodes}", _human(r.after.params),
             _human(r.after.macs), f"{r.max_abs:.2g}", r.status] for r in report.passes]
    headers = ["pass", "matches", "nodes", "params", "MACs", "max abs err", "status"]
    if args.report:
        table = Table(title=f"pass report: {source.spec}")
        for h in headers:
            table.add_column(h, justify="left" if h in ("pass", "status") else "right")
        for row in rows:
            table.add_row(*map(str, row))
        ui.console.print(table)
    i, o = report.input, report.output
    ui.console.print(f"[bold]wrote[/bold] {output}: nodes {i.nodes}→{o.nodes}, params {_human(i.params)}→"
                     f"{_human(o.params)}, MACs {_human(i.macs)}→{_human(o.macs)}, max abs error "
                     f"{report.parity.max_abs:.3g} (output range {report.parity.ref_range:.3g})")
    md = "\n".join([f"# edgevit optimize: {source.spec}", "",
                     f"nodes {i.nodes} → {o.nodes}; params {i.params} → {o.params}; MACs {i.macs} → {o.macs}; "
                     f"max abs error vs input graph {report.parity.max_abs:.3g}", "", md_table(headers, rows)])
    write_report(output, "optimize", {"model": source.spec, "output": str(output), **report.as_dict()}, md)
    return 0


# --------------------------------------------------------------------------------------------- quantize
def cmd_quantize(args) -> int:
    from .artifacts import check_output_dir
    from .quant import run_quantize

    output = Path(args.output)
    check_output_dir(output)
    if args.calib and not Path(args.calib).exists():  # fail before any export work
        raise EdgevitError(f"--calib {args.calib}: no such file or folder (give a folder of images or a .npy)")
    payload = run_quantize(args.model, output, args.calib, args.method,
                           tuple(args.input_size) if args.input_size else None)
    ui.console.print(f"[bold]wrote[/bold] {output}/ ({len(payload.get('layers', []))} quantized layers)")
    return 0


# -------------------------------------------------------------------------------------- targets/compile
def cmd_targets(args) -> int:
    from rich.table import Table

    from . import targets

    known = targets.all_targets()
    if args.json:
        print(json.dumps([{"name": t.name, "backend": t.backend, "kind": t.kind, "description": t.description,
                           **t.options} for t in known.values()], indent=2))
        return 0
    table = Table(title=f"edgevit targets ({targets.targets_dir()})")
    for col in ("target", "backend", "kind", "description"):
        table.add_column(col, no_wrap=col == "target")
    for t in known.values():
        table.add_row(t.name, t.backend, t.kind, t.description)
    ui.console.print(table)
    return 0


def cmd_compile(args) -> int:
    import importlib

    from . import targets
    from .artifacts import atomic_dir, check_output_dir, write_report
    from .passes import pipeline

    target = targets.load(args.target)  # unknown target: fail before any model work
    if args.output:
        check_output_dir(Path(args.output))
    backend = importlib.import_module(f"edgevit.backends.{target.backend}")
    for backend_name, options in (("mcu", ("sram", "flash", "calib")),
                                  ("coreml", ("precision", "image_input", "labels", "weights"))):
        given = [f"--{k.replace('_', '-')}" for k in options if getattr(args, k, None)]
        if given and target.backend != backend_name:
            kind = "microcontroller" if backend_name == "mcu" else "iPhone (Core ML)"
            raise EdgevitError(f"{', '.join(given)} only apply to {kind} targets, not {target.name}")
    if hasattr(backend, "check_args"):  # option errors before any model work
        backend.check_args(target, args)
    source, model = _load_for_analysis(args)
    out_dir = Path(args.output or f"out/{source.name}-{target.name}")
    check_output_dir(out_dir)
    optimized, pass_report = pipeline.run(model, pipeline.select(_csv(args.passes), _csv(args.skip)))
    with atomic_dir(out_dir) as tmp:
        result = backend.compile_model(optimized, target, tmp, name=source.name, args=args)
        payload = {"model": source.spec, "target": target.name, "backend": target.backend,
                   "passes": pass_report.as_dict(), **result.report}
        write_report(tmp / f"{source.name}.onnx", "compile", payload, result.markdown)
    ui.console.print(f"[bold]wrote[/bold] {out_dir}/ ({result.summary})")
    return 0


# ------------------------------------------------------------------------------------------ tune/bench
def _remote(args) -> dict | None:
    """--rpc / --tracker --key as {"host", "port", "key"}, checked reachable before any model work."""
    from .backends.tvm.tune import parse_endpoint, require_reachable

    rpc, tracker, key = getattr(args, "rpc", None), getattr(args, "tracker", None), getattr(args, "key", None)
    if rpc and tracker:
        raise EdgevitError("give either --rpc HOST:PORT or --tracker HOST:PORT --key K, not both")
    if tracker and not key:
        raise EdgevitError("--tracker needs --key (the device key the RPC servers registered with)")
    if key and not tracker:
        raise EdgevitError("--key goes with --tracker HOST:PORT")
    if not (rpc or tracker):
        return None
    host, port = parse_endpoint(rpc or tracker, "--rpc" if rpc else "--tracker")
    require_reachable(host, port, "TVM RPC server" if rpc else "TVM RPC tracker")
    return {"host": host, "port": port, "key": key}


def cmd_tune(args) -> int:
    from . import targets
    from .backends.tvm import require_runnable
    from .backends.tvm.tune import run_tune
    from .passes import pipeline

    if args.top is not None and args.top < 1:
        raise EdgevitError(f"--top {args.top}: must be >= 1")
    target = targets.load(args.target)
    remote = _remote(args)
    if target.backend == "tvm":
        require_runnable(target, remote)  # before any model work
    source, model = _load_for_analysis(args)
    optimized, _ = pipeline.run(model, pipeline.select(_csv(args.passes), _csv(args.skip)))
    run_tune(optimized, target, source.name, args.trials, tuple(args.input_size) if args.input_size else None, remote,
             args.top)
    return 0


def cmd_bench(args) -> int:
    from . import targets
    from .artifacts import atomic_dir, check_output_dir
    from .bench.host import run_bench
    from .passes import pipeline

    target = targets.load(args.target)
    if args.zoo:
        return _bench_zoo(args, target)
    if args.models or args.family or args.accuracy:
        raise EdgevitError("--models/--family/--accuracy go with --zoo")
    if not args.model:
        raise EdgevitError("bench needs MODEL (or --zoo for the whole zoo)")
    if target.backend == "mcu":
        return _bench_mcu(args, target)
    if target.backend == "coreml":
        return _bench_iphone(args, target)
    remote = _remote(args)
    from .backends.tvm import require_runnable
    from .frontend.source import resolve

    if target.backend == "tvm":
        require_runnable(target, remote)  # before any model work

    if resolve(args.model).is_torch:  # a python factory builds the same weights for export and timing
        import torch

        torch.manual_seed(0)
    source, model = _load_for_analysis(args)
    out_dir = Path(args.output or f"out/bench/{source.name}-{target.name}")
    check_output_dir(out_dir)
    optimized, _ = pipeline.run(model, pipeline.select(_csv(args.passes), _csv(args.skip)))
    with atomic_dir(out_dir) as tmp:
        payload = run_bench(source, model, optimized, target, tmp, tuple(args.input_size) if args.input_size else None,
                            args.runs, (remote["host"], remote["port"], remote["key"]) if remote else None)
    parts = [f"{r['runtime']} {r['median_ms']:.3f} ms ({r['ratio_vs_onnxruntime']:.2f}× ORT)" for r in payload["results"]]
    ui.console.print(f"[bold]wrote[/bold] {out_dir}/ ({'; '.join(parts)})")
    return 0


def _bench_optimized(args, target, why_no_rpc: str, run) -> dict:
    """Shared by the MCU and iPhone benches: no RPC, load + optimize MODEL, `run(source, optimized, tmp)` into
    an atomic out/bench/<model>-<target>/ folder."""
    from .artifacts import atomic_dir, check_output_dir
    from .passes import pipeline

    if args.rpc or args.tracker:
        raise EdgevitError(f"--rpc/--tracker are for TVM boards; {target.name} {why_no_rpc}")
    source, model = _load_for_analysis(args)
    out_dir = Path(args.output or f"out/bench/{source.name}-{target.name}")
    check_output_dir(out_dir)
    optimized, _ = pipeline.run(model, pipeline.select(_csv(args.passes), _csv(args.skip)))
    with atomic_dir(out_dir) as tmp:
        result = run(source, optimized, tmp)
    result["_out_dir"] = out_dir
    return result


def _bench_mcu(args, target) -> int:
    from .bench.mcu import run_mcu_bench

    r = _bench_optimized(args, target, "is benchmarked on QEMU (instruction counts)",
                         lambda source, optimized, tmp: run_mcu_bench(optimized, target, tmp, source.name, args))
    ui.console.print(f"[bold]wrote[/bold] {r['_out_dir']}/ ({r['instructions'] / 1e6:.2f} M instructions, "
                     f"{r['macs_per_instruction']:.2f} MAC/instr, estimated {r['estimated_ms']} ms at "
                     f"{r['clock_hz'] / 1e6:.0f} MHz, peak SRAM {r['peak_sram'] / 1024:.1f} KB)")
    return 0


def _bench_iphone(args, target) -> int:
    from .bench.ios import run_iphone_bench

    r = _bench_optimized(args, target, "latency is predicted here (measured on macOS)",
                         lambda source, optimized, tmp: run_iphone_bench(source, optimized, target, tmp, args))
    lo, hi = r["band_ms"]
    measured = f"; measured on this Mac {r['measured_ms']:.3f} ms" if r.get("measured_ms") is not None else ""
    ui.console.print(f"[bold]wrote[/bold] {r['_out_dir']}/ (PREDICTED {r['predicted_ms']:.3f} ms on {target.name} "
                     f"[{r['chip']}], band {lo:.3f}–{hi:.3f} ms; predictor leave-one-out error "
                     f"{r['predictor']['loo_mape_pct']:.1f} %{measured})")
    return 0


def _bench_zoo(args, target) -> int:
    from .bench.zoo_run import run_zoo, select_models

    if args.model:
        raise EdgevitError("give either MODEL or --zoo, not both (filter the zoo with --models a,b or --family F)")
    if args.batch not in (None, 1):
        raise EdgevitError("--zoo benchmarks batch 1")
    args._remote = None
    if target.backend == "tvm":
        from .backends.tvm import require_runnable

        args._remote = _remote(args)
        require_runnable(target, args._remote)
    elif args.rpc or args.tracker:
        raise EdgevitError(f"--rpc/--tracker are for TVM boards, not {target.name}")
    names = select_models(args.models, args.family, target)
    size = f"-{args.input_size[0]}x{args.input_size[1]}" if args.input_size else ""
    out_dir = Path(args.output or f"out/bench/zoo-{target.name}{size}")
    payload = run_zoo(target, names, out_dir, args)
    failed = f", {len(payload['failed'])} failed" if payload["failed"] else ""
    ui.console.print(f"[bold]wrote[/bold] {out_dir}/zoo.bench.json, zoo.bench.md, zoo.png ({payload['ok']} of "
                     f"{payload['models']} models, {payload['resumed']} from an earlier run{failed})")
    return 0


# ---------------------------------------------------------------------------------------------- parsing
def _add_shape_args(p: argparse.ArgumentParser, batch_default: int | None = 1) -> None:
    p.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"),
                   help="input resolution (default: the model's own)")
    p.add_argument("--batch", type=int, default=batch_default, help="batch size (default: 1)")


def _add_model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="zoo name, path to a .onnx file, or path/to/file.py:factory")


def _add_pass_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--passes", help="comma-separated passes to run (default: all, in pipeline order)")
    p.add_argument("--skip", help="comma-separated passes to leave out")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgevit", description="Deployment compiler for efficient vision transformers.")
    parser.add_argument("--version", action="version", version=f"edgevit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("models", help="list the model zoo with params and MACs")
    p.add_argument("--family", help="only this family (e.g. efficientformer, shvit)")
    p.add_argument("--json", action="store_true", help="print JSON to stdout instead of a table")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("export", help="export MODEL to a verified static ONNX graph")
    _add_model_arg(p)
    p.add_argument("-o", "--output", required=True, help="output .onnx path")
    _add_shape_args(p)
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    p.add_argument("--exporter", default="torchscript", choices=["torchscript", "dynamo"],
                   help="torch.onnx exporter (default: torchscript; dynamo emits Gelu/LayerNormalization)")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="max abs error allowed vs PyTorch, as a fraction of the output range (default: 1e-4)")
    p.add_argument("--samples", type=int, default=2, help="seeded inputs for the parity check (default: 2)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("analyze", help="op histogram, params, MACs, activation sizes")
    _add_model_arg(p)
    _add_shape_args(p, batch_default=None)
    p.add_argument("-o", "--output", help="where the report goes (default: ./<model>.analysis.json)")
    p.add_argument("--top", type=int, default=10, help="how many of the largest tensors to list")
    p.add_argument("--json", action="store_true", help="also print the JSON report to stdout")
    p.set_defaults(func=cmd_analyze)
    p = sub.add_parser("quantize", help="int8 post-training quantization (QDQ ONNX + integer parameters)")
    _add_model_arg(p)
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--calib", help="calibration data: a folder of images or a .npy (default: synthetic set)")
    p.add_argument("--method", default="minmax", choices=["minmax", "percentile", "mse"],
                   help="activation range calibration (default: minmax)")
    p.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"), help="input resolution")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("targets", help="list deployment targets (targets/*.toml)")
    p.add_argument("--json", action="store_true", help="print JSON to stdout")
    p.set_defaults(func=cmd_targets)

    p = sub.add_parser("compile", help="compile MODEL for a target (export → passes → backend)")
    _add_model_arg(p)
    p.add_argument("--target", required=True, help="target name (see `edgevit targets`)")
    p.add_argument("-o", "--output", help="output folder (default: out/<model>-<target>)")
    _add_shape_args(p, batch_default=None)
    _add_pass_args(p)
    mcu = p.add_argument_group("microcontroller targets (int8 C runtime)")
    mcu.add_argument("--sram", metavar="BYTES", help="SRAM budget, e.g. 320K or 327680 (default: the target's)")
    mcu.add_argument("--flash", metavar="BYTES", help="flash budget, e.g. 1M (default: the target's)")
    mcu.add_argument("--calib", help="calibration data: a folder of images or a .npy (default: synthetic set)")
    mcu.add_argument("--method", default="minmax", choices=["minmax", "percentile", "mse"],
                     help="activation range calibration (default: minmax)")
    ios = p.add_argument_group("iPhone targets (Core ML)")
    ios.add_argument("--precision", choices=["fp16", "fp32"], help="compute precision (default: fp16)")
    ios.add_argument("--image-input", action="store_true",
                     help="take an RGB image input, with the model's normalization folded in")
    ios.add_argument("--labels", metavar="FILE", help="class labels, one per line (a classifier output)")
    ios.add_argument("--weights", choices=["int8", "palettize4", "palettize6"],
                     help="compress weights with coremltools.optimize.coreml")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("tune", help="MetaSchedule-tune MODEL for a TVM target into schedules/<target>/<model>/")
    _add_model_arg(p)
    p.add_argument("--target", required=True, help="TVM target name (see `edgevit targets`)")
    p.add_argument("--trials", type=int, default=16,
                   help="measured candidates per task (default: 16); a rerun spends only what is missing")
    p.add_argument("--top", type=int, metavar="K",
                   help="spend --trials only on the K tasks that weigh most in the model's latency so far")
    _add_shape_args(p, batch_default=None)
    p.add_argument("--rpc", metavar="HOST:PORT", help="measure on a device running a TVM RPC server")
    p.add_argument("--tracker", metavar="HOST:PORT", help="measure on devices registered with a TVM RPC tracker")
    p.add_argument("--key", help="device key at the --tracker")
    _add_pass_args(p)  # tune with the passes you compile with, or the workloads will not match
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("bench", help="latency: TVM vs onnxruntime vs PyTorch (host/boards), QEMU instruction counts "
                                     "(MCUs), predicted (iPhone on Linux)")
    p.add_argument("model", nargs="?", help="zoo name, path to a .onnx file, or path/to/file.py:factory")
    p.add_argument("--target", required=True, help="target name (see `edgevit targets`)")
    p.add_argument("-o", "--output", help="report folder (default: out/bench/<model>-<target>)")
    _add_shape_args(p, batch_default=None)
    p.add_argument("--runs", type=int, default=20, help="timed runs per runtime after one warm-up (default: 20)")
    p.add_argument("--rpc", metavar="HOST:PORT", help="time the TVM library on a device's TVM RPC server")
    p.add_argument("--tracker", metavar="HOST:PORT", help="time it on a device from a TVM RPC tracker (with --key)")
    p.add_argument("--key", help="device key at the --tracker")
    _add_pass_args(p)
    zoo_group = p.add_argument_group("the whole zoo (resumable: one result file per model in the output folder)")
    zoo_group.add_argument("--zoo", action="store_true", help="benchmark every zoo model (default output: "
                           "out/bench/zoo-<target>/); a rerun skips models already done")
    zoo_group.add_argument("--models", help="with --zoo: only these comma-separated zoo models")
    zoo_group.add_argument("--family", help="with --zoo: only this family")
    zoo_group.add_argument("--accuracy", metavar="CSV", help="with --zoo: published top-1 as model,top1 rows "
                           "(for the accuracy-vs-latency plot; the calibration CSV's are built in)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("optimize", help="run the pass pipeline (fold BN, reparameterize, fuse attention, ...)")
    p.add_argument("model", nargs="?", help="zoo name, path to a .onnx file, or path/to/file.py:factory")
    p.add_argument("-o", "--output", help="output .onnx path")
    _add_shape_args(p, batch_default=None)
    _add_pass_args(p)
    p.add_argument("--list", action="store_true", help="list the passes and exit")
    p.add_argument("--report", action="store_true", help="print the per-pass report table")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="max abs error vs the input graph, as a fraction of its output range (default: 1e-4)")
    p.add_argument("--samples", type=int, default=2, help="seeded inputs for the numeric checks (default: 2)")
    p.set_defaults(func=cmd_optimize)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return 2
    import signal

    def _terminate(signum, frame):  # SIGTERM cleans up like Ctrl-C: temporary outputs are removed
        raise KeyboardInterrupt

    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        try:
            signal.signal(signal.SIGTERM, _terminate)
        except ValueError:  # main() called from a non-main thread: leave signals alone
            pass
    try:
        return args.func(args)
    except EdgevitError as exc:
        if args.debug:
            raise
        ui.console.print(f"[red]edgevit: error:[/red] {exc}", soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        ui.console.print("edgevit: interrupted")
        return 130
    except Exception as exc:  # a bug in edgevit: still one line unless --debug
        if args.debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        ui.console.print(f"[red]edgevit: internal error:[/red] {type(exc).__name__}: {first} "
                         "(rerun with --debug for the traceback and please report it)", soft_wrap=True)
        return 3


if __name__ == "__main__":
    sys.exit(main())
