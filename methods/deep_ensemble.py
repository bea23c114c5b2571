"""``deep_ensemble``: M independently initialized copies of the backbone (Lakshminarayanan et
al., 2017), trained together on the same batches, each with its own initialization (seeded from
the run's seed and the member's index). Probabilities are the members' mean softmax; the score is
the entropy of that mean (the predictive entropy; TorchUncertainty's mean of entropies differs).

The paper's C.2 chooses M from {3, 5} on dev: all ``members`` are trained, then the first 3 or
all of them are kept, whichever gives the higher AUROC of ID ok | ID err on the dev mix.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from uqbench.methods.entropy import entropy

from uqbench.backbones.base import count_macs, count_parameters
from uqbench.errors import ConfigError
from uqbench.method import CostFacts, UQMethod, UQOutput
from uqbench.tuning import best_by_auroc


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
        self.register_buffer("active", torch.tensor(members))

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

    @torch.no_grad()
    def calibrate(self, dev: DataLoader, dev_mix: DataLoader) -> None:
        self.eval()
        choices = sorted({m for m in (3, 5) if m < len(self.members)} | {len(self.members)})
        batches = [(self.member_probs(x, len(self.members)), y) for x, y in dev_mix]

        def dev_scores(count: int) -> Tensor:
            return torch.cat([entropy(probs[:count].mean(0)) for probs, _ in batches])

        def dev_errors(count: int) -> Tensor:
            return torch.cat([(p[:count].mean(0).argmax(-1) != y).double() for p, y in batches])

        self.active.fill_(best_by_auroc(choices, dev_scores, dev_errors))

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
