"""Static planning of the activation arena: one buffer, tensors placed by lifetime.

A tensor lives from the op that writes it to the last op that reads it (the graph's input from
the start; an output is copied out of the arena as soon as it is written); a ``reshape`` output
is the same bytes as its input. Tensors
are placed largest first at the lowest offset that overlaps no placed tensor alive at the same
time (first fit by decreasing size). The lower bound for the execution order is the largest sum
of sizes alive at one step; the plan is reported beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from uqbench.deploy.graph import Graph

ALIGN = 4  # bytes: word-aligned buffers


@dataclass
class ArenaPlan:
    offsets: dict[str, int]  # tensor -> byte offset in the arena
    size: int  # bytes
    lower_bound: int  # bytes: the largest sum of simultaneously live tensors


def _bytes(graph: Graph, name: str) -> int:
    size = int(np.prod(graph.tensors[name].shape))
    return (size + ALIGN - 1) // ALIGN * ALIGN


def _first_fit(
    names: list[str], lifetimes: dict[str, tuple[int, int, int]]
) -> tuple[dict[str, int], list[tuple[int, int, int, int]]]:
    """Place each tensor, in ``names`` order, at the lowest offset free over its lifetime."""
    placed: list[tuple[int, int, int, int]] = []  # (offset, size, first, last)
    offsets = {}
    for name in names:
        first, last, size = lifetimes[name]
        busy = sorted((o, o + s) for o, s, a, b in placed if a <= last and first <= b)
        offset = 0
        for low, high in busy:
            if offset + size <= low:
                break
            offset = max(offset, high)
        placed.append((offset, size, first, last))
        offsets[name] = offset
    return offsets, placed


def _within(
    names: list[str], lifetimes: dict[str, tuple[int, int, int]], limit: int
) -> tuple[dict[str, int], list[tuple[int, int, int, int]]] | None:
    """Place each tensor in ``names`` order inside ``limit`` bytes, at the end of a free gap
    farthest from the tensor placed before it (ping-pong: a producer and its consumer sit at
    opposite ends, leaving the middle to the next one); None if one cannot fit."""
    placed: list[tuple[int, int, int, int]] = []
    offsets = {}
    previous = 0.0
    for name in names:
        first, last, size = lifetimes[name]
        busy = sorted((o, o + s) for o, s, a, b in placed if a <= last and first <= b)
        gaps, cursor = [], 0
        for low, high in busy:
            if low - cursor >= size:
                gaps.append((cursor, low))
            cursor = max(cursor, high)
        if limit - cursor >= size:
            gaps.append((cursor, limit))
        if not gaps:
            return None
        candidates = [c for low, high in gaps for c in (low, high - size)]
        offset = max(candidates, key=lambda c: (abs(c + size / 2 - previous), -c))
        previous = offset + size / 2
        placed.append((offset, size, first, last))
        offsets[name] = offset
    return offsets, placed


def plan_arena(graph: Graph) -> ArenaPlan:
    root = {}  # reshape outputs share their input's buffer
    for op in graph.ops:
        if op.kind == "reshape":
            root[op.outputs[0]] = root.get(op.inputs[0], op.inputs[0])
    base = lambda name: root.get(name, name)  # noqa: E731
    start: dict[str, int] = {base(n): -1 for n in graph.inputs}
    end: dict[str, int] = {}
    for step, op in enumerate(graph.ops):
        for name in op.inputs:
            if graph.tensors[name].data is None:
                end[base(name)] = step
        for name in op.outputs:
            start.setdefault(base(name), step)
    for name in graph.outputs:  # copied out right after it is written (see codegen)
        end[base(name)] = max(end.get(base(name), start[base(name)]), start[base(name)])
    lifetimes = {n: (start[n], end.get(n, start[n]), _bytes(graph, n)) for n in start}
    # First fit under several orders; keep the smallest arena (all are valid plans).
    orders = (
        lambda n: (-lifetimes[n][2], lifetimes[n][0]),  # largest first
        lambda n: (lifetimes[n][0], -lifetimes[n][2]),  # in execution order
        lambda n: (-(lifetimes[n][1] - lifetimes[n][0]), -lifetimes[n][2]),  # longest-lived first
        lambda n: (-lifetimes[n][2] * (lifetimes[n][1] - lifetimes[n][0] + 1), lifetimes[n][0]),
    )
    plans = [_first_fit(sorted(lifetimes, key=key), lifetimes) for key in orders]
    in_order = sorted(lifetimes, key=orders[1])
    for slack in (1.0, 1.02, 1.05):  # packing to the lower bound, in execution order
        fitted = _within(in_order, lifetimes, int(_bound(lifetimes) * slack) // ALIGN * ALIGN)
        if fitted is not None:
            plans.append(fitted)
            break
    offsets, placed = min(plans, key=lambda plan: max((o + s for o, s, _, _ in plan[1]), default=0))
    for alias, source in root.items():
        offsets[alias] = offsets[source]
    total = max((o + s for o, s, _, _ in placed), default=0)
    return ArenaPlan(offsets, total, _bound(lifetimes))


def _bound(lifetimes: dict[str, tuple[int, int, int]]) -> int:
    """The largest sum of sizes alive at one step: no plan for this order can be smaller."""
    steps = {t for first, last, _ in lifetimes.values() for t in (first, last)}
    return max(sum(s for a, b, s in lifetimes.values() if a <= t <= b) for t in steps)
