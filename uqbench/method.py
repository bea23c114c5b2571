"""The method contract: a LightningModule that returns logits and an uncertainty score.

Every method, first-party or plugin, subclasses :class:`UQMethod` (or :class:`PostHocMethod`).
The runner knows only this:

- ``needs`` (:class:`Needs`), declared once: whether the method starts from the cached base
  classifier, whether it trains, and what it scores from (a recorded backbone pass, raw inputs,
  or input gradients). A method whose needs depend on an option overrides ``needs_for``.
- ``forward(x) -> UQOutput``: one inference; ``score`` is oriented so that **higher means more
  uncertain**, for every method, always, and an example's score never depends on its batch.
- ``training_step``: cross-entropy on the backbone by default.
- ``calibrate(data)``: the one post-training hook; ``data`` (:class:`~uqbench.dev_data.DevData`)
  gives lazy access to the train, dev and dev-mix splits as loaders or recorded passes.
- ``search_space()``: the hyperparameters tuned on dev and their grids, searched by the shared
  loop (:func:`uqbench.tuning.tune`) with ``tuning_scorer`` and applied with ``apply``.
- ``tuned()`` and ``cost_facts()``: what was fitted, and what inference costs beyond the backbone.

A method with anything to fit after training (it overrides ``calibrate`` or has a search space)
refuses to score until the runner has calibrated it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import typing
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor

from uqbench.backbones.base import Backbone, BackboneOutput
from uqbench.errors import CalibrationError, ConfigError, TrainingError

if TYPE_CHECKING:
    from uqbench.dev_data import DevData
    from uqbench.recorded_pass import TapRequest

ScoresFrom = Literal["record", "inputs", "input_gradients"]


@dataclass(frozen=True)
class Needs:
    """What a method needs from the runner.

    ``base``: start from the base classifier cached for (backbone, data, seed, training config):
    the runner trains or loads it before the method is built and passes the trained backbone.
    ``trains``: run ``trainer.fit`` on the method. ``scores_from``: ``record`` (``output`` of a
    :class:`BackboneOutput`, so one recorded pass per split serves a whole group), ``inputs`` (its
    own ``forward``), ``input_gradients`` (its own ``forward``, which differentiates the input).
    """

    base: bool = False
    trains: bool = True
    scores_from: ScoresFrom = "inputs"


@dataclass(frozen=True)
class Objective:
    """What the tuning loop maximizes (or minimizes), described for the report."""

    description: str
    higher_is_better: bool = True


ERRORS_ON_DEV_MIX = Objective("AUROC of ID ok | ID err on the dev mix (dev + shifted dev)")


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


def _checked_init(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap a method's ``__init__`` so that its options are checked against their annotations
    when it is built from Python too (``ASH(mode="x")`` is an error, not ASH-P)."""
    from uqbench.config import coerce

    signature = inspect.signature(init)
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # noqa: BLE001 - unresolvable annotations are left unchecked
        hints = {}

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        for name, value in list(bound.arguments.items()):
            parameter = signature.parameters[name]
            if name in ("self", "backbone") or parameter.kind is parameter.VAR_KEYWORD:
                continue
            if name in hints:
                bound.arguments[name] = coerce(value, hints[name], f"method.{name}")
        init(*bound.args, **bound.kwargs)

    wrapper.__uqbench_checked__ = True  # type: ignore[attr-defined]
    return wrapper


class UQMethod(LightningModule):
    """Base class of every uncertainty method.

    Args:
        backbone: the classifier with named taps (injected by the runner; already trained when
            ``needs.base``).
        lr: initial learning rate.
        weight_decay: L2 weight decay of the optimizer.
        optimizer: ``adam``, ``adamw`` or ``sgd`` (momentum 0.9).
        schedule: ``cosine`` decays to ``min_lr`` over ``trainer.max_epochs``; ``constant``.
        min_lr: final learning rate of the cosine schedule.
        label_smoothing: cross-entropy label smoothing in [0, 1) (0: none).
    """

    needs: ClassVar[Needs] = Needs()
    objective: Objective = ERRORS_ON_DEV_MIX

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in vars(cls) and not hasattr(cls.__init__, "__uqbench_checked__"):
            cls.__init__ = _checked_init(cls.__init__)

    def __init__(
        self,
        backbone: Backbone,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        optimizer: Literal["adam", "adamw", "sgd"] = "adam",
        schedule: Literal["cosine", "constant"] = "cosine",
        min_lr: float = 1e-5,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if not lr > 0:
            raise ConfigError(f"method.lr must be > 0, got {lr}")
        if not 0 <= label_smoothing < 1:
            raise ConfigError(f"method.label_smoothing must be in [0, 1), got {label_smoothing}")
        if weight_decay < 0 or min_lr < 0:
            raise ConfigError("method.weight_decay and method.min_lr must be >= 0")
        self.backbone = backbone
        self.training_config = {
            "lr": lr,
            "weight_decay": weight_decay,
            "optimizer": optimizer,
            "schedule": schedule,
            "min_lr": min_lr,
            "label_smoothing": label_smoothing,
        }
        # Persistent, so a checkpoint says whether its method was calibrated (uqbench test).
        self.register_buffer("calibrated", torch.tensor(False))
        self.register_forward_pre_hook(_check_before_forward)

    @classmethod
    def needs_for(cls, options: dict[str, Any]) -> Needs:
        """The needs of this class built with ``options`` (the default ignores the options)."""
        return cls.needs

    # ----------------------------------------------------------------- inference
    def score(self, out: BackboneOutput) -> Tensor:
        """Uncertainty [B] from one backbone pass; higher = more uncertain."""
        raise NotImplementedError(f"{type(self).__name__} must implement score() or forward()")

    def output(self, out: BackboneOutput) -> UQOutput:
        """Logits, score and probabilities from one backbone pass (recorded or live)."""
        return UQOutput(out.logits, self.score(out))

    def forward(self, x: Tensor) -> UQOutput:
        return self.output(self.backbone(x))

    def variant_scores(self, out: UQOutput) -> dict[str, Tensor]:
        """Ablation scores [B] from the same inference, named (``surprisal``, ``tap_mid``...),
        each oriented like ``score``: what the score is made of, shown on the leaderboards as
        rows of their own. The default has none."""
        return {}

    def record_request(self) -> TapRequest:
        """The taps and maps a record-scored method reads beyond logits and the pooled vector."""
        from uqbench.recorded_pass import TapRequest

        return TapRequest()

    def requires_calibration(self) -> bool:
        """True when anything is fitted after training (``calibrate`` or a search space)."""
        return type(self).calibrate is not UQMethod.calibrate or bool(self.search_space())

    def check_calibrated(self) -> None:
        """Refuse to score an uncalibrated method instead of returning a silent number."""
        if not bool(self.calibrated) and self.requires_calibration():
            raise CalibrationError(
                f"{type(self).__name__} fits state after training and has not been calibrated: "
                f"call uqbench.calibrate_method(method, data) (the runner does) before scoring"
            )

    # ----------------------------------------------------------------- training
    def classification_loss(self, logits: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(logits, y, label_smoothing=self.training_config["label_smoothing"])

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = self.classification_loss(self.backbone(x).logits, y)
        self.check_finite(loss, "loss")
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        with self.provisional_scores():
            out = self(x)
        self.log_dev(out, y)

    # ----------------------------------------------------------------- Lightning evaluation
    def on_test_epoch_start(self) -> None:
        self.check_calibrated()
        self._test_chunks: list[tuple[Any, ...]] = []

    def test_step(
        self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Collect one batch of an evaluation set (``dataloader_idx``: its position in
        ``datamodule.evaluation_names()``); the metrics are computed at the epoch's end."""
        from uqbench.predictions import chunk

        x, y = batch
        self._test_chunks.append(chunk(self, self(x), y, dataloader_idx))

    def on_test_epoch_end(self) -> None:
        """Every metric of ``uqbench fit``'s table on the collected sets: kept in
        ``test_metrics`` (nested, as in ``metrics.json``) and ``test_predictions``
        (:class:`~uqbench.predictions.Predictions`), and logged as ``test/<metric path>``, so
        ``trainer.test(method, datamodule)`` returns them. With a
        :class:`~uqbench.datamodule.UQDataModule` the sets are named as in a run folder."""
        from uqbench.metric_table import compute_metrics, flat_metrics
        from uqbench.predictions import Predictions

        datamodule = getattr(self.trainer, "datamodule", None)
        count = 1 + max(c[3] for c in self._test_chunks)
        names = (
            datamodule.evaluation_names()
            if hasattr(datamodule, "evaluation_names")
            else [f"set{k}" for k in range(count)]
        )
        self.test_predictions = Predictions.from_chunks(self._test_chunks, names)
        # The table fits a temperature by gradient descent; Lightning tests without gradients.
        with torch.inference_mode(False), torch.enable_grad():
            self.test_metrics = compute_metrics(self.test_predictions)
        for key, value in flat_metrics(self.test_metrics).items():
            self.log(f"test/{key}", value, add_dataloader_idx=False)

    def predict_step(
        self, batch: tuple[Tensor, Tensor] | Tensor, batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Tensor]:
        """Per example: ``logits`` [B, C], ``probs`` [B, C] and ``score`` [B] (higher = more
        uncertain), on the device; a batch may be ``(x, y)`` or ``x``."""
        self.check_calibrated()
        x = batch[0] if isinstance(batch, list | tuple) else batch
        out = self(x)
        return {"logits": out.logits, "probs": out.probs, "score": out.score}

    @contextlib.contextmanager
    def provisional_scores(self) -> Iterator[None]:
        """Score before calibration, for the dev log during training only (the maps and
        tuned values are not fitted yet, so these scores are provisional)."""
        was = bool(self.calibrated)
        self.calibrated.fill_(True)
        try:
            yield
        finally:
            self.calibrated.fill_(was)

    def log_dev(self, out: UQOutput, y: Tensor) -> None:
        """Dev NLL, accuracy and the failure-detection AUROC (ID ok | ID err on clean dev),
        logged once per validation epoch through Lightning (so W&B plots them as it trains),
        under ``provisional/dev/``: during training the score is not calibrated yet (no maps,
        no tuned values), so these are not the final method's; ``dev/...`` is logged once
        calibration is done."""
        from uqbench.metrics import AUROC

        if not hasattr(self, "dev_auroc"):
            self.dev_auroc = AUROC().to(self.device)  # a child module: Lightning computes it
        probs = out.probs.clamp_min(1e-12)
        self.log("provisional/dev/nll", F.nll_loss(probs.log(), y), prog_bar=True)
        errors = out.probs.argmax(-1) != y
        self.log("provisional/dev/accuracy", 1.0 - errors.float().mean(), prog_bar=True)
        self.dev_auroc.update(out.score.detach(), errors)
        self.log("provisional/dev/auroc_id_vs_error", self.dev_auroc, on_step=False, on_epoch=True)

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

    # ----------------------------------------------------------------- on the device
    def device_export(self) -> Any | None:
        """What runs on the device after the backbone: a
        :class:`~uqbench.deploy.device_score.DeviceScore` (its taps, constants, host reference
        and C source), an :class:`~uqbench.deploy.device_score.Ensemble` of networks with one,
        or None when the method has no device form (:meth:`device_export_reason` then says
        why). ``uqbench.testing.device_score_checks`` checks what it returns."""
        return None

    def device_export_reason(self) -> str:
        return (
            f"{type(self).__name__} does not describe its device export (device_export() "
            f"returns None)"
        )

    # ----------------------------------------------------------------- after training
    def calibrate(self, data: DevData) -> None:
        """Fit post-training state (statistics, maps) from ``data``; the default fits nothing.

        ``data.loader("dev")`` / ``data.record("dev")`` give the clean dev split as batches or
        as a recorded pass; ``"dev_mix"`` is dev plus a shifted copy (ID + CID, for maps that
        learn to predict errors under shift); ``"train"`` the training split. Fitted state must
        live in buffers or parameters so that the run's checkpoint holds it.
        """
        return None

    def search_space(self) -> dict[str, tuple[Any, ...]]:
        """Hyperparameters tuned on dev, each with its candidates (one candidate: fixed)."""
        return {}

    def tuning_scorer(self, data: DevData) -> Callable[[dict[str, Any]], float]:
        """A function from one candidate (a value per hyperparameter) to its dev objective."""
        raise NotImplementedError(f"{type(self).__name__} has a search space but no scorer")

    def apply(self, choice: dict[str, Any]) -> None:
        """Set the chosen candidate (in buffers, so the checkpoint holds it)."""
        raise NotImplementedError(f"{type(self).__name__} has a search space but no apply()")

    def tuned(self) -> dict[str, Any]:
        """Values fitted on dev by ``calibrate`` (written to ``metrics.json``)."""
        return {}

    def cost_facts(self) -> CostFacts:
        """Inference cost beyond the backbone; the default is one pass and nothing extra."""
        return CostFacts()


UQMethod.__init__ = _checked_init(UQMethod.__init__)


def _check_before_forward(module: UQMethod, args: Any) -> None:
    """Every inference refuses an uncalibrated method, except inside Lightning's ``fit``:
    there its DDP wrapper calls ``training_step`` and ``validation_step`` through ``forward``,
    and the dev log scores provisionally."""
    trainer = module._trainer
    if trainer is not None and trainer.state.fn == "fit" and trainer.state.status == "running":
        return
    module.check_calibrated()  # type: ignore[method-assign]


class PostHocMethod(UQMethod):
    """A method that never trains: it scores a :class:`BackboneOutput` of the cached base.

    Subclasses implement ``score`` (or ``output`` if they change the probabilities or logits),
    may fit state in ``calibrate`` and declare taps they read in ``record_request``.
    """

    needs: ClassVar[Needs] = Needs(base=True, trains=False, scores_from="record")


class BaseClassifier(UQMethod):
    """The plain cross-entropy classifier every ``needs.base`` method starts from (trains a
    backbone in place; the base-model stage caches the result). Its dev log scores by MSP."""

    def score(self, out: BackboneOutput) -> Tensor:
        return 1.0 - out.logits.softmax(-1).amax(-1)
