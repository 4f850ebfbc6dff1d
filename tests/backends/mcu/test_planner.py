"""Memory planner: small schedules with known answers (Before/Expected), and the verifier catching bad plans."""

import pytest

from edgevit.backends.mcu import planner
from edgevit.backends.mcu.planner import Schedule, Step


def _chain(share: str = "") -> Schedule:
    """x (external) → conv → a → lut → b → lut → c → conv → d: every tensor 1000 bytes."""
    steps = [Step("conv0", "conv2d", ["x"], ["a"]),
             Step("lut1", "lut", ["a"], ["b"], share=share, share_inputs=(0,)),
             Step("lut2", "lut", ["b"], ["c"], share=share, share_inputs=(0,)),
             Step("conv3", "conv2d", ["c"], ["d"])]
    return Schedule(steps, {t: 1000 for t in "xabcd"}, {"x"}, ["d"])


def test_chain_without_sharing_needs_two_buffers():
    s = _chain()
    p = planner.plan(s)
    planner.verify(s, p)
    assert p.placement.arena == 2000 == p.lower_bound
    assert p.shared == []
    assert "x" not in p.placement.tensor_offset  # the caller's input is not in the arena


def test_in_place_luts_share_one_buffer():
    s = _chain("inplace")
    p = planner.plan(s)
    planner.verify(s, p)
    assert [(k, x, y) for k, x, y in p.shared] == [("inplace", "a", "b"), ("inplace", "b", "c")]
    off = p.placement.tensor_offset
    assert off["a"] == off["b"] == off["c"]
    assert p.placement.arena == 2000  # c and d still coexist at conv3


def test_in_place_refused_when_input_is_used_later():
    s = _chain("inplace")
    s.steps[3] = Step("conv3", "conv2d", ["c", "a"], ["d"])  # a is read after lut1 wrote b
    p = planner.plan(s)
    planner.verify(s, p)
    assert ("inplace", "a", "b") not in p.shared


def test_token_overwriting_puts_the_input_inside_the_output():
    rows, k, n = 4, 8, 16
    steps = [Step("embed", "conv2d", ["x"], ["t"]),
             Step("fc", "linear", ["t"], ["y"], scratch=2 * k, share="rows", share_inputs=(0,), rows=(rows, k, n)),
             Step("head", "reduce_mean", ["y"], ["z"])]
    s = Schedule(steps, {"x": 64, "t": rows * k, "y": rows * n, "z": 16}, {"x"}, ["z"])
    p = planner.plan(s)
    planner.verify(s, p)
    assert ("rows", "t", "y") in p.shared
    off = p.placement.tensor_offset
    assert off["t"] - off["y"] == (rows - 1) * (n - k)  # output row i ends where input row i+1 starts
    assert p.placement.arena == rows * n + 2 * k  # output + scratch; the input costs nothing extra
    assert p.no_sharing_peak == rows * k + rows * n + 2 * k


def test_order_search_runs_the_branch_that_frees_memory_first():
    # x → a (big) and x → b (small); a → a2 (small), b → b2 (big); join. Given order: a, b, b2, a2.
    steps = [Step("A", "conv2d", ["x"], ["a"]), Step("B", "conv2d", ["x"], ["b"]),
             Step("B2", "conv2d", ["b"], ["b2"]), Step("A2", "conv2d", ["a"], ["a2"]),
             Step("J", "add", ["a2", "b2"], ["y"])]
    sizes = {"x": 10, "a": 1000, "b": 100, "b2": 1000, "a2": 100, "y": 100}
    s = Schedule(steps, sizes, {"x"}, ["y"])
    given = planner.plan_order(s, list(range(5)))[0].arena
    p = planner.plan(s)
    planner.verify(s, p)
    assert given == 2100  # a, b and b2 live together at B2
    assert p.placement.arena == 1200 and p.orders_tried >= 2
    assert p.order.index(3) < p.order.index(2)  # A2 runs before B2


def test_verify_catches_an_overlap():
    s = _chain()
    p = planner.plan(s)
    off = p.placement.tensor_offset
    off["b"] = off["a"]  # b is written while a is still being read by lut1 — without a sanctioned share
    with pytest.raises(AssertionError, match="overlaps"):
        planner.verify(s, p)


def test_reshape_alias_is_free_and_follows_the_input():
    steps = [Step("conv", "conv2d", ["x"], ["a"]), Step("r", "reshape", ["a"], ["a2"], share="alias", share_inputs=(0,)),
             Step("fc", "linear", ["a2"], ["y"])]
    s = Schedule(steps, {"x": 10, "a": 400, "a2": 400, "y": 40}, {"x"}, ["y"])
    p = planner.plan(s)
    planner.verify(s, p)
    assert p.placement.tensor_offset["a"] == p.placement.tensor_offset["a2"]
    assert p.placement.arena == 440
