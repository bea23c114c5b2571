"""The calibration stage: the method's post-training hook, then the shared tuning loop."""

from __future__ import annotations

from typing import Any

from uqbench.dev_data import DevData
from uqbench.method import UQMethod
from uqbench.tuning import tune


def calibrate_method(method: UQMethod, data: DevData) -> dict[str, Any] | None:
    """Fit what comes after training (``calibrate``), search the method's grids on dev, and
    mark it calibrated. Returns the tuning record (None when nothing is tuned)."""
    method.eval()
    method.calibrate(data)
    record = tune(method, data)
    method.calibrated.fill_(True)
    return record
