"""``deep_ensemble``: M independently initialized copies of the backbone (Lakshminarayanan et
al., 2017). Probabilities are the members' mean softmax; the score is the entropy of that mean
(the predictive entropy; TorchUncertainty's mean of entropies differs).

Member 0 is the run's base classifier: the plain classifier the post-hoc methods start from,
trained once per (backbone, data, seed, training options) and cached, so a bench trains it once
for all of them. Members 1..M-1 are drawn afresh (each from its own seed: the run's seed and the
member's index) and trained together on the same batches, as member 0 was, each on its own loss.
Training is per member (a member's gradient and optimizer state never see another member's), so
member 0 trained beside them would end with the very weights the base has.

The paper's C.2 chooses M from {3, 5} on dev: ``trained`` members (default 5) are made, then
the first 3 or all of them are kept, whichever gives the higher AUROC of ID ok | ID err on the
dev mix. ``method.members=M`` fixes M: exactly M members are made and kept.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn
from uqbench.methods.entropy import entropy

from uqbench.backbones.base import count_macs, count_parameters
from uqbench.errors import ConfigError
from uqbench.method import CostFacts, Needs, UQMethod, UQOutput
from uqbench.tuning import auroc_objective


def reinitialized(module: nn.Module, seed: int) -> nn.Module:
    """A deep copy of ``module`` with every layer's parameters and buffers drawn afresh under
    ``seed`` (each layer's ``reset_parameters``)."""
    clone = copy.deepcopy(module)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for layer in clone.modules():
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
    return clone


def check_resettable(module: nn.Module) -> None:
    """Every parameter and buffer of ``module`` belongs to a layer with ``reset_parameters``:
    otherwise a member copied from the trained base would keep that tensor's trained values."""
    resettable = {
        id(tensor)
        for layer in module.modules()
        if hasattr(layer, "reset_parameters")
        for tensor in (*layer.parameters(recurse=False), *layer.buffers(recurse=False))
    }
    kept = [
        n
        for n, t in (*module.named_parameters(), *module.named_buffers())
        if id(t) not in resettable
    ]
    if kept:
        raise ConfigError(
            f"deep_ensemble draws members 1..M-1 afresh with each layer's reset_parameters(), "
            f"but {', '.join(kept[:3])}{' ...' if len(kept) > 3 else ''} belong to no layer "
            f"that has one, so those members would start from the base's trained values; use "
            f"a backbone whose parameters all sit in such layers (Conv, Linear, norms)"
        )


class DeepEnsemble(UQMethod):
    """Args: ``members``: fixes M >= 1; ``trained``: members made when M is tuned. ``backbone``
    is the trained base classifier: member 0, frozen."""

    @classmethod
    def needs_for(cls, options: dict[str, Any]) -> Needs:
        count = options.get("members") or options.get("trained", 5)
        return Needs(base=True, trains=count > 1, scores_from="inputs")

    def __init__(self, backbone, members: int | None = None, trained: int = 5, **kwargs) -> None:
        count = members if members is not None else trained
        if count < 1:
            raise ConfigError(f"method.members (M) and method.trained must be >= 1, got {count}")
        super().__init__(backbone, **kwargs)
        if count > 1:  # members to draw afresh
            check_resettable(backbone)
        base_seed = torch.initial_seed()
        self.members = nn.ModuleList(
            [backbone, *(reinitialized(backbone, base_seed + 7919 * m) for m in range(1, count))]
        )
        backbone.requires_grad_(False)  # member 0: the base, trained already
        self.choices = (
            (count,)
            if members is not None
            else tuple(sorted({m for m in (3, 5) if m < count} | {count}))
        )
        self.register_buffer("active", torch.tensor(count))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        # Members share no parameters, so the summed loss trains each on its own gradient.
        trained = self.members[1:]
        loss = sum(self.classification_loss(member(x).logits, y) for member in trained)
        self.check_finite(loss, "loss")
        self.log("train/loss", loss / len(trained), on_step=False, on_epoch=True)
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
