"""``early_exit``: an early-exit ensemble (Qendro et al., 2021; QUTE, Ghanathe & Wilton, 2024).

Exit heads (global average pooling, then a linear classifier) read intermediate taps; they and
the backbone's own classifier train jointly (the sum of their cross-entropies) and their softmax
outputs are averaged at inference, in one pass. Score: the entropy of the average (``entropy``)
or ``1 - max`` of it (``max_prob``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from uqbench.methods.entropy import entropy

from uqbench.errors import ConfigError
from uqbench.method import CostFacts, UQMethod, UQOutput


class EarlyExit(UQMethod):
    """Args: ``exits``: the taps with an exit head (default ``mid``: a linear exit on the
    stem's few pooled channels is near chance and only flattens the average);
    ``score_type``: ``entropy`` | ``max_prob``."""

    def __init__(
        self,
        backbone,
        exits: tuple[str, ...] = ("mid",),
        score_type: Literal["entropy", "max_prob"] = "entropy",
        **kwargs,
    ) -> None:
        super().__init__(backbone, **kwargs)
        names = tuple(exits)
        unknown = [n for n in names if n not in backbone.tap_names or n == "penultimate"]
        if unknown or not names:
            raise ConfigError(
                f"method.exits: {unknown or 'none given'} not usable; choose among "
                f"{', '.join(backbone.tap_names[:-1])}"
            )
        shapes = backbone.tap_shapes()
        self.exits = nn.ModuleDict(
            {n: nn.Linear(shapes[n][0], backbone.num_classes) for n in names}
        )
        self.score_type = score_type

    def all_logits(self, x: Tensor) -> list[Tensor]:
        """Logits of every exit, then of the backbone's classifier."""
        out = self.backbone(x)
        return [head(self.backbone.pool_tap(out.taps[n])) for n, head in self.exits.items()] + [
            out.logits
        ]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = sum(self.classification_loss(z, y) for z in self.all_logits(x))
        self.check_finite(loss, "loss")
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def forward(self, x: Tensor) -> UQOutput:
        mean = torch.stack([z.softmax(-1) for z in self.all_logits(x)]).mean(0)
        score = entropy(mean) if self.score_type == "entropy" else 1.0 - mean.amax(-1)
        return UQOutput(mean.clamp_min(1e-30).log(), score, mean)

    def cost_facts(self) -> CostFacts:
        params = sum(p.numel() for p in self.exits.parameters())
        macs = sum(head.in_features * head.out_features for head in self.exits.values())
        return CostFacts(
            extra_params=params,
            extra_macs=macs,
            exports=tuple(f"exit head at {n}" for n in self.exits),
        )

    def device_export(self):
        from uqbench.deploy.scores.early_exit import EarlyExit as DeviceEarlyExit

        constants = {}
        for i, head in enumerate(self.exits.values()):
            constants[f"exit_w_{i}"] = head.weight.detach().float().numpy()
            constants[f"exit_b_{i}"] = head.bias.detach().float().numpy()
        entropy = self.score_type == "entropy"
        return DeviceEarlyExit(tuple(self.exits), constants, entropy=entropy)
