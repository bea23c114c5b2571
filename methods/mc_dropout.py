"""``mc_dropout``: Monte Carlo dropout (Gal & Ghahramani, 2016).

Dropout with rate ``p`` is active in training and at inference, and ``N`` stochastic passes are
averaged. Where it acts (``placement``):

- ``taps`` (default): on the output of every tapped block (forward hooks on the backbone's tap
  modules) and on the classifier's input. Each of the N passes runs the whole network, as the
  paper's MCD does, so it costs N forward passes (on the host the first tap module, before any
  dropout, computes once for the N passes of a batch: the same output N times).
- ``head``: only on the classifier's input (last-layer MC dropout): the trunk runs once, the
  classifier N times.

Score: ``entropy`` (predictive entropy ``H[mean p]``) or ``mutual_information``
(``H[mean p] - mean H[p]``). ``N`` and the score are chosen on the dev mix by AUROC of
ID ok | ID err from N in {5, 10} and both scores (the paper's C.2 grid) unless fixed with
``method.samples`` / ``method.score_type``. With ``p = 0`` every pass is the deterministic model.

At inference each pass has one mask per dropout site, shared by every example of the batch,
from a counter-based generator (``uqbench.dropout_masks``: a hash of the site, the pass and the
element): the N passes are N fixed sub-networks, so an example's score never depends on the
batch it is in, evaluation is repeatable, the first n passes of N are the passes of n, and a
microcontroller regenerates the same masks instead of storing them. Training uses ordinary
per-example dropout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from uqbench.methods.entropy import entropy

from uqbench import dropout_masks
from uqbench.backbones.base import count_macs
from uqbench.errors import ConfigError
from uqbench.method import CostFacts, UQMethod, UQOutput
from uqbench.tuning import auroc_objective, grid

SAMPLES_GRID = (5, 10)
SCORES = ("entropy", "mutual_information")


class MCDropout(UQMethod):
    """Args: ``p`` in [0, 1); ``placement``: ``taps`` | ``head``; ``samples`` N >= 1 and
    ``score_type`` (None: tuned on dev)."""

    def __init__(
        self,
        backbone,
        p: float = 0.1,
        placement: Literal["taps", "head"] = "taps",
        samples: int | None = None,
        score_type: Literal["entropy", "mutual_information"] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(backbone, **kwargs)
        if not 0 <= p < 1:
            raise ConfigError(f"method.p must be in [0, 1), got {p}")
        if samples is not None and samples < 1:
            raise ConfigError(f"method.samples (N) must be >= 1, got {samples}")
        self.p, self.placement = p, placement
        self.samples_grid = grid(samples, SAMPLES_GRID)
        self.scores_grid = grid(score_type, SCORES)
        self.register_buffer("samples_used", torch.tensor(self.samples_grid[-1]))
        self.register_buffer("use_mutual_information", torch.tensor(score_type == SCORES[1]))
        self._dropping = False
        self._pass_index: int | None = None  # set: the fixed masks of this pass (inference)
        self._sites: tuple[str, ...] = ("head",)  # dropout sites, numbered for the masks
        self._tap_modules: tuple[nn.Module, ...] = ()  # a tuple: not registered twice
        if placement == "taps":
            try:
                modules = backbone.tap_modules()
            except NotImplementedError as exc:
                raise ConfigError(
                    f"{exc}; MC dropout at the taps hooks those modules. Use "
                    f"method.placement=head (dropout on the classifier's input only)"
                ) from exc
            for name, module in modules.items():
                module.register_forward_hook(partial(self._tap_dropout, name))
            self._sites = (*modules, "head")
            self._tap_modules = tuple(modules.values())

    def _drop(self, x: Tensor, site: str) -> Tensor:
        """Dropout at ``site`` (a tap's name, or ``head``: the classifier's input)."""
        if self.p == 0:
            return x
        if self._pass_index is None:
            return F.dropout(x, self.p, training=True)
        # The pass's fixed mask of this site, shared across the batch (batch-invariant scores).
        site_index = self._sites.index(site)
        return torch.ops.uqbench.dropout(x, site_index, self._pass_index, self.p)

    def _tap_dropout(self, site: str, _module: Any, _inputs: Any, output: Tensor) -> Tensor | None:
        return self._drop(output, site) if self._dropping else None

    def _stochastic(self, fn: Callable[[], Any], pass_index: int | None) -> Any:
        """``fn`` with dropout on: per-example masks (``pass_index`` None: training) or the fixed
        masks of pass ``pass_index``."""
        self._dropping, self._pass_index = True, pass_index
        try:
            return fn()
        finally:
            self._dropping, self._pass_index = False, None

    def _pass(self, x: Tensor) -> Tensor:
        """Logits of one stochastic pass (dropout at the taps, if placed there, and the head)."""
        return self.backbone.forward_head(self._drop(self.backbone(x).pooled, "head"))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = self.classification_loss(self._stochastic(lambda: self._pass(x), None), y)
        self.check_finite(loss, "loss")
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def sample_probs(self, x: Tensor, samples: int) -> Tensor:
        """[N, B, C] softmax of ``samples`` stochastic passes under their fixed masks."""

        def passes() -> Tensor:
            if self.placement == "head":
                self._dropping = False
                pooled = self.backbone(x).pooled
                self._dropping = True
            logits = []
            for k in range(samples):
                self._pass_index = k
                head = pooled if self.placement == "head" else self.backbone(x).pooled
                logits.append(self.backbone.forward_head(self._drop(head, "head")))
            return torch.stack(logits).softmax(-1)

        taps = self.placement == "taps" and self.p > 0
        with _first_stage_once(self._tap_modules, x) if taps else nullcontext():
            return self._stochastic(passes, 0)

    @staticmethod
    def _score(probs: Tensor, mutual_information: bool) -> Tensor:
        score = entropy(probs.mean(0))
        return score - entropy(probs).mean(0) if mutual_information else score

    def forward(self, x: Tensor) -> UQOutput:
        probs = self.sample_probs(x, int(self.samples_used))
        mean = probs.mean(0)
        score = self._score(probs, bool(self.use_mutual_information))
        return UQOutput(mean.clamp_min(1e-30).log(), score, mean)

    def search_space(self) -> dict[str, tuple[Any, ...]]:
        return {"samples": self.samples_grid, "score_type": self.scores_grid}

    @torch.no_grad()
    def tuning_scorer(self, data):
        self.eval()
        most = max(self.samples_grid)
        batches = [(self.sample_probs(x, most), y) for x, y in data.loader("dev_mix")]

        # The first n passes of N are the passes of n; N changes the predictions too.
        def objective(choice: dict[str, Any]) -> float:
            n, mutual = choice["samples"], choice["score_type"] == SCORES[1]
            scores = torch.cat([self._score(p[:n], mutual) for p, _ in batches])
            errors = torch.cat([(p[:n].mean(0).argmax(-1) != y).double() for p, y in batches])
            return auroc_objective(scores, errors)

        return objective

    def apply(self, choice: dict[str, Any]) -> None:
        self.samples_used.fill_(choice["samples"])
        self.use_mutual_information.fill_(choice["score_type"] == SCORES[1])

    def tuned(self) -> dict:
        score = SCORES[1] if bool(self.use_mutual_information) else SCORES[0]
        return {"samples": int(self.samples_used), "score_type": score}

    def cost_facts(self) -> CostFacts:
        n = int(self.samples_used)
        if self.placement == "head":
            head_macs = self.backbone.num_features * self.backbone.num_classes
            return CostFacts(
                forward_passes=1,
                extra_macs=(n - 1) * head_macs,
                exports=("dropout RNG", f"{n} classifier passes"),
                details={"trunk_passes": 1, "classifier_passes": n, "p": self.p},
            )
        macs = count_macs(self.backbone, torch.zeros(1, *self.backbone.input_shape))
        return CostFacts(
            forward_passes=n,
            extra_macs=(n - 1) * macs,
            exports=("dropout RNG",),
            details={"placement": "taps", "p": self.p},
        )

    def device_export(self):
        """MC dropout on the device. ``placement=taps``: N whole passes, each the network with
        its pass's masks at the taps and the classifier's input (the int8 graph multiplies by
        the mask; the firmware regenerates it from the counter-based generator), run one after
        another like an ensemble's members. ``placement=head``: the classifier N times on the
        pooled vector, the N masks as constants (keep / (1 - p)). The score: the same entropy
        or mutual information."""
        from uqbench.deploy.device_score import Ensemble
        from uqbench.deploy.scores.classifier import linear_head
        from uqbench.deploy.scores.predictive import DropoutHead, EnsembleEntropy

        n = int(self.samples_used)
        mutual = bool(self.use_mutual_information)
        if self.placement == "taps":
            passes = tuple(_FixedPass(self, k) for k in range(n))
            score = EnsembleEntropy(mutual_information=mutual)
            return Ensemble(passes, score, what="MC dropout passes")
        constants = linear_head(self.backbone)
        if constants is None:
            return None
        d, head = constants["classifier_w"].shape[1], self._sites.index("head")
        masks = [dropout_masks.keep((d,), head, k, self.p) / (1.0 - self.p) for k in range(n)]
        constants["masks"] = torch.stack(masks).float().numpy()
        return DropoutHead(("penultimate",), constants, mutual_information=mutual)

    def device_export_reason(self) -> str:
        return (
            "last-layer MC dropout exports only with a linear classifier "
            "(backbone.classifier as the head)"
        )


@contextmanager
def _first_stage_once(modules: Iterable[nn.Module], x: Tensor) -> Iterator[None]:
    """While open, a module of ``modules`` (the tap modules) called on ``x`` itself, the
    network's input, or on a slice of it, computes once and returns that output again. Such a
    module is a first stage: every dropout site comes after it (its dropout is a hook on its
    output), so the N passes of a batch compute it N times from the same input with the same
    weights (on the digits CNN, the stem is about half of a pass). The result is exact, not
    approximate: it is the output the module computes. An output or input changed in place
    since (its version counter moved) is computed again."""
    own = [(module, module.__dict__.get("forward")) for module in modules]
    for module, _ in own:
        # An instance attribute: nn.Module calls it, hooks included.
        module.forward = _Once(module.forward, x)
    try:
        yield
    finally:
        for module, forward in own:  # each module as it was
            if forward is None:
                del module.forward
            else:
                module.forward = forward


class _Once:
    """A module's ``forward`` that keeps its output for one input tensor, or for each slice of it
    (the CPU runs a large batch through the backbone in slices; see above)."""

    def __init__(self, forward: Callable[..., Any], x: Tensor) -> None:
        self.forward, self.x, self.x_version = forward, x, x._version
        self.base = x if x._base is None else x._base  # what a slice of x is a view of
        self.kept: dict[tuple[Any, ...], tuple[Tensor, int]] = {}  # slice -> output, version

    def _slice(self, t: Any) -> tuple[Any, ...] | None:
        """Where ``t`` lies in ``x`` if it is ``x`` or a view of the same tensor; None else."""
        if not isinstance(t, Tensor) or self.x._version != self.x_version:
            return None  # x changed in place since the passes began
        if t is not self.x and t._base is not self.base:
            return None
        return t.storage_offset(), tuple(t.shape), t.stride()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        where = self._slice(args[0]) if len(args) == 1 and not kwargs else None
        if where is None:
            return self.forward(*args, **kwargs)
        out, version = self.kept.get(where, (None, 0))
        if out is None or out._version != version:
            out = self.forward(args[0])
            self.kept[where] = out, out._version
        return out


class _FixedPass(torch.nn.Module):
    """Pass ``index`` of MC dropout at the taps as a deterministic network (the backbone
    interface the int8 converter reads): the backbone with that pass's masks at the taps
    (through the method's hooks) and on the classifier's input."""

    def __init__(self, method: MCDropout, index: int) -> None:
        super().__init__()
        self.backbone = method.backbone
        self.method = [method]  # a plain list: not a submodule of the pass
        self.index = index
        self.input_shape = method.backbone.input_shape

    def _in_pass(self, fn: Callable[[], Any]) -> Any:
        return self.method[0]._stochastic(fn, self.index)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        return self._in_pass(lambda: self.backbone.forward_features(x))

    def pool(self, features: Tensor) -> Tensor:
        return self.backbone.pool(features)

    def pool_tap(self, features: Tensor) -> Tensor:
        return self.backbone.pool_tap(features)

    def forward_head(self, pooled: Tensor) -> Tensor:
        head = self._in_pass(lambda: self.method[0]._drop(pooled, "head"))
        return self.backbone.forward_head(head)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.pool(self.forward_features(x)["penultimate"]))
