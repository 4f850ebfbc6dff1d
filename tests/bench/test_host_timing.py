"""bench's interleaved timing: both runtimes measured in alternating blocks, each exactly `runs` times."""

from __future__ import annotations

from edgevit.bench.host import _interleaved


def test_runtimes_alternate_in_blocks_after_one_warmup_each():
    calls = []
    runtimes = {"tvm": lambda: calls.append("tvm"), "onnxruntime": lambda: calls.append("ort")}
    times = _interleaved(runtimes, runs=12, block=5, pause=0)
    assert {name: len(t) for name, t in times.items()} == {"tvm": 12, "onnxruntime": 12}
    assert calls[:2] == ["tvm", "ort"]  # warm-up, not timed
    blocks = "".join("T" if c == "tvm" else "O" for c in calls[2:])
    assert blocks == "TTTTTOOOOOTTTTTOOOOOTTOO"
    assert all(t >= 0 for t in times["tvm"] + times["onnxruntime"])
