"""``mc_dropout``: Monte Carlo dropout (Gal & Ghahramani, 2016) on the classifier's input.

Dropout with rate ``p`` acts on the pooled penultimate vector, in training and at inference;
one pass of the backbone's trunk is followed by ``samples`` stochastic passes of the classifier,
whose softmax outputs are averaged. Score: ``entropy`` (predictive entropy ``H[mean p]``) or
``mutual_information`` (``H[mean p] - mean H[p]``). With ``p = 0`` every pass is the
deterministic model.

This is last-layer MC dropout: the suite's backbones have no dropout inside, so the trunk runs
once and only the classifier is sampled (its cost facts say so).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from uqbench.methods.entropy import entropy

from uqbench.backbones.base import count_parameters
from uqbench.errors import ConfigError
from uqbench.method import CostFacts, UQMethod, UQOutput


class MCDropout(UQMethod):
    """Args: ``p`` in [0, 1), ``samples`` N >= 1, ``score_type``."""

    def __init__(
        self,
        backbone,
        p: float = 0.2,
        samples: int = 10,
        score_type: Literal["entropy", "mutual_information"] = "entropy",
        **kwargs,
    ) -> None:
        super().__init__(backbone, **kwargs)
        if not 0 <= p < 1:
            raise ConfigError(f"method.p must be in [0, 1), got {p}")
        if samples < 1:
            raise ConfigError(f"method.samples (N) must be >= 1, got {samples}")
        self.p, self.samples, self.score_type = p, samples, score_type

    def classification_loss(self, logits: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(logits, y)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        pooled = self.backbone(x).pooled
        logits = self.backbone.forward_head(F.dropout(pooled, self.p, training=True))
        loss = self.classification_loss(logits, y)
        self.check_finite(loss, "loss")
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def forward(self, x: Tensor) -> UQOutput:
        pooled = self.backbone(x).pooled
        probs = torch.stack(
            [
                self.backbone.forward_head(F.dropout(pooled, self.p, training=True)).softmax(-1)
                for _ in range(self.samples)
            ]
        )  # [N, B, C]
        mean = probs.mean(0)
        score = entropy(mean)
        if self.score_type == "mutual_information":
            score = score - entropy(probs).mean(0)
        return UQOutput(mean.clamp_min(1e-30).log(), score, mean)

    def cost_facts(self) -> CostFacts:
        head = (
            count_parameters(self.backbone.classifier)
            if hasattr(self.backbone, "classifier")
            else 0
        )
        return CostFacts(
            forward_passes=1,
            extra_macs=(self.samples - 1) * head,
            exports=("dropout RNG", f"{self.samples} classifier passes"),
            details={"trunk_passes": 1, "classifier_passes": self.samples, "p": self.p},
        )
