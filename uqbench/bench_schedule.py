"""Which job of a bench starts next, when a slot is free.

Two rules, both about the wall time of the matrix, neither about any number a cell produces:

- a job whose base model another running job is training waits (the others run meanwhile),
  then loads it from the cache instead of training it again;
- among the jobs that can start, one of a kind not seen finishing yet starts first, in the
  matrix's order; then the kind that took longest. A kind is the job's methods and data set,
  so the first seed of each method measures it, and the later seeds run longest first, which
  leaves short jobs for the end, when a slot would otherwise wait for the last long one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from uqbench.bench import Job


def kind(job: Job) -> tuple[Any, ...]:
    """What makes jobs alike in duration: their methods and data set (not the seed)."""
    return tuple(c.method for c in job.cells), job.cells[0].data


@dataclass
class Schedule:
    """The jobs still to start and what decides their order. ``is_cached(key)`` says whether a
    base model is in the cache."""

    queue: list[Job]
    is_cached: Callable[[str], bool]
    training_base: dict[Any, str] = field(default_factory=dict)  # running job's handle -> key
    seconds: dict[tuple[Any, ...], float] = field(default_factory=dict)  # kind -> last duration

    def next(self) -> Job | None:
        """The job to start now, taken off the queue; None when every queued job waits."""
        busy = set(self.training_base.values())
        ready = [job for job in self.queue if job.base not in busy]
        if not ready:
            return None
        unmeasured = [job for job in ready if kind(job) not in self.seconds]
        job = unmeasured[0] if unmeasured else max(ready, key=lambda j: self.seconds[kind(j)])
        self.queue.remove(job)
        return job

    def started(self, handle: Any, job: Job) -> None:
        """``job`` runs under ``handle``; if its base model is not cached, it trains it."""
        if job.base and not self.is_cached(job.base):
            self.training_base[handle] = job.base

    def finished(self, handle: Any, job: Job, seconds: float) -> None:
        self.training_base.pop(handle, None)
        self.seconds[kind(job)] = seconds
