"""verify.py: a tuned schedule that breaks the numbers is found by bisection and dropped, nothing else is touched.

The database is plain JSON lines and `check` is a stand-in (which records are present → parity), so these run in
milliseconds; the real check (build + run + compare with onnxruntime) runs in test_tvm_tune_bench.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgevit.backends.tvm.verify import RECORDS, WORKLOADS, best_records, verify
from edgevit.errors import EdgevitError
from edgevit.ir.numerics import Parity

TOL = 1e-4
NAMES = {"h0": "fused_conv2d", "h1": "group_norm", "h2": "matmul", "h3": "softmax"}
FAILED = 1e10


def _record(workload: int, secs: float) -> str:
    trace = [[["GetSBlock", [], ["T", "main"], ["b0"]]], []]
    return json.dumps([workload, [trace, [secs], {"kind": "llvm"}, []]])


def _database(tmp_path: Path, records: list[tuple[int, float]]) -> Path:
    folder = tmp_path / "db"
    folder.mkdir()
    (folder / WORKLOADS).write_text("".join(json.dumps([h, "IR"]) + "\n" for h in NAMES))
    (folder / RECORDS).write_text("".join(_record(w, s) + "\n" for w, s in records))
    return folder


def _present(folder: Path) -> set[tuple[int, float]]:
    lines = (folder / RECORDS).read_text().splitlines()
    return {(json.loads(line)[0], json.loads(line)[1][1][0]) for line in lines}


def _applied(folder: Path) -> set[tuple[int, float]]:
    """The records compile would apply: each workload's best valid one."""
    lines = (folder / RECORDS).read_text().splitlines()
    return {(json.loads(lines[n])[0], json.loads(lines[n])[1][1][0]) for n in best_records(folder).values()}


def _parity(error: float) -> Parity:
    p = Parity()
    p.update(np.array([0.0, 1.0]), np.array([0.0, 1.0 + error]))
    return p


class Oracle:
    """parity of a build = 1.0 off if `breaks(applied records)`, else 1e-7 off; counts builds."""

    def __init__(self, breaks):
        self.breaks, self.builds = breaks, 0

    def __call__(self, folder: Path) -> Parity:
        self.builds += 1
        return _parity(1.0 if self.breaks(_applied(folder)) else 1e-7)


RECS = [(0, 3e-5), (0, 2e-5), (1, 9e-5), (1, 4e-5), (1, 1e-5), (1, FAILED), (2, 5e-5), (3, 6e-6), (3, 7e-6)]


def test_the_breaking_schedule_is_dropped_and_the_next_best_takes_over(tmp_path):
    folder = _database(tmp_path, RECS)
    bad = (1, 1e-5)  # group_norm's best record
    check = Oracle(lambda applied: bad in applied)
    parity, dropped = verify(folder, check, TOL, NAMES)
    assert parity.within(TOL)
    assert [d["task"] for d in dropped] == ["group_norm"] and dropped[0]["seconds"] == 1e-5
    assert dropped[0]["max_abs"] == pytest.approx(1.0)
    assert _present(folder) == set(RECS) - {bad}  # the failed (1e10 s) record and every other one stay
    assert (1, 4e-5) in _applied(folder)
    assert check.builds <= 1 + 1 + 2 + 1 + 1  # full, untuned, bisection over 4 workloads, confirm, recheck


def test_two_bad_schedules_of_one_task_are_dropped_in_turn(tmp_path):
    folder = _database(tmp_path, RECS)
    check = Oracle(lambda applied: (1, 1e-5) in applied or (1, 4e-5) in applied or (3, 6e-6) in applied)
    _, dropped = verify(folder, check, TOL, NAMES)
    assert sorted(d["task"] for d in dropped) == ["group_norm", "group_norm", "softmax"]
    assert _present(folder) == set(RECS) - {(1, 1e-5), (1, 4e-5), (3, 6e-6)}


def test_a_clean_database_is_left_alone_after_one_build(tmp_path):
    folder = _database(tmp_path, RECS)
    before = (folder / RECORDS).read_bytes()
    check = Oracle(lambda applied: False)
    _, dropped = verify(folder, check, TOL, NAMES)
    assert dropped == [] and check.builds == 1 and (folder / RECORDS).read_bytes() == before


def test_no_single_culprit_leaves_the_database_as_it_is(tmp_path):
    folder = _database(tmp_path, RECS)
    before = (folder / RECORDS).read_bytes()
    both = {(0, 2e-5), (2, 5e-5)}  # only the two schedules together break it
    with pytest.raises(EdgevitError, match="no single task's schedule does it alone"):
        verify(folder, Oracle(lambda applied: both <= applied), TOL, NAMES)
    assert (folder / RECORDS).read_bytes() == before


def test_a_build_off_even_untuned_is_not_blamed_on_tuning(tmp_path):
    folder = _database(tmp_path, RECS)
    with pytest.raises(EdgevitError, match="so does the build without any tuned schedule"):
        verify(folder, Oracle(lambda applied: True), TOL, NAMES)
    assert _present(folder) == set(RECS)


def test_gives_up_after_max_drops(tmp_path):
    folder = _database(tmp_path, RECS)
    with pytest.raises(EdgevitError, match="after dropping 2 schedules"):
        verify(folder, Oracle(lambda applied: any(w in (1, 3) for w, _ in applied)), TOL, NAMES, max_drops=2)
