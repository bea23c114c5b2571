"""Hyperparameters tuned on dev data only (paper, Appendix C.2), by one shared loop.

A method declares its grids (``search_space``), how a candidate scores on dev
(``tuning_scorer``) and how to set the winner (``apply``). :func:`tune` evaluates every
candidate, records each one's dev objective, and applies the best. A hyperparameter given on the
command line arrives as a grid of one value: it is fixed, and only the others are searched.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from torch import Tensor

from uqbench.errors import ConfigError
from uqbench.metrics import auroc

if TYPE_CHECKING:
    from uqbench.dev_data import DevData
    from uqbench.method import UQMethod


def tune(method: UQMethod, data: DevData) -> dict[str, Any] | None:
    """Search ``method``'s grids on ``data`` and apply the best candidate.

    Returns the record written to ``metrics.json`` (``None`` when nothing is tuned): the
    objective, which hyperparameters were searched and which fixed, every candidate with its
    dev value, and the choice. Undefined values (NaN) rank last; ties go to the first candidate.
    """
    space = method.search_space()
    if not space:
        return None
    names = list(space)
    candidates = [
        dict(zip(names, values, strict=True)) for values in itertools.product(*space.values())
    ]
    evaluate = method.tuning_scorer(data)
    values = [float(evaluate(candidate)) for candidate in candidates]
    sign = 1.0 if method.objective.higher_is_better else -1.0
    ranked = [sign * v if not math.isnan(v) else -math.inf for v in values]
    best = candidates[max(range(len(candidates)), key=ranked.__getitem__)]
    method.apply(best)
    return {
        "objective": method.objective.description,
        "higher_is_better": method.objective.higher_is_better,
        "searched": [n for n in names if len(space[n]) > 1],
        "fixed": [n for n in names if len(space[n]) == 1],
        "candidates": [{"params": c, "value": v} for c, v in zip(candidates, values, strict=True)],
        "chosen": best,
    }


def grid(fixed: Any, candidates: Iterable[Any]) -> tuple[Any, ...]:
    """The grid of one hyperparameter: ``(fixed,)`` when the user set it, else ``candidates``."""
    return (fixed,) if fixed is not None else tuple(candidates)


def auroc_objective(scores: Tensor, positives: Tensor) -> float:
    """AUROC of uncertainty ``scores`` against 0/1 ``positives`` (NaN for a single class)."""
    return auroc(scores.detach().cpu(), positives.detach().cpu())


def check_range(
    values: Iterable[float],
    key: str,
    low: float,
    high: float | None = None,
    low_inclusive: bool = False,
) -> None:
    """Every value must lie above ``low`` (or at it, if ``low_inclusive``) and below ``high``."""
    values = tuple(values)
    if not values:
        raise ConfigError(f"{key} must list at least one value")
    for v in values:
        above = v >= low if low_inclusive else v > low
        if not (above and (high is None or v < high)):
            lower = f"[{low}" if low_inclusive else f"({low}"
            bound = (
                f"in {lower}, {high})"
                if high is not None
                else (f">= {low}" if low_inclusive else f"> {low}")
            )
            raise ConfigError(f"{key}: every value must be {bound}, got {v}")
