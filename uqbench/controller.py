"""The budgeted abstention controller of the paper's Appendix K.

A stream of uncertainties ``U(x_t)`` arrives one at a time. The controller abstains when
``U >= tau_t``, keeps an exponentially weighted average of its abstentions
``A_t = eta * 1[U >= tau_t] + (1 - eta) * A_{t-1}`` (``A_0 = 0``), and moves the threshold
``tau_{t+1} = tau_t + kappa * (A_t - b)``, which holds the long-run abstention rate near the
budget ``b`` without labels.
"""

from __future__ import annotations

import torch
from torch import Tensor


class AbstentionController:
    """Scalar threshold controller; ``step(u)`` returns whether to abstain on this input."""

    def __init__(
        self, budget: float, kappa: float = 0.01, eta: float = 0.05, threshold: float = 0.5
    ) -> None:
        if not 0 < budget < 1:
            raise ValueError(f"budget must be in (0, 1), got {budget}")
        if kappa <= 0 or not 0 < eta <= 1:
            raise ValueError("kappa must be > 0 and eta in (0, 1]")
        self.budget, self.kappa, self.eta = budget, kappa, eta
        self.threshold = threshold
        self.average = 0.0

    def step(self, uncertainty: float) -> bool:
        abstain = uncertainty >= self.threshold
        self.average = self.eta * float(abstain) + (1 - self.eta) * self.average
        self.threshold += self.kappa * (self.average - self.budget)
        return abstain

    def run(self, stream: Tensor) -> Tensor:
        """Abstention decisions [T] (bool) for a stream of uncertainties [T], in order."""
        # tolist(): the same Python floats as float() of each element, without a tensor each.
        return torch.tensor([self.step(u) for u in stream.tolist()], dtype=torch.bool)
