"""Memory-budget planner: every int8 activation of the model gets an offset in one static arena.

Input: a `Schedule` — steps in execution order, each naming the tensors it reads and writes, the
scratch it needs for its duration, and how its output may share memory with an input:
  - `alias`    the output IS the input (reshape): same bytes, no copy;
  - `inplace`  the output may overwrite an input that dies at this step (lut, rescale, softmax,
               layernorm, add/mul on a full-size operand);
  - `rows`     token overwriting (MCUFormer): a row-wise op (linear on (tokens, k) → (tokens, n)) reads row
               i completely before writing row i, so its output may overlap its dying input as long as
               output row i ends before input row i+1 starts — input placed (tokens−1)·(n−k) bytes above
               the output when n > k, at the same offset when n ≤ k (ev_kernels.h, "Aliasing").

Plan (`plan`):
  1. Buffers: tensors that share memory are merged into one buffer with fixed relative offsets
     (union-find with offsets); a buffer lives from its first definition to its last use.
  2. Placement: largest buffer first, each at the best-fitting gap (the smallest hole between buffers that
     overlap it in time) — TFLite Micro's greedy planner is the same idea with first fit.
  3. Sharing is a tactic, not a rule: merging a buffer extends its lifetime, which can cost more than it
     saves, so each candidate (in-place, then token overwriting) is kept only if the arena shrinks.
  4. Execution order: the given topological order and the best orders of a beam search over topological
     orders by peak live bytes (`_topological_orders`); each is planned as above, the smallest arena wins.

Report: the arena, the live-tensor lower bound of the chosen order and sharing (no placement can beat it),
the naive sum (every tensor its own buffer), the no-reuse-within-lifetimes peak, and the step, op and
tensors that set the peak.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ALIGN = 4  # every buffer starts on a word boundary (SIMD word loads, int16 scratch)


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass
class Step:
    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    scratch: int = 0  # bytes needed only while the step runs
    share: str = ""  # "" | "alias" | "inplace" | "rows"
    share_inputs: tuple[int, ...] = ()  # which inputs the output may share with (indices into inputs)
    rows: tuple[int, int, int] = (0, 0, 0)  # (rows, k, n) for share == "rows"
    macs: int = 0  # multiply-accumulates (reports and benchmarks only)


@dataclass
class Schedule:
    steps: list[Step]
    sizes: dict[str, int]  # bytes of every activation tensor
    external: set[str] = field(default_factory=set)  # not in the arena (the caller's input buffer)
    outputs: list[str] = field(default_factory=list)  # graph outputs (must survive to the end)


@dataclass
class Placement:
    tensor_offset: dict[str, int]  # arena offset of every planned tensor
    scratch_offset: dict[int, int]  # step index → arena offset of its scratch
    arena: int


@dataclass
class Plan:
    order: list[int]  # indices into the original schedule's steps
    placement: Placement
    shared: list[tuple[str, str, str]]  # (kind, input tensor, output tensor) merges applied
    lower_bound: int
    peak_step: int  # position in `order` where the lower bound is reached
    peak_tensors: list[str]
    naive_sum: int
    no_sharing_peak: int  # lower bound of the given order with no sharing at all
    orders_tried: int


class _Buffers:
    """Union-find of tensors with relative offsets: tensor t lives at base(root(t)) + rel(t)."""

    def __init__(self, sizes: dict[str, int]):
        self.parent = {t: t for t in sizes}
        self.rel = {t: 0 for t in sizes}  # offset relative to parent
        self.sizes = sizes

    def find(self, t: str) -> tuple[str, int]:
        off = 0
        while self.parent[t] != t:
            off += self.rel[t]
            t = self.parent[t]
        return t, off

    def merge(self, child: str, anchor: str, delta: int) -> None:
        """Put `child`'s buffer so that child sits at anchor's offset + delta."""
        rc, oc = self.find(child)
        ra, oa = self.find(anchor)
        if rc == ra:
            return
        self.parent[rc] = ra
        self.rel[rc] = oa + delta - oc

    def groups(self) -> dict[str, list[tuple[str, int]]]:
        found: dict[str, list[tuple[str, int]]] = {}
        for t in self.parent:
            root, off = self.find(t)
            found.setdefault(root, []).append((t, off))
        return found


def _lifetimes(schedule: Schedule, order: list[int]) -> tuple[dict[str, int], dict[str, int]]:
    first, last = {}, {}
    end = len(order)
    for pos, i in enumerate(order):
        s = schedule.steps[i]
        for t in s.inputs:
            if t in schedule.sizes:
                last[t] = pos
        for t in s.outputs:
            first.setdefault(t, pos)
            last.setdefault(t, pos)
    for t in schedule.outputs:
        last[t] = end  # read by the final copy-out
    return first, last


class _Placer:
    """Buffers (groups of tensors) and scratch intervals → offsets, largest first, best fit."""

    def __init__(self, schedule: Schedule, order: list[int], buffers: _Buffers,
                 lifetimes: tuple[dict[str, int], dict[str, int]] | None = None):
        self.schedule, self.order = schedule, order
        self.groups = buffers.groups()  # the buffers do not change while this placer lives
        self.first, self.last = lifetimes or _lifetimes(schedule, order)

    def items(self) -> list[tuple[int, int, int, object]]:
        """(size, start, end, key) per buffer and per scratch; key is a root tensor or a step index."""
        out = []
        for root, members in self.groups.items():
            members = [(t, o) for t, o in members if t in self.first and t not in self.schedule.external]
            if not members:
                continue
            lo = min(o for _, o in members)
            hi = max(o + self.schedule.sizes[t] for t, o in members)
            start = min(self.first[t] for t, _ in members)
            end = max(self.last[t] for t, _ in members)
            out.append((_align(hi - lo), start, end, (root, lo)))
        for pos, i in enumerate(self.order):
            if self.schedule.steps[i].scratch:
                out.append((_align(self.schedule.steps[i].scratch), pos, pos, i))
        return out

    # Orders in which buffers are placed; greedy placement is order-sensitive, so try a few and keep the best.
    ORDERINGS = (lambda it: (-it[0], it[1]),  # largest first (TFLM)
                 lambda it: (-(it[2] - it[1]), -it[0]),  # longest-lived first
                 lambda it: (-it[0] * (it[2] - it[1] + 1), it[1]),  # largest area in the size × time chart
                 lambda it: (it[1], -it[0]))  # in execution order

    def place(self) -> Placement:
        items = self.items()
        return min((self._place(sorted(items, key=lambda it, k=k: (k(it), str(it[3])))) for k in self.ORDERINGS),
                   key=lambda p: p.arena)

    def _place(self, items) -> Placement:
        placed: list[tuple[int, int, int, int]] = []  # (offset, size, start, end)
        offsets = {}
        for size, start, end, key in items:
            busy = sorted((o, o + s) for o, s, a, b in placed if a <= end and start <= b)
            best, best_gap, cursor = None, None, 0
            for lo, hi in busy:
                gap = lo - cursor
                if gap >= size and (best_gap is None or gap < best_gap):
                    best, best_gap = cursor, gap
                cursor = max(cursor, hi)
            offset = cursor if best is None else best
            placed.append((offset, size, start, end))
            offsets[key] = offset
        arena = max((o + s for o, s, _, _ in placed), default=0)
        tensor_offset, scratch_offset = {}, {}
        for key, offset in offsets.items():
            if isinstance(key, tuple):
                root, lo = key
                for t, o in self.groups[root]:
                    if t not in self.schedule.external:
                        tensor_offset[t] = offset + o - lo
            else:
                scratch_offset[key] = offset
        return Placement(tensor_offset, scratch_offset, arena)

    def lower_bound(self) -> tuple[int, int, list[str]]:
        """max over steps of the bytes live at that step (buffers + scratch): no placement does better."""
        items = self.items()
        best = (0, 0, [])
        for pos in range(len(self.order) + 1):
            live = [it for it in items if it[1] <= pos <= it[2]]
            total = sum(it[0] for it in live)
            if total > best[0]:
                names = []
                for it in live:
                    if isinstance(it[3], tuple):
                        root = it[3][0]
                        names += sorted(t for t, _ in self.groups[root]
                                        if t in self.first and self.first[t] <= pos <= self.last[t])
                    else:
                        names.append(f"scratch of {self.schedule.steps[it[3]].name}")
                best = (total, pos, names)
        return best


def _aliases(schedule: Schedule) -> _Buffers:
    """Reshapes always share (they are free); everything else starts in its own buffer."""
    buffers = _Buffers(schedule.sizes)
    for s in schedule.steps:
        if s.share == "alias":
            buffers.merge(s.outputs[0], s.inputs[0], 0)
    return buffers


def external_closure(schedule: Schedule) -> set[str]:
    """The external tensors and every reshape of them (they live in the caller's buffer, not the arena)."""
    ext = set(schedule.external)
    for s in schedule.steps:
        if s.share == "alias" and s.inputs[0] in ext:
            ext.add(s.outputs[0])
    return ext


def _candidates(schedule: Schedule, order: list[int], last: dict[str, int]) -> list[tuple[str, str, str, int]]:
    """(kind, input, output, delta) sharing candidates legal in this order."""
    found = []
    for pos, i in enumerate(order):
        s = schedule.steps[i]
        if s.share not in ("inplace", "rows"):
            continue
        for k in s.share_inputs:
            x, y = s.inputs[k], s.outputs[0]
            if x in schedule.external or x in schedule.outputs or last.get(x) != pos or x in s.inputs[:k] + s.inputs[k + 1:]:
                continue
            delta = 0
            if s.share == "rows":
                rows, kk, n = s.rows
                delta = -max(0, (rows - 1) * (n - kk))  # the output starts this far below the input
            found.append((s.share, x, y, delta))
    return found


def _legal(buffers: _Buffers, first: dict[str, int], last: dict[str, int], x: str, y: str) -> bool:
    """Merging y onto x's buffer is legal if nothing else in x's buffer is used after y is written."""
    groups = buffers.groups()
    root, root_y = buffers.find(x)[0], buffers.find(y)[0]
    born = first[y]
    return (root != root_y
            and all(last.get(t, -1) <= born for t, _ in groups[root] if t in first)  # x's buffer is dead
            and all(first.get(t, born) >= born for t, _ in groups[root_y]))  # y not already placed on another


def _closed(schedule: Schedule) -> Schedule:
    """`schedule` with its external set closed over reshapes (what the planning functions expect)."""
    return Schedule(schedule.steps, schedule.sizes, external_closure(schedule), schedule.outputs)


def plan_order(schedule: Schedule, order: list[int]) -> tuple[Placement, _Buffers, list, _Placer]:
    """Aliases, then each sharing candidate kept only if it shrinks the arena; best placement."""
    sched = _closed(schedule)
    lifetimes = _lifetimes(sched, order)
    buffers = _aliases(sched)
    best = _Placer(sched, order, buffers, lifetimes).place()
    shared = []
    for kind, x, y, delta in _candidates(sched, order, lifetimes[1]):
        if not _legal(buffers, *lifetimes, x, y):
            continue
        trial = _Buffers(schedule.sizes)
        trial.parent, trial.rel = dict(buffers.parent), dict(buffers.rel)
        # y at x + delta, i.e. x at y − delta
        trial.merge(y, x, delta)
        candidate = _Placer(sched, order, trial, lifetimes).place()
        if candidate.arena <= best.arena:
            buffers, best = trial, candidate
            shared.append((kind, x, y))
    return best, buffers, shared, _Placer(sched, order, buffers, lifetimes)


def _topological_orders(schedule: Schedule, width: int) -> list[list[int]]:
    """The given order, plus the best orders of a beam search over topological orders.

    A state is the set of steps already run; its cost is the peak of live bytes so far (tensors produced
    and not yet fully consumed, plus the running step's outputs and scratch). Each level keeps the
    `width` cheapest states, so branches that free memory early are run first; residual-block graphs
    have few ready steps at a time, which keeps this exact in practice.
    """
    steps = schedule.steps
    producer = {t: i for i, s in enumerate(steps) for t in s.outputs}
    deps = [frozenset(producer[t] for t in s.inputs if t in producer) for s in steps]
    users: dict[str, int] = {}
    for s in steps:
        for t in set(s.inputs):
            users[t] = users.get(t, 0) + 1
    size = {t: (0 if t in schedule.external else v) for t, v in schedule.sizes.items()}
    # state: (peak, live, order, done, remaining users)
    beam = [(0, 0, [], frozenset(), users)]
    for _ in steps:
        seen, nxt = set(), []
        for peak, live, order, done, remaining in beam:
            for i in range(len(steps)):
                if i in done or not deps[i] <= done:
                    continue
                s = steps[i]
                key = done | {i}
                if key in seen:
                    continue
                seen.add(key)
                made = sum(size.get(t, 0) for t in s.outputs)
                left = dict(remaining)
                freed = 0
                for t in set(s.inputs):
                    left[t] -= 1
                    if left[t] == 0 and t not in schedule.outputs:
                        freed += size.get(t, 0)
                freed += sum(size.get(t, 0) for t in s.outputs if t not in users and t not in schedule.outputs)
                nxt.append((max(peak, live + made + s.scratch), live + made - freed, order + [i], key, left))
        nxt.sort(key=lambda st: (st[0], st[1], st[2]))
        beam = nxt[:width]
    orders = [list(range(len(steps)))]
    for st in beam[:4]:
        if st[2] not in orders:
            orders.append(st[2])
    return orders


def plan(schedule: Schedule, order_search: int = 32) -> Plan:
    """The smallest-arena plan over the candidate execution orders (see the module docstring)."""
    sched = _closed(schedule)
    naive_sum = sum(_align(v) for t, v in schedule.sizes.items() if t not in sched.external)
    no_sharing_peak = _Placer(sched, list(range(len(schedule.steps))), _Buffers(schedule.sizes)).lower_bound()[0]
    best = None
    orders = _topological_orders(schedule, order_search)
    for order in orders:
        placement, buffers, shared, placer = plan_order(schedule, order)
        if best is None or placement.arena < best[1].arena:
            best = (order, placement, shared, placer)
    order, placement, shared, placer = best
    bound, pos, names = placer.lower_bound()
    return Plan(order, placement, shared, bound, min(pos, len(order) - 1), names, naive_sum, no_sharing_peak,
                len(orders))


def verify(schedule: Schedule, p: Plan) -> None:
    """Independent check of a plan: no two tensors (or scratch) share bytes while both are live, except
    aliases (the same bytes by construction) and the planned shares, where the input must die at the step
    that writes the output. Raises AssertionError naming the pair."""
    first, last = _lifetimes(schedule, p.order)
    off = p.placement.tensor_offset
    alias = _Buffers(schedule.sizes)
    for s in schedule.steps:
        if s.share == "alias":
            alias.merge(s.outputs[0], s.inputs[0], 0)
    shared = _Buffers(schedule.sizes)
    shared.parent, shared.rel = dict(alias.parent), dict(alias.rel)
    for _, x, y in p.shared:
        shared.merge(y, x, 0)  # only connectivity matters here
    spans = [(t, off[t], off[t] + schedule.sizes[t], first[t], last[t]) for t in off if t in first]
    for pos, i in enumerate(p.order):
        if i in p.placement.scratch_offset:
            o = p.placement.scratch_offset[i]
            spans.append((f"scratch of {schedule.steps[i].name}", o, o + schedule.steps[i].scratch, pos, pos))
    for a, (ta, lo_a, hi_a, s_a, e_a) in enumerate(spans):
        if lo_a < 0 or hi_a > p.placement.arena:
            raise AssertionError(f"{ta} [{lo_a},{hi_a}) lies outside the {p.placement.arena}-byte arena")
        for tb, lo_b, hi_b, s_b, e_b in spans[a + 1:]:
            if not (lo_a < hi_b and lo_b < hi_a and s_a <= e_b and s_b <= e_a):
                continue
            if tb in alias.parent and ta in alias.parent:
                if alias.find(ta)[0] == alias.find(tb)[0]:
                    continue
                if shared.find(ta)[0] == shared.find(tb)[0] and (e_a <= s_b or e_b <= s_a):
                    continue
            raise AssertionError(f"{ta} [{lo_a},{hi_a}) live at steps {s_a}-{e_a} overlaps {tb} "
                                 f"[{lo_b},{hi_b}) live at steps {s_b}-{e_b}")
