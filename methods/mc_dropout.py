"""``mc_dropout``: Monte Carlo dropout (Gal & Ghahramani, 2016) on the classifier's input.

Dropout with rate ``p`` acts on the pooled penultimate vector, in training and at inference;
one pass of the backbone's trunk is followed by ``N`` stochastic passes of the classifier,
whose softmax outputs are averaged. Score: ``entropy`` (predictive entropy ``H[mean p]``) or
``mutual_information`` (``H[mean p] - mean H[p]``). ``N`` and the score are chosen on the dev mix
by AUROC of ID ok | ID err from N in {5, 10} and both scores (the paper's C.2 grid) unless fixed
with ``method.samples`` / ``method.score_type``. With ``p = 0`` every pass is the deterministic
model. Inference masks come from a generator seeded per call, so evaluation is repeatable.

This is last-layer MC dropout: the suite's backbones have no dropout inside, so the trunk runs
once and only the classifier is sampled (its cost facts say so).
"""

from __future__ import annotations

import itertools
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader
from uqbench.methods.energy import _nan_low
from uqbench.methods.entropy import entropy

from uqbench.errors import ConfigError
from uqbench.method import CostFacts, UQMethod, UQOutput
from uqbench.metrics import auroc

SAMPLES_GRID = (5, 10)
SCORES = ("entropy", "mutual_information")
MASK_SEED = 0


class MCDropout(UQMethod):
    """Args: ``p`` in [0, 1); ``samples`` N >= 1 and ``score_type`` (None: tuned on dev)."""

    def __init__(
        self,
        backbone,
        p: float = 0.2,
        samples: int | None = None,
        score_type: Literal["entropy", "mutual_information"] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(backbone, **kwargs)
        if not 0 <= p < 1:
            raise ConfigError(f"method.p must be in [0, 1), got {p}")
        if samples is not None and samples < 1:
            raise ConfigError(f"method.samples (N) must be >= 1, got {samples}")
        self.p = p
        self.samples_grid = (samples,) if samples is not None else SAMPLES_GRID
        self.scores_grid = (score_type,) if score_type is not None else SCORES
        self.register_buffer("samples_used", torch.tensor(self.samples_grid[-1]))
        self.register_buffer("use_mutual_information", torch.tensor(score_type == SCORES[1]))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        pooled = self.backbone(x).pooled
        logits = self.backbone.forward_head(F.dropout(pooled, self.p, training=True))
        loss = self.classification_loss(logits, y)
        self.check_finite(loss, "loss")
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def sample_probs(self, pooled: Tensor, samples: int) -> Tensor:
        """[N, B, C] softmax of ``samples`` classifier passes under seeded dropout masks."""
        generator = torch.Generator().manual_seed(MASK_SEED)
        keep = torch.full((samples, *pooled.shape), 1.0 - self.p)
        masks = torch.bernoulli(keep, generator=generator) / (1.0 - self.p)
        return torch.stack([self.backbone.forward_head(pooled * m).softmax(-1) for m in masks])

    @staticmethod
    def _score(probs: Tensor, mutual_information: bool) -> Tensor:
        score = entropy(probs.mean(0))
        return score - entropy(probs).mean(0) if mutual_information else score

    def forward(self, x: Tensor) -> UQOutput:
        probs = self.sample_probs(self.backbone(x).pooled, int(self.samples_used))
        mean = probs.mean(0)
        score = self._score(probs, bool(self.use_mutual_information))
        return UQOutput(mean.clamp_min(1e-30).log(), score, mean)

    @torch.no_grad()
    def calibrate(self, dev: DataLoader, dev_mix: DataLoader) -> None:
        self.eval()
        pooled, errors = [], []
        for x, y in dev_mix:
            out = self.backbone(x)
            pooled.append(out.pooled)
            errors.append((out.logits.argmax(-1) != y).double())
        pooled_all, target = torch.cat(pooled), torch.cat(errors)

        def dev_auroc(choice: tuple[int, str]) -> float:
            probs = self.sample_probs(pooled_all, choice[0])
            return _nan_low(auroc(self._score(probs, choice[1] == SCORES[1]), target))

        samples, score = max(itertools.product(self.samples_grid, self.scores_grid), key=dev_auroc)
        self.samples_used.fill_(samples)
        self.use_mutual_information.fill_(score == SCORES[1])

    def tuned(self) -> dict:
        score = SCORES[1] if bool(self.use_mutual_information) else SCORES[0]
        return {"samples": int(self.samples_used), "score_type": score}

    def cost_facts(self) -> CostFacts:
        n = int(self.samples_used)
        head_macs = self.backbone.num_features * self.backbone.num_classes
        return CostFacts(
            forward_passes=1,
            extra_macs=(n - 1) * head_macs,
            exports=("dropout RNG", f"{n} classifier passes"),
            details={"trunk_passes": 1, "classifier_passes": n, "p": self.p},
        )
