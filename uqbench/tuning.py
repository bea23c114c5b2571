"""Choosing hyperparameters on dev data only (paper, Appendix C.2), and checking their grids."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from torch import Tensor

from uqbench.errors import ConfigError
from uqbench.metrics import auroc

T = TypeVar("T")


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


def best_by_auroc(
    grid: Iterable[T], scores: Callable[[T], Tensor], errors: Tensor | Callable[[T], Tensor]
) -> T:
    """The grid value whose uncertainty ``scores(value)`` best ranks the errors first (AUROC of
    ID ok | ID err). ``errors`` are 0/1 per example, or a function of the value when the value
    changes the predictions (ensemble size, number of passes). An undefined AUROC (a single
    class) ranks last; ties go to the first value."""

    def value(choice: T) -> float:
        target = errors(choice) if callable(errors) else errors
        result = auroc(scores(choice), target)
        return result if result == result else float("-inf")

    return max(grid, key=value)
