"""``mahalanobis``: class-conditional Gaussian distance of features, fitted on the train split.

Two variants:

- ``variant=paper`` (the paper's C.1, eq. 14): at the SNAP taps (pooled channels), class means
  and a shared diagonal variance fitted on train; the score is
  ``min_c sum_l w_l (1/d_l) sum_i (a_li - mu_lci)^2 / (var_li + shrinkage)``. The tap weights
  ``w`` and the shrinkage are chosen on the dev mix by AUROC of ID ok | ID err from the grids
  ``{(1, 0), (0, 1), (0.5, 0.5)}`` (two taps; one-hot and uniform weights for other counts) and
  ``{0, 1e-4, 1e-3}``; ``method.tap_weights=[0.5,0.5]`` or a one-value ``method.shrinkage``
  fixes either.
- ``variant=mds`` (OpenOOD's MDS, Lee et al. 2018 without input preprocessing): on the pooled
  penultimate vector, class means and one shared full covariance (the covariance of the
  class-centred train features), score ``min_c (f - mu_c)^T Sigma^+ (f - mu_c)``.

Higher distance = more uncertain.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from uqbench.backbones.base import BackboneOutput
from uqbench.errors import ConfigError
from uqbench.method import CostFacts, PostHocMethod
from uqbench.recorded_pass import TapRequest
from uqbench.tuning import auroc_objective, grid

SHRINKAGE_GRID = (0.0, 1e-4, 1e-3)
VARIANCE_FLOOR = 1e-8


def class_means(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """[C, D] per-class means; a class absent from ``labels`` is an error."""
    counts = torch.bincount(labels, minlength=num_classes)
    if (counts == 0).any():
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise ConfigError(f"mahalanobis: classes {missing} have no training examples")
    sums = torch.zeros(num_classes, features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, labels, features)
    return sums / counts[:, None]


def min_distance(features: Tensor, means: Tensor, precision: Tensor) -> Tensor:
    """``min_c (f - mu_c)^T P (f - mu_c)`` [N] for features [N, D], means [C, D], P [D, D]."""
    centred = features[:, None, :] - means[None]  # [N, C, D]
    return torch.einsum("ncd,de,nce->nc", centred, precision, centred).amin(-1)


def _weight_grid(n: int) -> list[tuple[float, ...]]:
    one_hot = [tuple(float(i == j) for j in range(n)) for i in range(n)]
    return [*one_hot, tuple([1.0 / n] * n)] if n > 1 else one_hot


class Mahalanobis(PostHocMethod):
    """Args: ``variant``: ``paper`` or ``mds``; ``taps``: the paper variant's taps (SNAP's);
    ``shrinkage``: grid added to the diagonal variances; ``tap_weights``: fixes the weights
    (paper variant)."""

    def __init__(
        self,
        backbone,
        variant: Literal["paper", "mds"] = "paper",
        taps: tuple[str, ...] = ("mid", "penultimate"),
        shrinkage: tuple[float, ...] = SHRINKAGE_GRID,
        tap_weights: tuple[float, ...] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(backbone, **kwargs)
        missing = [t for t in taps if t not in backbone.tap_names]
        if missing:
            raise ConfigError(
                f"mahalanobis needs tap {missing[0]!r}, which {type(backbone).__name__} does not "
                f"have; its taps are {', '.join(backbone.tap_names)} (set method.taps=[...])"
            )
        if any(s < 0 for s in shrinkage) or not shrinkage:
            raise ConfigError(f"method.shrinkage: values must be >= 0, got {tuple(shrinkage)}")
        self.variant, self.shrinkage = variant, tuple(shrinkage)
        self.taps = tuple(taps) if variant == "paper" else ("penultimate",)
        if tap_weights is not None and len(tap_weights) != len(self.taps):
            raise ConfigError(
                f"method.tap_weights has {len(tap_weights)} values for {len(self.taps)} taps"
            )
        self.weight_grid = grid(tap_weights, _weight_grid(len(self.taps)))
        shapes = backbone.tap_shapes()
        c = backbone.num_classes
        for i, tap in enumerate(self.taps):
            d = shapes[tap][0]
            self.register_buffer(f"means_{i}", torch.zeros(c, d))
            self.register_buffer(f"variance_{i}", torch.ones(d))
        if variant == "mds":
            d = backbone.num_features
            self.register_buffer("precision", torch.eye(d))
        self.register_buffer("tap_weights", torch.full((len(self.taps),), 1.0 / len(self.taps)))
        self.register_buffer("shrinkage_used", torch.tensor(0.0))

    def record_request(self) -> TapRequest:
        return TapRequest(taps=frozenset(self.taps) if self.variant == "paper" else frozenset())

    def _features(self, out: BackboneOutput, tap: str) -> Tensor:
        return out.pooled if self.variant == "mds" else self.backbone.pool_tap(out.taps[tap])

    def calibrate(self, data) -> None:
        """Class means and variances (and MDS's precision) from the train split's record."""
        train = data.record("train")
        c = self.backbone.num_classes
        for i, tap in enumerate(self.taps):
            features = self._features(train.out, tap).double()
            means = class_means(features, train.labels, c)
            centred = features - means[train.labels]
            getattr(self, f"means_{i}").copy_(means)
            # A channel that never varies on train (a dead ReLU) would give infinite distances.
            variance = centred.pow(2).mean(0).clamp_min(VARIANCE_FLOOR)
            getattr(self, f"variance_{i}").copy_(variance)
            if self.variant == "mds":
                covariance = centred.T @ centred / len(centred)
                self.precision.copy_(torch.linalg.pinv(covariance, hermitian=True))

    def search_space(self) -> dict[str, tuple[Any, ...]]:
        if self.variant == "mds":
            return {}
        return {"tap_weights": self.weight_grid, "shrinkage": self.shrinkage}

    def tuning_scorer(self, data):
        mix = data.record("dev_mix")
        per_tap = [self._tap_distances(mix.out, i) for i in range(len(self.taps))]

        def objective(choice: dict[str, Any]) -> float:
            distances = [d(choice["shrinkage"]) for d in per_tap]
            weights = torch.tensor(choice["tap_weights"])
            return auroc_objective(self._combine(distances, weights), mix.errors)

        return objective

    def apply(self, choice: dict[str, Any]) -> None:
        self.tap_weights.copy_(torch.tensor(choice["tap_weights"]))
        self.shrinkage_used.fill_(choice["shrinkage"])

    def _tap_distances(self, out: BackboneOutput, i: int):
        """A function shrinkage -> [N, C] dimension-normalized distances at tap ``i``."""
        features = self._features(out, self.taps[i])
        means, variance = getattr(self, f"means_{i}"), getattr(self, f"variance_{i}")
        squared = (features[:, None, :] - means[None].to(features.dtype)) ** 2  # [N, C, d]

        def distances(shrink: float) -> Tensor:
            return (squared / (variance.to(features.dtype) + shrink)).mean(-1)

        return distances

    @staticmethod
    def _combine(distances: list[Tensor], weights: Tensor) -> Tensor:
        """``min_c sum_l w_l D_l[:, c]``: the class minimum is taken after weighting (eq. 14)."""
        total = sum(w * d for w, d in zip(weights.tolist(), distances, strict=True))
        return total.amin(-1)

    def score(self, out: BackboneOutput) -> Tensor:
        if self.variant == "mds":
            features = out.pooled
            return min_distance(
                features, self.means_0.to(features.dtype), self.precision.to(features.dtype)
            )
        shrink = float(self.shrinkage_used)
        distances = [self._tap_distances(out, i)(shrink) for i in range(len(self.taps))]
        return self._combine(distances, self.tap_weights)

    def tuned(self) -> dict:
        if self.variant == "mds":
            return {"variant": "mds"}
        return {
            "variant": "paper",
            "tap_weights": dict(zip(self.taps, self.tap_weights.tolist(), strict=True)),
            "shrinkage": float(self.shrinkage_used),
        }

    def cost_facts(self) -> CostFacts:
        c = self.backbone.num_classes
        if self.variant == "mds":
            d = self.backbone.num_features
            return CostFacts(  # the device form: whiten once, then C distances
                extra_params=c * d + d * d,
                extra_macs=d * d + c * d,
                exports=("whitening matrix (shared precision)", "whitened class means"),
            )
        dims = [getattr(self, f"variance_{i}").numel() for i in range(len(self.taps))]
        return CostFacts(
            extra_params=sum(c * d + d for d in dims) + len(dims),
            extra_macs=sum(2 * c * d for d in dims),
            exports=("class means per tap", "diagonal variances per tap", "tap weights"),
        )

    def device_export(self):
        from uqbench.deploy.scores.mahalanobis import Mahalanobis as DeviceMahalanobis
        from uqbench.deploy.scores.mahalanobis import MahalanobisMDS

        if self.variant == "mds":
            # P = V diag(l) V^T (P is a pseudo-inverse: l >= 0 up to rounding), W = diag(sqrt l)
            # V^T: (f - mu)^T P (f - mu) = |W f - W mu|^2, d^2 + C d MACs on the device.
            eigenvalues, vectors = torch.linalg.eigh(self.precision.double())
            whiten = eigenvalues.clamp_min(0).sqrt()[:, None] * vectors.T
            constants = {
                "whiten": whiten.float().numpy(),
                "whitened_means": (self.means_0.double() @ whiten.T).float().numpy(),
            }
            return MahalanobisMDS(("penultimate",), constants)

        constants = {"tap_weights": self.tap_weights.float().numpy()}
        for i in range(len(self.taps)):
            constants[f"means_{i}"] = getattr(self, f"means_{i}").float().numpy()
            constants[f"variance_{i}"] = getattr(self, f"variance_{i}").float().numpy()
        shrinkage = float(self.shrinkage_used)
        return DeviceMahalanobis(tuple(self.taps), constants, shrinkage=shrinkage)
