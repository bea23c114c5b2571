"""``odin``: temperature scaling plus input perturbation (Liang et al., 2018).

``x~ = x - epsilon * sign(grad_x CE(z(x) / T, argmax z(x)))`` (a step that raises the top
softmax score), then the score ``1 - max softmax(z(x~) / T)``. Predictions come from the
unperturbed logits. ``epsilon = 0`` is the paper's ODIN-lite (temperature only).

**Units.** ``epsilon`` is a step on the *normalized* input the backbone reads. ODIN, OpenOOD and
pytorch-ood state it in pixel units of [0, 1] images; a pixel step ``e`` on a datamodule that
normalizes with standard deviation ``s`` is ``e / s`` here (digits: s = 0.42, so OpenOOD's
0.0014 is 0.0033 here). The grid below is OpenOOD's, applied in normalized units.

**Tuning.** ODIN detects inputs from another distribution, so ``T`` and ``epsilon`` are chosen
on that task, not on ID ok | ID err (where it picks T = 1, epsilon = 0 and becomes MSP): by
AUROC of correctly classified clean dev inputs (negatives) against the shifted copy of dev
(positives, the datamodule's ``dev_shift_set``), the one shifted set the dev protocol has.
Grids: T in {1, 10, 100, 1000}, epsilon in {0, 0.0005, 0.001, 0.0014, 0.002, 0.0024, 0.005,
0.01}; ``method.temperature`` / ``method.epsilon`` fix either.

ODIN needs the gradient with respect to the input, so it cannot score from a recorded pass: it
costs two forward passes and one backward pass per input.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from uqbench.method import CostFacts, Needs, Objective, UQMethod, UQOutput
from uqbench.tuning import auroc_objective, check_range, grid

TEMPERATURES = (1.0, 10.0, 100.0, 1000.0)
EPSILONS = (0.0, 0.0005, 0.001, 0.0014, 0.002, 0.0024, 0.005, 0.01)
SHIFT_ON_DEV = Objective("AUROC of clean dev ok | shifted dev (dev_shift_set)")


class ODIN(UQMethod):
    """Args: ``temperature`` / ``epsilon`` fix either; else ``temperatures`` (> 0) and
    ``epsilons`` (>= 0) are the grids tuned over."""

    needs: ClassVar[Needs] = Needs(base=True, trains=False, scores_from="input_gradients")
    objective = SHIFT_ON_DEV

    def __init__(
        self,
        backbone,
        temperature: float | None = None,
        epsilon: float | None = None,
        temperatures: tuple[float, ...] = TEMPERATURES,
        epsilons: tuple[float, ...] = EPSILONS,
        **kwargs,
    ) -> None:
        super().__init__(backbone, **kwargs)
        self.temperatures = grid(temperature, temperatures)
        self.epsilons = grid(epsilon, epsilons)
        check_range(self.temperatures, "method.temperature(s)", 0.0)
        check_range(self.epsilons, "method.epsilon(s)", 0.0, low_inclusive=True)
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

    def search_space(self) -> dict[str, tuple[Any, ...]]:
        return {"temperature": self.temperatures, "epsilon": self.epsilons}

    def tuning_scorer(self, data):
        self.eval()
        scores: dict[tuple[float, float], list[Tensor]] = {}
        kept, positives = [], []  # clean dev: only correct predictions; shifted dev: all
        for split in ("dev", "dev_shift"):
            for x, y in data.loader(split):
                for t in self.temperatures:
                    logits, sign = self._gradient_sign(x, t)
                    for eps in self.epsilons:
                        scores.setdefault((t, eps), []).append(self._score(x, sign, t, eps))
                shifted = split == "dev_shift"
                kept.append((logits.argmax(-1) == y) | shifted)
                positives.append(torch.full_like(y, shifted, dtype=torch.float64))
        keep, target = torch.cat(kept), torch.cat(positives)

        def objective(choice: dict[str, Any]) -> float:
            score = torch.cat(scores[(choice["temperature"], choice["epsilon"])])
            return auroc_objective(score[keep], target[keep])

        return objective

    def apply(self, choice: dict[str, Any]) -> None:
        self.temperature.fill_(choice["temperature"])
        self.epsilon.fill_(choice["epsilon"])

    def tuned(self) -> dict:
        t, eps = float(self.temperature), float(self.epsilon)
        # T = 1 with no perturbation scores exactly as MSP does: say so in the record.
        return {"temperature": t, "epsilon": eps, "equivalent_to_msp": t == 1.0 and eps == 0.0}

    def cost_facts(self) -> CostFacts:
        return CostFacts(
            forward_passes=2,
            extra_params=2,
            exports=("temperature", "epsilon", "input gradient"),
            details={"backward_passes": 1, "scores_from_shared_record": False},
        )

    def device_export_reason(self) -> str:
        return (
            "ODIN perturbs the input along the gradient of its score, which needs a backward "
            "pass: a single int8 forward pass on the device cannot compute it"
        )
