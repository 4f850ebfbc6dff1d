"""Regenerate tests/backends/data/schedules/x86-avx2/tiny_conv/ (a MetaSchedule database, 2 trials per task).

    python -m tests.backends.make_tiny_db      (≈1.5 min on 2 cores; rerun after a TVM upgrade)

The test compiles the same tiny_conv_model with it and checks every PrimFunc came out scheduled.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from edgevit import targets
from edgevit.backends.tvm import adapter, conv_layout

from . import tiny_conv_model

DEST = Path(__file__).parent / "data" / "schedules" / "x86-avx2" / "tiny_conv"


def main() -> None:
    x86 = targets.load("x86-avx2")
    target = adapter.make_target(x86.options["target"], "x86-avx2")
    mod = adapter.lower(adapter.import_onnx(tiny_conv_model(), {"x": [1, 3, 8, 8]}, {"x": "float32"}), target,
                        conv_layout(x86))
    with tempfile.TemporaryDirectory() as work:
        tasks = len(adapter.Tuner(mod, target).task_names())
        adapter.tune(mod, target, Path(work), max_trials=2 * tasks, max_trials_per_task=2)  # 2 per task
        DEST.mkdir(parents=True, exist_ok=True)
        for name in ("database_workload.json", "database_tuning_record.json"):
            shutil.copyfile(Path(work) / name, DEST / name)
    print(f"wrote {DEST}")


if __name__ == "__main__":
    main()
