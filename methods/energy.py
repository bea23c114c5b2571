"""``energy``: energy score ``E(x) = -T logsumexp(z / T)`` (Liu et al., 2020); higher energy =
more uncertain. ``T`` is chosen from {0.5, 1, 1.5, 2} (``temperatures``) by AUROC of
ID ok | ID err on the dev mix (dev + corrupted dev), as the paper's C.2 tunes it on dev."""

from __future__ import annotations

import torch
from torch import Tensor

from uqbench.backbones.base import BackboneOutput
from uqbench.method import CostFacts
from uqbench.posthoc import PostHocMethod, Record, dev_errors
from uqbench.tuning import best_by_auroc, check_range

GRID = (0.5, 1.0, 1.5, 2.0)


def energy(logits: Tensor, temperature: float | Tensor = 1.0) -> Tensor:
    """``-T logsumexp(z / T)`` [B] for logits [B, C]."""
    return -temperature * torch.logsumexp(logits / temperature, dim=-1)


class Energy(PostHocMethod):
    """Args: ``temperatures``: the grid T is tuned over (a single value fixes T)."""

    def __init__(self, backbone, temperatures: tuple[float, ...] = GRID, **kwargs) -> None:
        super().__init__(backbone, **kwargs)
        check_range(temperatures, "method.temperatures", 0.0)
        self.temperatures = tuple(temperatures)
        self.register_buffer("temperature", torch.tensor(1.0))

    def fit_record(self, train: Record | None, dev: Record, dev_mix: Record) -> None:
        logits = dev_mix.out.logits
        best = best_by_auroc(self.temperatures, lambda t: energy(logits, t), dev_errors(dev_mix))
        self.temperature.fill_(best)

    def score(self, out: BackboneOutput) -> Tensor:
        return energy(out.logits, self.temperature)

    def tuned(self) -> dict:
        return {"temperature": float(self.temperature)}

    def cost_facts(self) -> CostFacts:
        return CostFacts(extra_params=1, exports=("temperature T", "logsumexp"))
