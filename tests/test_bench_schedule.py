"""The order a bench starts its jobs in: shared base models, and the longest first."""

from __future__ import annotations

from uqbench.bench import Cell, Job
from uqbench.bench_schedule import Schedule


def _job(method: str, seed: int, base: str | None = None) -> Job:
    return Job((Cell(method, "digits", seed, (f"method={method}",), base=base),))


def test_a_job_waits_while_another_trains_its_base_and_others_run_meanwhile() -> None:
    group, odin, evidential = (
        _job("msp", 13, "b13"),
        _job("odin", 13, "b13"),
        _job("evidential", 13),
    )
    schedule = Schedule([group, odin, evidential], is_cached=lambda key: False)
    assert schedule.next() is group
    schedule.started("slot-1", group)
    assert schedule.next() is evidential  # odin would train b13 a second time
    schedule.started("slot-2", evidential)
    assert schedule.next() is None
    schedule.finished("slot-1", group, 10.0)
    assert schedule.next() is odin


def test_a_job_waits_until_the_base_is_cached_not_until_its_trainer_ends() -> None:
    cached: set[str] = set()
    ensemble, group = _job("deep_ensemble", 13, "b13"), _job("msp", 13, "b13")
    schedule = Schedule([ensemble, group], is_cached=cached.__contains__)
    schedule.started("slot-1", schedule.next())  # the ensemble trains b13, then its members
    assert schedule.next() is None
    cached.add("b13")
    assert schedule.next() is group


def test_a_cached_base_blocks_nobody() -> None:
    group, odin = _job("msp", 13, "b13"), _job("odin", 13, "b13")
    schedule = Schedule([group, odin], is_cached=lambda key: True)
    schedule.started("slot-1", schedule.next())
    assert schedule.next() is odin


def test_unmeasured_kinds_first_in_order_then_the_longest() -> None:
    jobs = [_job(m, s) for s in (13, 17) for m in ("evidential", "deep_ensemble", "msp")]
    schedule = Schedule(list(jobs), is_cached=lambda key: False)
    first = [schedule.next() for _ in range(3)]
    assert first == jobs[:3]  # seed 13: not measured yet, the matrix's order
    for slot, (job, seconds) in enumerate(zip(first, (12.0, 50.0, 8.0), strict=True)):
        schedule.started(slot, job)
        schedule.finished(slot, job, seconds)
    later = [schedule.next() for _ in range(3)]
    assert [j.cells[0].method for j in later] == ["deep_ensemble", "evidential", "msp"]
    assert schedule.next() is None and not schedule.queue
