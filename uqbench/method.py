"""The method contract: a LightningModule that returns logits and an uncertainty score.

Every method, first-party or plugin, subclasses :class:`UQMethod`. The runner knows only this:

- ``forward(x) -> UQOutput``: one inference; ``score`` is oriented so that **higher means more
  uncertain**, for every method, always.
- ``training_step``: cross-entropy on the backbone by default.
- ``calibrate(dev_loader)``: everything fitted on the dev split after training.
- ``cost_facts()``: what the method costs at inference beyond the backbone.
- ``posthoc = True`` marks a method that does not train: the runner loads (or trains once and
  caches) the base classifier for the (backbone, data, seed, training config) and reuses it.
  A method that trains on top of a frozen base overrides ``uses_base_model`` and ``trains``.

A post-hoc method implements only ``score(out)`` on a :class:`BackboneOutput`, so it can score
from a recorded forward pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor
from torch.utils.data import DataLoader

from uqbench.backbones.base import Backbone, BackboneOutput
from uqbench.errors import ConfigError, TrainingError


@dataclass
class UQOutput:
    """One inference. ``logits``: [B, C]; ``score``: [B], higher = more uncertain;
    ``probs``: [B, C] predictive probabilities (softmax of ``logits`` unless a method averages
    several passes or has its own posterior); ``extras``: per-method diagnostics."""

    logits: Tensor
    score: Tensor
    probs: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.probs is None:
            self.probs = self.logits.softmax(dim=-1)


@dataclass
class CostFacts:
    """Inference cost beyond the backbone, read by the deploy stage and the leaderboard.

    ``forward_passes``: backbone passes per inference. ``extra_params`` / ``extra_macs``: added
    by the method (per inference, MACs counted as multiply-accumulates). ``exports``: what must
    be shipped to firmware besides the backbone.
    """

    forward_passes: int = 1
    extra_params: int = 0
    extra_macs: int = 0
    exports: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class UQMethod(LightningModule):
    """Base class of every uncertainty method.

    Args:
        backbone: the classifier with named taps (injected by the runner).
        lr: initial learning rate.
        weight_decay: L2 weight decay of the optimizer.
        optimizer: ``adam``, ``adamw`` or ``sgd`` (momentum 0.9).
        schedule: ``cosine`` decays to ``min_lr`` over ``trainer.max_epochs``; ``constant``.
        min_lr: final learning rate of the cosine schedule.
    """

    posthoc: ClassVar[bool] = False

    def __init__(
        self,
        backbone: Backbone,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        optimizer: Literal["adam", "adamw", "sgd"] = "adam",
        schedule: Literal["cosine", "constant"] = "cosine",
        min_lr: float = 1e-5,
    ) -> None:
        super().__init__()
        if not lr > 0:
            raise ConfigError(f"method.lr must be > 0, got {lr}")
        if weight_decay < 0 or min_lr < 0:
            raise ConfigError("method.weight_decay and method.min_lr must be >= 0")
        self.backbone = backbone
        self.training_config = {
            "lr": lr,
            "weight_decay": weight_decay,
            "optimizer": optimizer,
            "schedule": schedule,
            "min_lr": min_lr,
        }

    def uses_base_model(self) -> bool:
        """Load the cached base classifier (training it once if missing) before anything else."""
        return self.posthoc

    def trains(self) -> bool:
        """Run ``trainer.fit`` on this method (after loading the base model, if it uses one)."""
        return not self.posthoc

    # ----------------------------------------------------------------- inference
    def score(self, out: BackboneOutput) -> Tensor:
        """Uncertainty [B] from one backbone pass; higher = more uncertain."""
        raise NotImplementedError(f"{type(self).__name__} must implement score() or forward()")

    def forward(self, x: Tensor) -> UQOutput:
        out = self.backbone(x)
        return UQOutput(out.logits, self.score(out))

    # ----------------------------------------------------------------- training
    def classification_loss(self, logits: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(logits, y)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = self.classification_loss(self.backbone(x).logits, y)
        self.check_finite(loss, "loss")
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log_dev_classification(self.backbone(x).logits, y)

    def log_dev_classification(self, logits: Tensor, y: Tensor) -> None:
        """Dev NLL and accuracy of the classifier, logged once per validation epoch."""
        self.log("dev/nll", F.cross_entropy(logits, y), prog_bar=True)
        self.log("dev/accuracy", (logits.argmax(-1) == y).float().mean(), prog_bar=True)

    def check_finite(self, value: Tensor, what: str) -> None:
        """Stop training with the epoch and step named when ``value`` is NaN or infinite."""
        if not torch.isfinite(value).all():
            raise TrainingError(
                f"non-finite training {what} ({value.detach().flatten()[0].item()}) at epoch "
                f"{self.current_epoch}, step {self.global_step}. Lower method.lr or clip "
                f"gradients with trainer.gradient_clip_val=1.0; no result was written."
            )

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer parameter groups; the default decays every trainable parameter."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "weight_decay": self.training_config["weight_decay"]}]

    def configure_optimizers(self) -> Any:
        cfg = self.training_config
        if cfg["optimizer"] == "sgd":
            opt = torch.optim.SGD(self.param_groups(), lr=cfg["lr"], momentum=0.9)
        else:
            kind = torch.optim.Adam if cfg["optimizer"] == "adam" else torch.optim.AdamW
            opt = kind(self.param_groups(), lr=cfg["lr"])
        if cfg["schedule"] == "constant":
            return opt
        epochs = max(int(self.trainer.max_epochs or 1), 1)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs, eta_min=cfg["min_lr"])
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    # ----------------------------------------------------------------- after training
    def calibrate(self, dev: DataLoader, dev_mix: DataLoader) -> None:
        """Fit post-training state on dev data (temperature, statistics, maps).

        ``dev``: the clean dev split. ``dev_mix``: the dev split plus a shifted copy of it (ID +
        CID, for maps that learn to predict errors under shift); equal to ``dev`` when the
        datamodule has no shifted dev set. The default fits nothing. Fitted state must live in
        buffers or parameters so that it is saved in the run's checkpoint.
        """
        return None

    def tuned(self) -> dict[str, Any]:
        """Hyperparameters chosen on dev by ``calibrate`` (written to ``metrics.json``)."""
        return {}

    def cost_facts(self) -> CostFacts:
        """Inference cost beyond the backbone; the default is one pass and nothing extra."""
        return CostFacts()


class BaseClassifier(UQMethod):
    """The plain cross-entropy classifier every post-hoc method starts from (trains a backbone
    in place; the runner caches the result)."""
