"""Which job of a bench starts next, when a slot is free.

Two rules, both about the wall time of the matrix, neither about any number a cell produces:

- a job whose base model another running job is training waits (the others run meanwhile)
  until that base is cached, then loads it from the cache instead of training it again;
- among the jobs that can start, one of a kind not seen finishing yet starts first, in the
  matrix's order; then the kind that took longest. A kind is the job's methods and data set,
  so the first seed of each method measures it, and the later seeds run longest first, which
  leaves short jobs for the end, when a slot would otherwise wait for the last long one.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol


class Schedulable(Protocol):
    """What the schedule reads of a job (:class:`uqbench.bench.Job`)."""

    @property
    def base(self) -> str | None:
        """The key of the base model the job starts from, if any."""

    @property
    def kind(self) -> Hashable:
        """What makes jobs alike in duration (their methods and data set, not the seed)."""


@dataclass
class Schedule:
    """The jobs still to start and what decides their order. ``is_cached(key)`` says whether a
    base model is in the cache."""

    queue: list[Schedulable]
    is_cached: Callable[[str], bool]
    training_base: dict[Any, str] = field(default_factory=dict)  # running job's handle -> key
    seconds: dict[Hashable, float] = field(default_factory=dict)  # kind -> last duration

    def next(self) -> Schedulable | None:
        """The job to start now, taken off the queue; None when every queued job waits."""
        # A base is busy while its job trains it: until it is cached, not until that job ends
        # (a deep ensemble trains its base first, then its other members).
        busy = {key for key in self.training_base.values() if not self.is_cached(key)}
        ready = [job for job in self.queue if job.base not in busy]
        if not ready:
            return None
        unmeasured = [job for job in ready if job.kind not in self.seconds]
        job = unmeasured[0] if unmeasured else max(ready, key=lambda j: self.seconds[j.kind])
        self.queue.remove(job)
        return job

    def started(self, handle: Any, job: Schedulable) -> None:
        """``job`` runs under ``handle``; if its base model is not cached, it trains it."""
        if job.base and not self.is_cached(job.base):
            self.training_base[handle] = job.base

    def finished(self, handle: Any, job: Schedulable, seconds: float) -> None:
        self.training_base.pop(handle, None)
        self.seconds[job.kind] = seconds
