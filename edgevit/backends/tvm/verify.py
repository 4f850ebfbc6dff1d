"""A tuned database must not change the numbers: the build it gives is checked against onnxruntime, and
when it is off, bisection over the tuned tasks finds the schedule responsible and drops that one record
(the task's next-best record then takes its place), until the build matches.

MetaSchedule measures only speed, never values. A schedule that sums a reduction in another order can
move a result far enough to fail compile's parity check — seen on shvit_s1, whose GroupNorm variance
(E[x²] − E[x]² over 2352 values) put the output 4.4e-4 × range off — and compile then refuses the whole
build. The search works on the database files alone; `check` (database folder → Parity of the model built
with it) is the only thing that touches TVM, so the bisection is tested without building anything.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from ...artifacts import write_text_atomic
from ...errors import EdgevitError
from ...ir.numerics import Parity

WORKLOADS, RECORDS = "database_workload.json", "database_tuning_record.json"
FAILED_SECONDS = 1e9  # MetaSchedule records a failed build/run as 1e10 s

Check = Callable[[Path], Parity]


def _mean_seconds(record_line: str) -> float:
    secs = [float(s) for s in (json.loads(record_line)[1][1] or [])]
    return sum(secs) / len(secs) if secs and max(secs) < FAILED_SECONDS else math.inf


def best_records(folder: Path) -> dict[int, int]:
    """{workload index: line number of its best valid record} — what compile applies for each workload."""
    best: dict[int, tuple[float, int]] = {}
    for n, line in enumerate((folder / RECORDS).read_text().splitlines()):
        workload, seconds = json.loads(line)[0], _mean_seconds(line)
        if seconds < math.inf and (workload not in best or seconds < best[workload][0]):
            best[workload] = (seconds, n)
    return {w: n for w, (_, n) in best.items()}


def workload_hashes(folder: Path) -> list[str]:
    """The structural hash of each workload, in index order (records refer to workloads by index)."""
    return [json.loads(line)[0] for line in (folder / WORKLOADS).read_text().splitlines()]


def _with_records(folder: Path, dst: Path, workloads: set[int]) -> Path:
    """A copy of `folder`'s database in `dst` keeping only the records of `workloads`."""
    dst.mkdir(exist_ok=True)
    shutil.copyfile(folder / WORKLOADS, dst / WORKLOADS)
    kept = [line for line in (folder / RECORDS).read_text().splitlines() if json.loads(line)[0] in workloads]
    (dst / RECORDS).write_text("".join(line + "\n" for line in kept))
    return dst


def _drop_line(folder: Path, number: int) -> str:
    """Remove record line `number` from `folder`'s database; returns it."""
    lines = (folder / RECORDS).read_text().splitlines()
    write_text_atomic(folder / RECORDS, "".join(line + "\n" for i, line in enumerate(lines) if i != number))
    return lines[number]


def verify(folder: Path, check: Check, tolerance: float, names: dict[str, str] | None = None,
           max_drops: int = 8) -> tuple[Parity, list[dict]]:
    """Drop best records from `folder` until `check(folder)` is within `tolerance` × the output range.

    Returns the final parity and what was dropped ({"task", "seconds", "max_abs", "ref_range"} each). Assumes
    one schedule at a time is to blame (as bisection does) and says so when that is not what it finds.
    """
    names = names or {}
    dropped: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        subset = Path(tmp) / "subset"

        def fails(workloads: list[int]) -> bool:
            return not check(_with_records(folder, subset, set(workloads))).within(tolerance)

        while True:
            parity = check(folder)
            if parity.within(tolerance):
                return parity, dropped
            off = (f"the tuned build differs from onnxruntime by {parity.max_abs:.3g} "
                   f"(> {tolerance:g} × output range {parity.ref_range:.3g})")
            best = best_records(folder)
            if not best or fails([]):
                raise EdgevitError(f"{off}, and so does the build without any tuned schedule: not a tuning problem")
            suspects = sorted(best)
            while len(suspects) > 1:  # invariant: applying the suspects' best records breaks the build
                half = suspects[: len(suspects) // 2]
                suspects = half if fails(half) else suspects[len(half):]
            if not fails(suspects):
                raise EdgevitError(f"{off}, but no single task's schedule does it alone; database {folder} is "
                                   "left as it is (compile will refuse it: retune, or remove the database)")
            workload = suspects[0]
            line = _drop_line(folder, best[workload])
            task = names.get(workload_hashes(folder)[workload], f"workload #{workload}")
            dropped.append({"task": task, "seconds": _mean_seconds(line), "max_abs": parity.max_abs,
                            "ref_range": parity.ref_range})
            if len(dropped) >= max_drops:
                raise EdgevitError(f"{off} after dropping {len(dropped)} schedules (last: {task}); "
                                   f"database {folder} kept as it is now")
