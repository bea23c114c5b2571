"""``odin``: temperature scaling plus input perturbation (Liang et al., 2018).

``x~ = x - epsilon * sign(grad_x CE(z(x) / T, argmax z(x)))`` (a step that raises the top
softmax score), then the score ``1 - max softmax(z(x~) / T)``. ``T`` and ``epsilon`` are chosen
on the dev mix by AUROC of ID ok | ID err from OpenOOD's grid (T in {1, 10, 100, 1000}, epsilon in
{0, 0.0005, 0.001, 0.0014, 0.002, 0.0024, 0.005, 0.01}); pass single values to fix them.
``epsilon = 0`` is the paper's ODIN-lite (temperature only). Epsilon is in the units of the
normalized input. Predictions come from the unperturbed logits.

ODIN needs the gradient with respect to the input, so it is the one post-hoc method that cannot
score from the shared record: it costs two forward passes and one backward pass per input.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from uqbench.method import CostFacts, UQMethod, UQOutput
from uqbench.tuning import best_by_auroc, check_range

TEMPERATURES = (1.0, 10.0, 100.0, 1000.0)
EPSILONS = (0.0, 0.0005, 0.001, 0.0014, 0.002, 0.0024, 0.005, 0.01)


class ODIN(UQMethod):
    """Args: ``temperatures`` (> 0) and ``epsilons`` (>= 0): the grids tuned over."""

    posthoc = True

    def __init__(
        self,
        backbone,
        temperatures: tuple[float, ...] = TEMPERATURES,
        epsilons: tuple[float, ...] = EPSILONS,
        **kwargs,
    ) -> None:
        super().__init__(backbone, **kwargs)
        check_range(temperatures, "method.temperatures", 0.0)
        check_range(epsilons, "method.epsilons", 0.0, low_inclusive=True)
        self.temperatures, self.epsilons = tuple(temperatures), tuple(epsilons)
        self.register_buffer("temperature", torch.tensor(1000.0))
        self.register_buffer("epsilon", torch.tensor(0.0014))

    def _gradient_sign(self, x: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            logits = self.backbone(x).logits
            loss = F.cross_entropy(logits / temperature, logits.argmax(-1))
            (grad,) = torch.autograd.grad(loss, x)
        return logits.detach(), grad.sign()

    def _score(self, x: Tensor, sign: Tensor, temperature: float, epsilon: float) -> Tensor:
        with torch.no_grad():
            logits = self.backbone(x - epsilon * sign).logits
        return 1.0 - (logits / temperature).softmax(-1).amax(-1)

    def forward(self, x: Tensor) -> UQOutput:
        t, eps = float(self.temperature), float(self.epsilon)
        logits, sign = self._gradient_sign(x, t)
        return UQOutput(logits, self._score(x, sign, t, eps))

    def calibrate(self, dev: DataLoader, dev_mix: DataLoader) -> None:
        self.eval()
        scores: dict[tuple[float, float], list[Tensor]] = {}
        errors = []
        for x, y in dev_mix:
            for t in self.temperatures:
                logits, sign = self._gradient_sign(x, t)
                for eps in self.epsilons:
                    scores.setdefault((t, eps), []).append(self._score(x, sign, t, eps))
            errors.append((logits.argmax(-1) != y).double())
        target = torch.cat(errors)
        best = best_by_auroc(
            itertools.product(self.temperatures, self.epsilons),
            lambda key: torch.cat(scores[key]),
            target,
        )
        self.temperature.fill_(best[0])
        self.epsilon.fill_(best[1])

    def tuned(self) -> dict:
        return {"temperature": float(self.temperature), "epsilon": float(self.epsilon)}

    def cost_facts(self) -> CostFacts:
        return CostFacts(
            forward_passes=2,
            extra_params=2,
            exports=("temperature", "epsilon", "input gradient"),
            details={"backward_passes": 1, "scores_from_shared_record": False},
        )
