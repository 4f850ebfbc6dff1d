"""`edgevit tune`: MetaSchedule tuning into schedules/<target>/<model>/, in committed, resumable chunks.

The model is lowered exactly as `compile` lowers it (`prepare`), so the database matches at compile time.
`--trials N` is a budget *per task*. Each task is one chunk: it is tuned in a scratch copy of the
database, and the copy replaces the committed files only when the chunk finished, so a run killed at any
point keeps every finished task. Re-running counts the trials already spent per task (records in the
database, or the ledger `edgevit_tune.json` if MetaSchedule measured fewer candidates than budgeted) and
spends only what remains. `--top K` gives the budget only to the K tasks that weigh most in the model's
latency (weight × best latency so far; untuned tasks first): after a first pass over every task, the
trials go where the time is. With `--input-size` the folder is `<model>-<H>x<W>`, which compile prefers
for a model of that size. Finally the build with the new database is compared with onnxruntime, as compile
will compare it; a schedule that breaks the numbers is found and dropped (verify.py) and the ledger lists it.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import time
from pathlib import Path

import onnx

from ... import ui
from ...artifacts import atomic_path, write_text_atomic
from ...errors import EdgevitError
from ...ir import graph as G
from ...ir.numerics import Parity, run_ort
from . import (TOLERANCE, compare_outputs, conv_layout, host_mismatch, prepare, require_runnable, schedule_folder_name,
               schedules_dir)
from .verify import verify

DB_FILES = ("database_workload.json", "database_tuning_record.json")  # workloads first: records index them
LEDGER = "edgevit_tune.json"
CONNECT_TIMEOUT = 5.0


def parse_endpoint(value: str, flag: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise EdgevitError(f"{flag} {value}: expected HOST:PORT (e.g. 192.168.1.20:9090)")
    return host, int(port)


def require_reachable(host: str, port: int, what: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """A TCP connect to host:port, so an unreachable device fails in seconds with one line, not a hang."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        why = "timed out" if isinstance(exc, socket.timeout) else (exc.strerror or str(exc))
        raise EdgevitError(f"cannot reach the {what} at {host}:{port} ({why}; connect timeout {timeout:g} s)") from None


def is_native(target) -> bool:
    return host_mismatch(target) is None


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.3f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.1f} µs"


def _estimate(weights: list[float], best: list[float | None]) -> float | None:
    """Σ weight × best latency over the tasks with a valid record (a rough model latency)."""
    known = [w * b for w, b in zip(weights, best) if b is not None]
    return sum(known) if known else None


def heaviest(weights: list[float], best: list[float | None], k: int) -> list[int]:
    """The k tasks with the largest weight × best latency, a task without a valid record counting as heaviest."""
    order = sorted(range(len(weights)), key=lambda i: (best[i] is not None, -(weights[i] * (best[i] or 0.0)), i))
    return sorted(order[:k])


def run_tune(model: onnx.ModelProto, target, name: str, trials: int, input_size: tuple[int, int] | None,
             remote: dict | None = None, top: int | None = None) -> dict:
    """Tune `model` for `target`; `remote` = {"host", "port", "key" (tracker) or None (bare server)};
    `top`: spend the budget on the `top` heaviest tasks only."""
    if trials < 0:
        raise EdgevitError(f"--trials {trials}: must be >= 0")
    if target.backend != "tvm":
        raise EdgevitError(f"target {target.name} uses the {target.backend} backend; tuning is for TVM targets")
    require_runnable(target, remote)
    folder = schedules_dir() / target.name / schedule_folder_name(name, input_size)
    inlined, inputs, adapter, tvm_target, mod = prepare(model, target)
    with ui.step("extract MetaSchedule tasks"):
        tuner = adapter.Tuner(mod, tvm_target, remote)
    names, weights = tuner.task_names(), tuner.task_weights()
    if not names:
        raise EdgevitError(f"{name}: MetaSchedule found no tunable tasks")
    ledger_path = folder / LEDGER
    ledger = json.loads(ledger_path.read_text()) if ledger_path.exists() else {}
    spent_before = ledger.get("tasks", {})
    counts = tuner.records(folder)
    spent = [max(n, int(spent_before.get(t, {}).get("trials", 0))) for t, (n, _) in zip(names, counts)]
    best = [b for _, b in counts]
    dropped = list(ledger.get("dropped", []))  # schedules verify.py removed, this run's and earlier ones
    chosen = heaviest(weights, best, top) if top else range(len(names))
    todo = [i for i in chosen if spent[i] < trials]
    scope = f"the {len(chosen)} heaviest of {len(names)} tasks" if top else f"{len(names)} tasks"
    ui.console.print(f"{name} → {target.name}: {scope}, {trials} trials per task; "
                     f"{len(chosen) - len(todo)} already have their budget; database {folder}")

    def save_ledger() -> None:
        doc = {"model": name, "target": target.name, "tvm_target": target.options["target"],
               "layout": conv_layout(target), "inputs": inputs,
               "trials_per_task": min(spent),  # every task has at least this many; see "tasks" for each
               "tasks": {t: {"trials": s, "weight": w, "best_seconds": b}
                         for t, s, w, b in zip(names, spent, weights, best)},
               **({"dropped": dropped} if dropped else {})}
        write_text_atomic(ledger_path, json.dumps(doc, indent=2) + "\n")

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    new_trials, start = 0, time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[best]}"))
    folder.mkdir(parents=True, exist_ok=True)
    with Progress(*columns, console=ui.console) as progress:
        bar = progress.add_task("tuning tasks", total=len(chosen), completed=len(chosen) - len(todo),
                                best=f"model ≈ {_ms(_estimate(weights, best))}")
        for i in todo:
            budget = trials - spent[i]
            progress.update(bar, description=f"{names[i]} ({budget} trials)")
            with tempfile.TemporaryDirectory(prefix=f".{folder.name}.", suffix=".part", dir=folder.parent) as tmp:
                work = Path(tmp)
                for f in DB_FILES:
                    if (folder / f).exists():
                        shutil.copyfile(folder / f, work / f)
                tuner.tune_task(i, work, budget)
                for f in DB_FILES:  # commit this chunk
                    with atomic_path(folder / f) as part:
                        shutil.copyfile(work / f, part)
            n, b = tuner.records(folder)[i]
            new_trials += max(0, n - counts[i][0])
            spent[i], best[i] = max(n, trials), b
            save_ledger()
            progress.update(bar, advance=1, best=f"{names[i]} best {_ms(b)}; model ≈ {_ms(_estimate(weights, best))}")
    if not todo and not ledger_path.exists():
        save_ledger()
    checked = _check_numbers(model, inlined, inputs, adapter, tvm_target, mod, target, folder, tuner) if todo else None
    if checked and checked["dropped"]:
        dropped += checked["dropped"]
        save_ledger()
    summary = {"database": str(folder), "tasks": len(names), "tuned_tasks": len(todo), "new_records": new_trials,
               "records": sum(n for n, _ in tuner.records(folder)), "estimate_seconds": _estimate(weights, best),
               "seconds": round(time.perf_counter() - start, 1), "numbers": checked}
    ui.console.print(f"tuned {len(todo)} of {len(names)} tasks ({new_trials} new records, {summary['records']} in "
                     f"all) in {summary['seconds']}s; Σ weight×best ≈ {_ms(summary['estimate_seconds'])}; "
                     f"database {folder}")
    return summary


def _check_numbers(model, inlined, inputs, adapter, tvm_target, mod, target, folder: Path, tuner) -> dict | None:
    """Build with the database just tuned and compare with onnxruntime (as compile will); drop any schedule that
    breaks the numbers (verify.py). None when the target does not run on this host."""
    why = host_mismatch(target)
    if why:
        ui.console.print(f"[yellow]note:[/yellow] the tuned build was not checked against onnxruntime (target {why})")
        return None
    feeds = G.seeded_inputs(inlined, {s["name"]: s["shape"] for s in inputs}, seed=0)
    reference = run_ort(model, feeds)

    gemm = bool(adapter.gemm_microkernel_funcs(mod))

    def check(database: Path) -> Parity:
        built = adapter.build(adapter.apply_database(mod, tvm_target, adapter.load_database(database)), tvm_target)
        if not gemm:
            return compare_outputs(reference, adapter.run_local(built, list(feeds.values())))
        with tempfile.TemporaryDirectory() as tmp:  # the micro-kernels come in at link time
            library = Path(tmp) / "check.so"
            adapter.export_library(built, library, "", gemm=True)
            return compare_outputs(reference, adapter.run_local(library, list(feeds.values())))

    with ui.step("check the tuned build against onnxruntime"):
        result, dropped = verify(folder, check, TOLERANCE, dict(zip(tuner.task_hashes(), tuner.task_names())))
    for d in dropped:
        ui.console.print(f"[yellow]dropped[/yellow] the best schedule of {d['task']} ({_ms(d['seconds'])}): the build "
                         f"with it was {d['max_abs']:.3g} off onnxruntime (> {TOLERANCE:g} × range {d['ref_range']:.3g})")
    ui.console.print(f"tuned build vs onnxruntime: max abs error {result.max_abs:.2g} (output range {result.ref_range:.3g})")
    return {"max_abs": result.max_abs, "ref_range": result.ref_range, "dropped": dropped}
