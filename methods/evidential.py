"""``evidential``: evidential deep learning (Sensoy et al., 2018).

The classifier's outputs become non-negative evidence ``e = eta * softplus(z)`` (``eta``: the
evidence scale), ``alpha = e + 1`` are Dirichlet parameters and ``E[p] = alpha / S`` with
``S = sum_j alpha_j``. Training minimizes the Bayes risk of cross-entropy plus an annealed KL
term that shrinks misleading evidence::

    L = sum_j y_j (digamma(S) - digamma(alpha_j))
        + lambda_t KL(Dir(alpha~) || Dir(1)),   alpha~ = y + (1 - y) * alpha,
    lambda_t = lambda_evid * min(1, epoch / anneal_epochs)

Scores: ``max_prob`` = ``1 - max E[p]`` or ``vacuity`` = ``C / S`` (total uncertainty); higher
is more uncertain either way. Probabilities are ``E[p]``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from uqbench.errors import ConfigError
from uqbench.method import UQMethod, UQOutput


def dirichlet_kl_to_uniform(alpha: Tensor) -> Tensor:
    """KL(Dir(alpha) || Dir(1, ..., 1)) [B] for alpha [B, C]."""
    c = alpha.shape[-1]
    total = alpha.sum(-1)
    return (
        torch.lgamma(total)
        - math.lgamma(c)
        - torch.lgamma(alpha).sum(-1)
        + ((alpha - 1) * (torch.digamma(alpha) - torch.digamma(total)[:, None])).sum(-1)
    )


def evidential_loss(alpha: Tensor, labels: Tensor, kl_weight: float) -> Tensor:
    """Mean over the batch of the digamma Bayes risk plus ``kl_weight`` times the KL term."""
    onehot = F.one_hot(labels, alpha.shape[-1]).to(alpha.dtype)
    risk = (onehot * (torch.digamma(alpha.sum(-1, keepdim=True)) - torch.digamma(alpha))).sum(-1)
    kept = onehot + (1 - onehot) * alpha
    return (risk + kl_weight * dirichlet_kl_to_uniform(kept)).mean()


class Evidential(UQMethod):
    """Args: ``eta`` (evidence scale, > 0), ``lambda_evid`` (KL weight, >= 0), ``anneal_epochs``,
    ``score_type``: ``max_prob`` | ``vacuity``."""

    def __init__(
        self,
        backbone,
        eta: float = 1.0,
        lambda_evid: float = 1e-2,
        anneal_epochs: int = 10,
        score_type: Literal["max_prob", "vacuity"] = "max_prob",
        **kwargs,
    ) -> None:
        super().__init__(backbone, **kwargs)
        if eta <= 0 or lambda_evid < 0 or anneal_epochs < 0:
            raise ConfigError("method.eta must be > 0, method.lambda_evid and anneal_epochs >= 0")
        self.eta, self.lambda_evid, self.anneal_epochs = eta, lambda_evid, anneal_epochs
        self.score_type = score_type

    def alpha(self, logits: Tensor) -> Tensor:
        return self.eta * F.softplus(logits) + 1.0

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        ramp = min(1.0, self.current_epoch / self.anneal_epochs) if self.anneal_epochs else 1.0
        loss = evidential_loss(self.alpha(self.backbone(x).logits), y, self.lambda_evid * ramp)
        self.check_finite(loss, "loss")
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def forward(self, x: Tensor) -> UQOutput:
        logits = self.backbone(x).logits
        alpha = self.alpha(logits)
        total = alpha.sum(-1)
        probs = alpha / total[:, None]
        if self.score_type == "vacuity":
            score = alpha.shape[-1] / total
        else:
            score = 1.0 - probs.amax(-1)
        return UQOutput(logits, score, probs)

    def device_export(self):
        from uqbench.deploy.scores.evidential import Evidential as DeviceEvidential

        return DeviceEvidential(eta=float(self.eta), vacuity=self.score_type == "vacuity")
