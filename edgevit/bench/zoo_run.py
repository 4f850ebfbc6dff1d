"""`edgevit bench --zoo --target T`: every zoo model (or a filtered subset), resumable, one table and one plot.

Each model's result is written to `<out>/models/<model>.json` as soon as it is done (atomically), so an
interrupted run continues where it stopped: models with a result file for the same input size are skipped.
A model that fails is recorded with its one-line error (delete its file to retry). At the end the rows are
collected into `<out>/zoo.bench.json`, `zoo.bench.md` and `zoo.png` (latency vs MACs, and accuracy vs
latency for models with a published top-1: the calibration CSV's, or `--accuracy model,top1` rows).

What each target kind reports per model:
  - host/board (TVM): the full `edgevit bench` (TVM vs onnxruntime vs PyTorch) in `<out>/<model>/` — slow;
  - microcontroller: QEMU instruction counts and the *estimated* ms at the target's clock (`<out>/<model>/`);
  - iPhone: the *predicted* ms with its band (graph analysis only; exported graphs are cached).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from .. import ui, zoo
from ..artifacts import atomic_dir, md_table, write_report, write_text_atomic
from ..errors import EdgevitError


def select_models(models: str | None, family: str | None, target) -> list[str]:
    names = list(zoo.entries())
    if models:
        wanted = [m.strip() for m in models.split(",") if m.strip()]
        for m in wanted:
            zoo.lookup(m)  # one-line error with the closest names
        names = wanted
    if family:
        if family not in zoo.families():
            raise EdgevitError(f"unknown family '{family}'; families: {', '.join(zoo.families())}")
        names = [n for n in names if zoo.lookup(n).family == family]
    if not models and not family and target.backend == "mcu":
        names = [n for n in names if zoo.lookup(n).family == "mcu"]  # the others do not fit a microcontroller
    if not names:
        raise EdgevitError("no zoo model matches --models/--family")
    return names


def published_top1(extra: str | None) -> dict[str, float]:
    """Published ImageNet top-1 by model: the calibration CSV's rows, plus a user's `model,top1` CSV."""
    from . import iphone

    acc = {}
    try:
        for r in iphone.calibration()["rows"]:
            if r.get("top1") and r["input_res"] == 224:
                acc[r["timm_name"]] = r["top1"]
    except EdgevitError:
        pass
    if extra:
        path = Path(extra)
        if not path.is_file():
            raise EdgevitError(f"--accuracy {extra}: no such file")
        for rec in csv.reader(ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")):
            try:
                acc[rec[0].strip()] = float(rec[1])
            except (IndexError, ValueError):
                continue  # header or malformed row
    return acc


def _one(name: str, target, size, out_dir: Path, args) -> dict:
    entry = zoo.lookup(name)
    hw = tuple(size) if size else entry.input_size
    row = {"model": name, "family": entry.family, "input_size": list(hw)}
    if target.backend == "coreml":
        from . import iphone
        from .ios import predict_model

        result = predict_model(iphone.cached_kernels(name, hw), target.name)
        row.update({k: result[k] for k in ("predicted_ms", "band_ms", "chip", "macs", "kernels", "off_ane_kernels",
                                           "variants_predicted_ms")})
        row["top_ops"] = [{"op": r["op"], "share": r["share"]} for r in result["by_op"][:4]]
        row["status"] = "predicted"
        row["predictor"] = _predictor_id()
        return row
    from ..frontend.export import export
    from ..frontend.source import resolve
    from ..passes import pipeline

    row.update({k: v for k, v in zoo.stats(name, hw).items() if k in ("params", "macs")})
    source = resolve(name)
    model = export(source, hw, 1, samples=1).model
    optimized, _ = pipeline.run(model, pipeline.select(_csv(args.passes), _csv(args.skip)))
    with atomic_dir(out_dir / name) as tmp:
        if target.backend == "mcu":
            from .mcu import run_mcu_bench

            r = run_mcu_bench(optimized, target, tmp, name, args)
            row.update({"instructions": r["instructions"], "estimated_ms": r["estimated_ms"],
                        "clock_hz": r["clock_hz"], "peak_sram": r["peak_sram"], "status": "estimated (QEMU)"})
        else:
            from .host import ORT_OPTIMIZED, run_bench

            remote = getattr(args, "_remote", None)
            r = run_bench(source, model, optimized, target, tmp, hw, args.runs,
                          (remote["host"], remote["port"], remote["key"]) if remote else None)
            by = {x["runtime"]: x for x in r["results"]}
            row.update({"edgevit_ms": by["edgevit (TVM)"]["median_ms"], "onnxruntime_ms": by["onnxruntime"]["median_ms"],
                        "pytorch_ms": by.get("PyTorch", {}).get("median_ms"),
                        "edgevit_vs_ort": by["edgevit (TVM)"]["ratio_vs_onnxruntime"],
                        "onnxruntime_optimized_graph_ms": by[ORT_OPTIMIZED]["median_ms"],
                        "edgevit_vs_ort_optimized_graph": by["edgevit (TVM)"]["ratio_vs_onnxruntime_optimized_graph"],
                        "schedules": r["schedules"]["status"], "status": "measured",
                        "top_ops": [{"op": x["op"], "share": x["share"]} for x in r["op_breakdown"]["by_op"][:3]]})
    return row


def _predictor_id() -> str:
    """Identifies the calibration a prediction came from: a resumed run recomputes rows from another one."""
    import hashlib

    from . import iphone

    return hashlib.sha256(json.dumps(iphone.calibration()["params"], sort_keys=True).encode()).hexdigest()[:12]


def _csv(value):
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def latency_key(target) -> tuple[str, str]:
    if target.backend == "coreml":
        return "predicted_ms", "predicted ms"
    if target.backend == "mcu":
        return "estimated_ms", "estimated ms"
    return "edgevit_ms", "edgevit (TVM) ms"


def run_zoo(target, names: list[str], out_dir: Path, args) -> dict:
    size = tuple(args.input_size) if args.input_size else None
    models_dir = out_dir / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    rows, resumed, failed = [], 0, 0
    for name in ui.track(names, f"zoo on {target.name}"):
        path = models_dir / f"{name}.json"
        want = list(size) if size else list(zoo.lookup(name).input_size)
        if path.is_file():
            try:
                row = json.loads(path.read_text())
                if row.get("input_size") == want and (target.backend != "coreml" or "error" in row
                                                      or row.get("predictor") == _predictor_id()):
                    rows.append(row)
                    resumed += 1
                    continue
            except ValueError:
                pass  # a corrupt file (cannot happen with atomic writes, but be safe): recompute
        try:
            row = _one(name, target, size, out_dir, args)
        except EdgevitError as exc:
            row = {"model": name, "family": zoo.lookup(name).family, "input_size": want, "error": str(exc)}
            failed += 1
            ui.console.print(f"[yellow]warning:[/yellow] {name}: {exc}")
        write_text_atomic(path, json.dumps(row, indent=1, default=str) + "\n")
        rows.append(row)
    return summarize(target, rows, out_dir, args, resumed)


def summarize(target, rows: list[dict], out_dir: Path, args, resumed: int = 0) -> dict:
    acc = published_top1(getattr(args, "accuracy", None))
    for r in rows:
        r["top1"] = acc.get(r["model"]) if r.get("input_size") == [224, 224] else None
    key, label = latency_key(target)
    ok = sorted([r for r in rows if r.get(key)], key=lambda r: r[key])
    bad = [r for r in rows if not r.get(key)]
    top = lambda r: ", ".join([f"{o['op']} {o['share']:.0%}" for o in r.get("top_ops", [])  # noqa: E731
                               if not o["op"].startswith("(")][:2])
    if target.backend == "coreml":
        headers = ["model", "family", "input", "MACs (M)", "predicted ms", "band ms", "top-1", "dominant ops"]
        table = [[r["model"], r["family"], "x".join(map(str, r["input_size"])), f"{r['macs'] / 1e6:.0f}",
                  f"{r['predicted_ms']:.3f}", f"{r['band_ms'][0]:.2f}–{r['band_ms'][1]:.2f}", r["top1"] or "",
                  top(r)] for r in ok]
    elif target.backend == "mcu":
        headers = ["model", "input", "MACs (M)", "instructions (M)", "estimated ms", "peak SRAM KB"]
        table = [[r["model"], "x".join(map(str, r["input_size"])), f"{r['macs'] / 1e6:.1f}",
                  f"{r['instructions'] / 1e6:.2f}", r["estimated_ms"], f"{r['peak_sram'] / 1024:.1f}"] for r in ok]
    else:
        headers = ["model", "family", "input", "MACs (M)", "edgevit ms", "onnxruntime ms", "PyTorch ms",
                   "edgevit / ORT", "schedules", "dominant ops (TVM profile)"]
        table = [[r["model"], r["family"], "x".join(map(str, r["input_size"])), f"{r['macs'] / 1e6:.0f}",
                  f"{r['edgevit_ms']:.3f}", f"{r['onnxruntime_ms']:.3f}",
                  f"{r['pytorch_ms']:.3f}" if r.get("pytorch_ms") else "-", f"{r['edgevit_vs_ort']:.2f}×",
                  r["schedules"], top(r)] for r in ok]
    payload = {"target": target.name, "backend": target.backend, "models": len(rows), "ok": len(ok),
               "failed": [{"model": r["model"], "error": r.get("error", "no result")} for r in bad],
               "resumed": resumed, "latency_key": key, "rows": ok}
    kind = {"coreml": "**predicted** (analytical model; see a model's `edgevit bench` report for the band and "
                      "the predictor's leave-one-out error)",
            "mcu": "**estimated** from QEMU instruction counts at one instruction per cycle",
            }.get(target.backend, "measured on this host (medians)")
    md = [f"# edgevit bench --zoo: {len(ok)} of {len(rows)} models on {target.name}", "",
          f"Latency: {kind}. top-1: published ImageNet accuracy where known (pretrained weights; edgevit's "
          "models here are randomly initialised, which does not change latency).", "",
          md_table(headers, table), ""]
    if bad:
        md += ["Failed (delete `models/<model>.json` to retry):", "",
               md_table(["model", "error"], [[r["model"], r.get("error", "")] for r in bad]), ""]
    md += ["![latency vs MACs, accuracy vs latency](zoo.png)"]
    write_report(out_dir / "zoo", "bench", payload, "\n".join(md))
    from .charts import zoo_plot

    zoo_plot(out_dir / "zoo.png", f"edgevit bench --zoo on {target.name}: {label}", ok, key, label,
             band_key="band_ms" if target.backend == "coreml" else None)
    return payload
