"""``energy``: energy score ``E(x) = -T logsumexp(z / T)`` (Liu et al., 2020); higher energy =
more uncertain. ``T`` is chosen from {0.5, 1, 1.5, 2} (``temperatures``) by AUROC of
ID ok | ID err on the dev mix (dev + corrupted dev), as the paper's C.2 tunes it on dev;
``method.temperature=1.5`` fixes it."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from uqbench.backbones.base import BackboneOutput
from uqbench.method import CostFacts, PostHocMethod
from uqbench.tuning import auroc_objective, check_range, grid

GRID = (0.5, 1.0, 1.5, 2.0)


def energy(logits: Tensor, temperature: float | Tensor = 1.0) -> Tensor:
    """``-T logsumexp(z / T)`` [B] for logits [B, C]."""
    return -temperature * torch.logsumexp(logits / temperature, dim=-1)


class Energy(PostHocMethod):
    """Args: ``temperature``: fixes T; ``temperatures``: the grid T is tuned over otherwise."""

    def __init__(
        self,
        backbone,
        temperature: float | None = None,
        temperatures: tuple[float, ...] = GRID,
        **kwargs,
    ) -> None:
        super().__init__(backbone, **kwargs)
        self.temperatures = grid(temperature, temperatures)
        check_range(self.temperatures, "method.temperature(s)", 0.0)
        self.register_buffer("temperature", torch.tensor(1.0))

    def search_space(self) -> dict[str, tuple[Any, ...]]:
        return {"temperature": self.temperatures}

    def tuning_scorer(self, data):
        mix = data.record("dev_mix")
        return lambda c: auroc_objective(energy(mix.out.logits, c["temperature"]), mix.errors)

    def apply(self, choice: dict[str, Any]) -> None:
        self.temperature.fill_(choice["temperature"])

    def score(self, out: BackboneOutput) -> Tensor:
        return energy(out.logits, self.temperature)

    def tuned(self) -> dict:
        return {"temperature": float(self.temperature)}

    def cost_facts(self) -> CostFacts:
        return CostFacts(extra_params=1, exports=("temperature T", "logsumexp"))

    def device_export(self):
        from uqbench.deploy.scores.logits import Energy as DeviceEnergy

        return DeviceEnergy(temperature=float(self.temperature))
