"""``deep_ensemble``: M independently initialized copies of the backbone (Lakshminarayanan et
al., 2017), trained together on the same batches, each with its own initialization (seeded from
the run's seed and the member's index). Probabilities are the members' mean softmax; the score is
the entropy of that mean (the predictive entropy; TorchUncertainty's mean of entropies differs).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from uqbench.methods.entropy import entropy

from uqbench.backbones.base import count_macs, count_parameters
from uqbench.errors import ConfigError
from uqbench.method import CostFacts, UQMethod, UQOutput


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
    """Args: ``members`` M >= 1."""

    def __init__(self, backbone, members: int = 5, **kwargs) -> None:
        if members < 1:
            raise ConfigError(f"method.members (M) must be >= 1, got {members}")
        super().__init__(backbone, **kwargs)
        base_seed = torch.initial_seed()
        self.members = nn.ModuleList(
            [backbone, *(reinitialized(backbone, base_seed + 7919 * m) for m in range(1, members))]
        )

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        # Members share no parameters, so the summed loss trains each on its own gradient.
        loss = sum(self.classification_loss(member(x).logits, y) for member in self.members)
        self.check_finite(loss, "loss")
        self.log("train/loss", loss / len(self.members), on_step=False, on_epoch=True)
        return loss

    def member_probs(self, x: Tensor) -> Tensor:
        """[M, B, C] softmax of each member."""
        return torch.stack([member(x).logits.softmax(-1) for member in self.members])

    def forward(self, x: Tensor) -> UQOutput:
        mean = self.member_probs(x).mean(0)
        return UQOutput(mean.clamp_min(1e-30).log(), entropy(mean), mean)

    def cost_facts(self) -> CostFacts:
        m = len(self.members)
        params = count_parameters(self.backbone)
        macs = count_macs(self.backbone, torch.zeros(1, *self.backbone.input_shape))
        return CostFacts(
            forward_passes=m,
            extra_params=(m - 1) * params,
            extra_macs=(m - 1) * macs,
            exports=(f"{m} backbones",),
        )
