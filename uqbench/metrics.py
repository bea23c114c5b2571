"""Failure-detection, selective-prediction and calibration metrics (paper, Appendix F).

Conventions, for every function and metric class here:

- ``scores`` are uncertainties: **higher means more likely positive** (an error, an OOD input).
- ``positives`` / ``errors`` are 0/1 (or bool) per example.
- ``probs`` are predictive probabilities [N, C]; ``labels`` are class indices [N].
- Empty input raises ``ValueError`` (it is a caller's bug). A ranking metric on input with a
  single class (no positives, or no negatives) returns NaN: it is undefined, not 0 or 1.
  Scores must be finite.
- Ties are exact: AUROC gives tied pairs half credit; AUPRC and FPR@95 move thresholds over
  distinct scores only, as scikit-learn does; AURC and risk at coverage treat a tie as a block
  (risk at a coverage accepts a whole tie block, reaching the nearest coverage from above, as the
  paper's F.3 says; AURC is the expected area over random orderings within tie blocks).

The functions compute in float64; the ``torchmetrics.Metric`` classes accumulate examples batch
by batch (``update``) and call the same functions in ``compute``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

ArrayLike = Any
ROW_SUM_TOLERANCE = 1e-3  # float32 softmax rows are within 1e-6; 1e-3 leaves room for float16


# --------------------------------------------------------------------------- validation
def _vector(values: ArrayLike, name: str, what: str) -> Tensor:
    t = torch.as_tensor(values).detach().flatten().to(torch.float64)
    if t.numel() == 0:
        raise ValueError(f"{name}: received no examples; pass at least one {what}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: {what} contain NaN or infinity; scores must be finite")
    return t


def _binary(values: ArrayLike, name: str) -> Tensor:
    t = torch.as_tensor(values).detach().flatten()
    if t.numel() and not ((t == 0) | (t == 1)).all():
        raise ValueError(
            f"{name}: targets must be 0/1 or bool, got values {t.unique()[:5].tolist()}"
        )
    return t.to(torch.bool)


def _scores_and_targets(scores: ArrayLike, targets: ArrayLike, name: str) -> tuple[Tensor, Tensor]:
    s = _vector(scores, name, "scores")
    t = _binary(targets, name)
    if s.numel() != t.numel():
        raise ValueError(f"{name}: {s.numel()} scores but {t.numel()} targets; they must match")
    return s, t


def _probs_and_labels(probs: ArrayLike, labels: ArrayLike, name: str) -> tuple[Tensor, Tensor]:
    p = torch.as_tensor(probs).detach().to(torch.float64)
    y = torch.as_tensor(labels).detach().flatten().long()
    if p.dim() != 2 or p.shape[0] == 0:
        raise ValueError(f"{name}: probs must be [N, C] with N >= 1, got shape {tuple(p.shape)}")
    if p.shape[0] != y.numel():
        raise ValueError(f"{name}: {p.shape[0]} rows of probs but {y.numel()} labels")
    if (y < 0).any() or (y >= p.shape[1]).any():
        raise ValueError(f"{name}: labels must be in [0, {p.shape[1] - 1}]")
    if not torch.isfinite(p).all() or (p < 0).any():
        raise ValueError(f"{name}: probabilities contain NaN, infinite or negative values")
    worst = float((p.sum(1) - 1).abs().max())
    if worst > ROW_SUM_TOLERANCE:
        raise ValueError(
            f"{name}: probability rows must sum to 1 (one row is off by {worst:.3g}); pass "
            f"softmax outputs, not logits"
        )
    return p, y


# --------------------------------------------------------------------------- ranking metrics
def _average_ranks(x: Tensor) -> Tensor:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = torch.argsort(x, stable=True)
    _, inverse, counts = torch.unique_consecutive(x[order], return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).to(torch.float64)
    mean_rank = ends - (counts.to(torch.float64) - 1) / 2
    ranks = torch.empty_like(x)
    ranks[order] = mean_rank[inverse]
    return ranks


def auroc(scores: ArrayLike, positives: ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney U form, exact on ties); NaN for a single class."""
    s, t = _scores_and_targets(scores, positives, "auroc")
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    rank_sum = _average_ranks(s)[t].sum().item()
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def threshold_counts(s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """(false positives, true positives) when predicting positive for score >= each distinct
    score, thresholds in decreasing order."""
    order = torch.argsort(s, descending=True, stable=True)
    s, tp = s[order], t[order].to(torch.float64)
    last_of_tie = torch.cat([torch.nonzero(s[1:] != s[:-1]).flatten(), torch.tensor([len(s) - 1])])
    tps = torch.cumsum(tp, 0)[last_of_tie]
    fps = (last_of_tie + 1).to(torch.float64) - tps
    return fps, tps


def auprc(scores: ArrayLike, positives: ArrayLike) -> float:
    """Average precision, stepwise in recall: sum_i (R_i - R_{i-1}) P_i over distinct thresholds.

    This is scikit-learn's ``average_precision_score``. (Appendix F.2 writes an interpolated
    ``max_{j<=i} P_j``, but states that it matches scikit-learn; we follow scikit-learn.)
    NaN when there are no positives.
    """
    s, t = _scores_and_targets(scores, positives, "auprc")
    n_pos = int(t.sum())
    if n_pos == 0:
        return math.nan
    fps, tps = threshold_counts(s, t)
    precision = tps / (tps + fps)
    recall = tps / n_pos
    steps = torch.diff(recall, prepend=torch.zeros(1, dtype=torch.float64))
    return float((steps * precision).sum())


def fpr_at_tpr(scores: ArrayLike, positives: ArrayLike, tpr: float = 0.95) -> float:
    """False-positive rate at the ROC point whose TPR is closest to ``tpr`` (the lower FPR on a
    tie in distance). NaN for a single class."""
    s, t = _scores_and_targets(scores, positives, "fpr_at_tpr")
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    fps, tps = threshold_counts(s, t)
    zero = torch.zeros(1, dtype=torch.float64)
    tprs, fprs = torch.cat([zero, tps / n_pos]), torch.cat([zero, fps / n_neg])
    distance = (tprs - tpr).abs()
    best = torch.nonzero(distance == distance.min()).flatten()
    return float(fprs[best].min())


# --------------------------------------------------------------------------- selective prediction
def _acceptance_order(scores: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Ascending uncertainty: (order, tie-block index of each sorted item, block sizes)."""
    order = torch.argsort(scores, stable=True)
    _, block, sizes = torch.unique_consecutive(
        scores[order], return_inverse=True, return_counts=True
    )
    return order, block, sizes


def risk_coverage_curve(scores: ArrayLike, errors: ArrayLike) -> tuple[Tensor, Tensor]:
    """(coverage, expected selective risk) at k = 1..N accepted examples, least uncertain first.

    Within a block of tied scores the order is random, so the expected number of errors among
    the first k is interpolated linearly across the block.
    """
    s, e = _scores_and_targets(scores, errors, "risk_coverage_curve")
    order, block, sizes = _acceptance_order(s)
    err = e[order].to(torch.float64)
    block_errors = torch.zeros(len(sizes), dtype=torch.float64).index_add_(0, block, err)
    block_end = torch.cumsum(sizes, 0)
    block_start = (block_end - sizes)[block]
    errors_before = (torch.cumsum(block_errors, 0) - block_errors)[block]
    k = torch.arange(1, len(s) + 1, dtype=torch.float64)
    expected = errors_before + (k - block_start) * block_errors[block] / sizes[block]
    return k / len(s), expected / k


def aurc(scores: ArrayLike, errors: ArrayLike) -> float:
    """Area under the risk-coverage curve, plain trapezoid over coverage k/N, k = 1..N (paper).

    Any uncertainty score works, not only confidences. NaN with fewer than two examples.
    """
    coverage, risk = risk_coverage_curve(scores, errors)
    if len(coverage) < 2:
        return math.nan
    return float(torch.trapezoid(risk, coverage))


def _accepted_at(s: Tensor, coverage: float, name: str) -> Tensor:
    """Indices accepted at the smallest achievable coverage >= ``coverage`` (whole tie blocks)."""
    if not 0 < coverage <= 1:
        raise ValueError(f"{name}: coverage must be in (0, 1], got {coverage}")
    order, _, sizes = _acceptance_order(s)
    ends = torch.cumsum(sizes, 0)
    needed = math.ceil(coverage * len(s) - 1e-9)
    count = int(ends[torch.searchsorted(ends, torch.tensor(needed))])
    return order[:count]


def risk_at_coverage(scores: ArrayLike, errors: ArrayLike, coverage: float) -> float:
    """Error rate among the accepted (least uncertain) examples at ``coverage`` (from above)."""
    s, e = _scores_and_targets(scores, errors, "risk_at_coverage")
    return float(e[_accepted_at(s, coverage, "risk_at_coverage")].to(torch.float64).mean())


def selective_nll(scores: ArrayLike, probs: ArrayLike, labels: ArrayLike, coverage: float) -> float:
    """Mean NLL of the accepted examples at ``coverage`` (paper eq. 21)."""
    p, y = _probs_and_labels(probs, labels, "selective_nll")
    s = _vector(scores, "selective_nll", "scores")
    if s.numel() != y.numel():
        raise ValueError(f"selective_nll: {s.numel()} scores but {y.numel()} labels")
    keep = _accepted_at(s, coverage, "selective_nll")
    return nll(p[keep], y[keep])


# --------------------------------------------------------------------------- calibration
PROB_FLOOR = 1e-12  # -log(0) would be infinite; a probability is floored here before the log


def nll(probs: ArrayLike, labels: ArrayLike) -> float:
    """Mean negative log-likelihood of the true class, probabilities floored at 1e-12."""
    p, y = _probs_and_labels(probs, labels, "nll")
    return float(-p.gather(1, y[:, None]).clamp_min(PROB_FLOOR).log().mean())


def brier(probs: ArrayLike, labels: ArrayLike) -> float:
    """Multi-class Brier score as in the paper (eq. 23): mean of ||p - onehot(y)||^2 / C."""
    p, y = _probs_and_labels(probs, labels, "brier")
    onehot = torch.nn.functional.one_hot(y, p.shape[1]).to(torch.float64)
    return float(((p - onehot) ** 2).sum(1).mean() / p.shape[1])


def adaptive_ece(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> float:
    """ECE over ``n_bins`` equal-mass bins of the max probability (paper eq. 24-25).

    Confidences are sorted (stable) and split into ``n_bins`` contiguous groups whose sizes
    differ by at most one, the first ``N mod n_bins`` groups one larger (``numpy.array_split``).
    Empty bins (N < n_bins) are skipped.
    """
    p, y = _probs_and_labels(probs, labels, "adaptive_ece")
    confidence, predicted = p.max(dim=1)
    correct = (predicted == y).to(torch.float64)
    order = torch.argsort(confidence, stable=True)
    total = 0.0
    for chunk in torch.tensor_split(order, n_bins):
        if len(chunk):
            total += len(chunk) * abs(float(correct[chunk].mean() - confidence[chunk].mean()))
    return total / len(y)


def accuracy(probs: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of examples whose arg-max class is the label."""
    p, y = _probs_and_labels(probs, labels, "accuracy")
    return float((p.argmax(1) == y).to(torch.float64).mean())


# --------------------------------------------------------------------------- Metric classes
class _ScoreTargetMetric(Metric):
    """Accumulates (score, 0/1 target) pairs and applies a ranking function in ``compute``."""

    is_differentiable = False
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, scores: Tensor, targets: Tensor) -> None:
        self.scores.append(torch.as_tensor(scores).detach().flatten().double())
        self.targets.append(torch.as_tensor(targets).detach().flatten().double())

    def _gathered(self) -> tuple[Tensor, Tensor]:
        # A list of batches, or (synchronized across processes) one concatenated tensor.
        if isinstance(self.scores, list) and not self.scores:
            return torch.empty(0), torch.empty(0)
        return dim_zero_cat(self.scores), dim_zero_cat(self.targets)

    def _value(self, scores: Tensor, targets: Tensor) -> float:
        raise NotImplementedError

    def compute(self) -> Tensor:
        return torch.tensor(self._value(*self._gathered()), dtype=torch.float64)


class AUROC(_ScoreTargetMetric):
    """AUROC of uncertainty scores against 0/1 positives (see :func:`auroc`)."""

    higher_is_better = True

    def _value(self, scores: Tensor, targets: Tensor) -> float:
        return auroc(scores, targets)


class AUPRC(_ScoreTargetMetric):
    """Average precision of uncertainty scores against 0/1 positives (see :func:`auprc`)."""

    higher_is_better = True

    def _value(self, scores: Tensor, targets: Tensor) -> float:
        return auprc(scores, targets)


class FPRAtTPR(_ScoreTargetMetric):
    """FPR at the TPR closest to ``tpr`` (default 0.95; see :func:`fpr_at_tpr`)."""

    higher_is_better = False

    def __init__(self, tpr: float = 0.95, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tpr = tpr

    def _value(self, scores: Tensor, targets: Tensor) -> float:
        return fpr_at_tpr(scores, targets, self.tpr)


class AURC(_ScoreTargetMetric):
    """Area under the risk-coverage curve; ``update(scores, errors)`` (see :func:`aurc`)."""

    higher_is_better = False

    def _value(self, scores: Tensor, targets: Tensor) -> float:
        return aurc(scores, targets)


class RiskAtCoverage(_ScoreTargetMetric):
    """Selective risk at ``coverage``; ``update(scores, errors)`` (see :func:`risk_at_coverage`)."""

    higher_is_better = False

    def __init__(self, coverage: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.coverage = coverage

    def _value(self, scores: Tensor, targets: Tensor) -> float:
        return risk_at_coverage(scores, targets, self.coverage)


class _ProbLabelMetric(Metric):
    """Accumulates (probs [B, C], labels [B]) and applies a calibration function."""

    is_differentiable = False
    full_state_update = False
    higher_is_better = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("probs", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")

    def update(self, probs: Tensor, labels: Tensor) -> None:
        self.probs.append(torch.as_tensor(probs).detach().double())
        self.labels.append(torch.as_tensor(labels).detach().flatten().long())

    def _gathered(self) -> tuple[Tensor, Tensor]:
        if not self.probs:
            return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
        return dim_zero_cat(self.probs), dim_zero_cat(self.labels)

    def _value(self, probs: Tensor, labels: Tensor) -> float:
        raise NotImplementedError

    def compute(self) -> Tensor:
        return torch.tensor(self._value(*self._gathered()), dtype=torch.float64)


class NLL(_ProbLabelMetric):
    """Mean negative log-likelihood (see :func:`nll`)."""

    def _value(self, probs: Tensor, labels: Tensor) -> float:
        return nll(probs, labels)


class BrierScore(_ProbLabelMetric):
    """Multi-class Brier score divided by the number of classes (see :func:`brier`)."""

    def _value(self, probs: Tensor, labels: Tensor) -> float:
        return brier(probs, labels)


class AdaptiveECE(_ProbLabelMetric):
    """ECE with equal-mass bins, 15 by default (see :func:`adaptive_ece`)."""

    def __init__(self, n_bins: int = 15, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_bins = n_bins

    def _value(self, probs: Tensor, labels: Tensor) -> float:
        return adaptive_ece(probs, labels, self.n_bins)


class Accuracy(_ProbLabelMetric):
    """Top-1 accuracy (see :func:`accuracy`)."""

    higher_is_better = True

    def _value(self, probs: Tensor, labels: Tensor) -> float:
        return accuracy(probs, labels)


class SelectiveNLL(Metric):
    """NLL of the examples accepted at ``coverage``; ``update(scores, probs, labels)``."""

    is_differentiable = False
    full_state_update = False
    higher_is_better = False

    def __init__(self, coverage: float = 0.9, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.coverage = coverage
        for name in ("scores", "probs", "labels"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, scores: Tensor, probs: Tensor, labels: Tensor) -> None:
        self.scores.append(torch.as_tensor(scores).detach().flatten().double())
        self.probs.append(torch.as_tensor(probs).detach().double())
        self.labels.append(torch.as_tensor(labels).detach().flatten().long())

    def compute(self) -> Tensor:
        if not self.scores:
            raise ValueError("SelectiveNLL: received no examples; call update() first")
        value = selective_nll(
            dim_zero_cat(self.scores),
            dim_zero_cat(self.probs),
            dim_zero_cat(self.labels),
            self.coverage,
        )
        return torch.tensor(value, dtype=torch.float64)
