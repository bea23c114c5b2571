"""``deep_ensemble``: M independently initialized copies of the backbone (Lakshminarayanan et
al., 2017), trained together on the same batches, each with its own initialization (seeded from
the run's seed and the member's index). Probabilities are the members' mean softmax; the score is
the entropy of that mean (the predictive entropy; TorchUncertainty's mean of entropies differs).

The paper's C.2 chooses M from {3, 5} on dev: ``trained`` members (default 5) are trained, then
the first 3 or all of them are kept, whichever gives the higher AUROC of ID ok | ID err on the
dev mix. ``method.members=M`` fixes M: exactly M members are trained and kept.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn
from uqbench.methods.entropy import entropy

from uqbench.backbones.base import count_macs, count_parameters
from uqbench.errors import ConfigError
from uqbench.method import CostFacts, UQMethod, UQOutput
from uqbench.tuning import auroc_objective


def reinitialized(module: nn.Module, seed: int) -> nn.Module:
    """A deep copy of ``module`` with every layer's parameters drawn afresh under ``seed``."""
    clone = copy.deepcopy(module)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for layer in clone.modules():
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
    return clone


class DeepEnsemble(UQMethod):
    """Args: ``members``: fixes M >= 1; ``trained``: members trained when M is tuned."""

    def __init__(self, backbone, members: int | None = None, trained: int = 5, **kwargs) -> None:
        count = members if members is not None else trained
        if count < 1:
            raise ConfigError(f"method.members (M) and method.trained must be >= 1, got {count}")
        super().__init__(backbone, **kwargs)
        base_seed = torch.initial_seed()
        self.members = nn.ModuleList(
            [backbone, *(reinitialized(backbone, base_seed + 7919 * m) for m in range(1, count))]
        )
        self.choices = (
            (count,)
            if members is not None
            else tuple(sorted({m for m in (3, 5) if m < count} | {count}))
        )
        self.register_buffer("active", torch.tensor(count))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        # Members share no parameters, so the summed loss trains each on its own gradient.
        loss = sum(self.classification_loss(member(x).logits, y) for member in self.members)
        self.check_finite(loss, "loss")
        self.log("train/loss", loss / len(self.members), on_step=False, on_epoch=True)
        return loss

    def member_probs(self, x: Tensor, count: int | None = None) -> Tensor:
        """[M, B, C] softmax of the first ``count`` members (default: the active ones)."""
        members = self.members[: int(self.active) if count is None else count]
        return torch.stack([member(x).logits.softmax(-1) for member in members])

    def search_space(self) -> dict[str, tuple[Any, ...]]:
        return {"members": self.choices}

    @torch.no_grad()
    def tuning_scorer(self, data):
        self.eval()
        batches = [(self.member_probs(x, len(self.members)), y) for x, y in data.loader("dev_mix")]

        def objective(choice: dict[str, Any]) -> float:
            m = choice["members"]
            scores = torch.cat([entropy(probs[:m].mean(0)) for probs, _ in batches])
            errors = torch.cat([(p[:m].mean(0).argmax(-1) != y).double() for p, y in batches])
            return auroc_objective(scores, errors)

        return objective

    def apply(self, choice: dict[str, Any]) -> None:
        self.active.fill_(choice["members"])

    def tuned(self) -> dict:
        return {"members": int(self.active), "trained": len(self.members)}

    def forward(self, x: Tensor) -> UQOutput:
        mean = self.member_probs(x).mean(0)
        return UQOutput(mean.clamp_min(1e-30).log(), entropy(mean), mean)

    def cost_facts(self) -> CostFacts:
        m = int(self.active)
        params = count_parameters(self.backbone)
        macs = count_macs(self.backbone, torch.zeros(1, *self.backbone.input_shape))
        return CostFacts(
            forward_passes=m,
            extra_params=(m - 1) * params,
            extra_macs=(m - 1) * macs,
            exports=(f"{m} backbones",),
        )

    def device_export(self):
        from uqbench.deploy.device_score import Ensemble
        from uqbench.deploy.scores.predictive import EnsembleEntropy

        return Ensemble(tuple(self.members[: int(self.active)]), EnsembleEntropy())
