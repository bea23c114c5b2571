"""``temperature``: temperature scaling (Guo et al., 2017).

Probabilities ``softmax(z / T)`` with one scalar ``T > 0`` fitted on the clean dev split to
minimize NLL, either by L-BFGS on ``log T`` (``fit=lbfgs``, from T = 1) or by the paper's grid
{0.5, 0.75, 1, 1.25, 1.5, 2, 3} (``fit=grid``). Score ``1 - max softmax(z / T)``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from uqbench.backbones.base import BackboneOutput
from uqbench.errors import ConfigError
from uqbench.method import CostFacts, UQOutput
from uqbench.posthoc import PostHocMethod, Record

GRID = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)


def fit_temperature(
    logits: Tensor,
    labels: Tensor,
    method: Literal["lbfgs", "grid"] = "lbfgs",
    grid: tuple[float, ...] = GRID,
) -> float:
    """The T minimizing ``NLL(softmax(logits / T), labels)``."""
    logits, labels = logits.detach().double(), labels.long()
    if method == "grid":
        return min(grid, key=lambda t: float(F.cross_entropy(logits / t, labels)))
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


class Temperature(PostHocMethod):
    """Args: ``fit``: ``lbfgs`` or ``grid``."""

    def __init__(self, backbone, fit: Literal["lbfgs", "grid"] = "lbfgs", **kwargs) -> None:
        super().__init__(backbone, **kwargs)
        self.fit = fit
        self.register_buffer("temperature", torch.tensor(1.0))

    def fit_record(self, train: Record | None, dev: Record, dev_mix: Record) -> None:
        t = fit_temperature(dev.out.logits, dev.labels, self.fit)
        if not t > 0:
            raise ConfigError(f"temperature fit failed (T = {t}); try method.fit=grid")
        self.temperature.fill_(t)

    def output(self, out: BackboneOutput) -> UQOutput:
        probs = (out.logits / self.temperature).softmax(-1)
        return UQOutput(out.logits, 1.0 - probs.amax(-1), probs)

    def tuned(self) -> dict:
        return {"temperature": float(self.temperature), "fit": self.fit}

    def cost_facts(self) -> CostFacts:
        return CostFacts(extra_params=1, exports=("temperature T",))
