"""The calibration stage: the method's post-training hook, then the shared tuning loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from uqbench.dev_data import DevData
from uqbench.method import UQMethod
from uqbench.tuning import tune


@dataclass
class Calibration:
    """What calibrating one method did: its tuning record (None when nothing was searched) and
    the splits it read (``train``, ``dev``, ``dev_shift``, ``dev_mix``): a method that read
    ``dev_shift`` or ``dev_mix`` has seen shifted data, which the leaderboards say."""

    tuning: dict[str, Any] | None
    fitted_on: list[str]


class _SplitsRead:
    """A :class:`DevData` view that notes every split the method asks for."""

    def __init__(self, data: DevData) -> None:
        self._data, self.splits = data, set()

    def loader(self, split: str):
        self.splits.add(split)
        return self._data.loader(split)

    def record(self, split: str):
        self.splits.add(split)
        return self._data.record(split)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._data, name)


def calibrate_method(method: UQMethod, data: DevData) -> Calibration:
    """Fit what comes after training (``calibrate``), search the method's grids on dev, and
    mark it calibrated."""
    method.eval()
    view = _SplitsRead(data)
    method.calibrate(view)
    record = tune(method, view)
    method.calibrated.fill_(True)
    return Calibration(record, sorted(view.splits))
