"""Bootstrap confidence intervals for a run's metrics, and paired differences between two runs.

The paper's Appendix F.5: 1,000 resamples of the examples with replacement, the 95% interval as
the 2.5th and 97.5th percentiles of the resampled values, per seed (then averaged over seeds by
the caller); two methods compared on the *same* resampled indices (a paired bootstrap).

Resamples are **stratified by evaluation set** (the ``group`` of :class:`Predictions`): each set
keeps its size, so the ID / CID / OOD proportions of every pooled metric stay those of the run.
A resample is a vector of counts (how often each example was drawn), and every metric here is
written for counts: one sort of the scores per subset serves a chunk of resamples, and their
metrics are a few array operations on [resamples, examples] (15,000 examples, every metric,
1,000 resamples: about 3 s at one thread; ``benchmarks/bench_bootstrap.py``). Counts are whole
numbers, so their sums are exact in any order: the values never depend on how the rows are
split into passes. With all counts 1 each function equals its exact counterpart in
:mod:`uqbench.metrics` (ties included); the tests also hold the counts form to the metrics
recomputed on explicitly expanded resamples.

Kept fixed, not resampled: the fitted method (its map, its temperature) and the dev-fitted
temperature of ``calibration_ts``; the interval is over test examples only.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from uqbench import metrics as M
from uqbench.metric_table import COVERAGES, EvalGroups, temperature_scaled
from uqbench.predictions import Predictions

RESAMPLES = 1000
MAX_RESAMPLES = 100_000  # beyond it the samples of one run take gigabytes, for no gain
LEVEL = 0.95
CHUNK = 125  # resamples per pass: [CHUNK, N] float64 arrays stay small
PASS_ELEMENTS = 2**18  # a ranking's or selective pass: [rows, examples] float64, 2 MiB


# --------------------------------------------------------------------------- resampling
def resample_counts(group: np.ndarray, resamples: int, seed: int, first: int = 0) -> Tensor:
    """[resamples, N] float64 counts, each row a bootstrap resample stratified by ``group``.

    Row ``r`` depends only on (``seed``, ``first + r``) and ``group``: two runs of the same
    evaluation sets get the same resamples (the paired bootstrap), and chunks of rows can be
    drawn separately. Every run of a data set draws the same rows, so this process keeps the
    last ones drawn (:data:`COUNTS_CACHE_BYTES`); the caller gets a tensor of its own."""
    key = (
        hashlib.sha256(np.ascontiguousarray(group).tobytes()).hexdigest(),
        resamples,
        seed,
        first,
    )
    if key in _drawn:
        return _drawn[key].to(torch.float64)
    n = len(group)
    counts = torch.zeros(resamples, n, dtype=torch.float64)
    members = [torch.from_numpy(np.flatnonzero(group == g)) for g in np.unique(group)]
    gen = torch.Generator()
    for r in range(resamples if n else 0):  # no examples: no draws, rows of nothing
        gen.manual_seed(seed * 1_000_003 + first + r)
        drawn = [
            index[torch.randint(len(index), (len(index),), generator=gen)] for index in members
        ]
        counts[r] = torch.bincount(torch.cat(drawn), minlength=n)
    _keep(key, counts)
    return counts


COUNTS_CACHE_BYTES = 64 * 2**20  # the resamples kept per process, one byte per count
_drawn: dict[tuple, Tensor] = {}  # uint8 counts, oldest first


def _keep(key: tuple, counts: Tensor) -> None:
    """Keep ``counts`` (as bytes, when every count fits one) within the budget, oldest out."""
    if counts.numel() > COUNTS_CACHE_BYTES or (counts.numel() and counts.max() > 255):
        return
    _drawn[key] = counts.to(torch.uint8)
    while sum(c.numel() for c in _drawn.values()) > COUNTS_CACHE_BYTES:
        del _drawn[next(iter(_drawn))]


# --------------------------------------------------------------------------- passes over rows
Metrics = Callable[..., dict[str, Tensor]]


def in_passes(function: Metrics) -> Metrics:
    """``function(..., counts, **options)`` (counts [R, n] its last positional argument) over a
    few rows of the counts at a time (:data:`PASS_ELEMENTS`), the results joined. Each
    resample's values depend on its own row alone, bit for bit at any number of rows, and a
    pass over arrays wider than the caches is several times slower."""

    @functools.wraps(function)
    def passes(*args: Tensor, **options: Any) -> dict[str, Tensor]:
        *given, counts = args
        rows = max(1, PASS_ELEMENTS // max(1, counts.shape[1]))
        if rows >= len(counts):
            return function(*args, **options)
        parts = [
            function(*given, counts[r : r + rows], **options) for r in range(0, len(counts), rows)
        ]
        return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}

    return passes


# --------------------------------------------------------------------------- ranking metrics
@dataclass
class _Blocks:
    """Examples sorted by score, descending, grouped into blocks of tied scores."""

    order: Tensor  # [n] example indices, highest score first
    block: Tensor  # [n] block index of each sorted example
    last: Tensor  # [blocks] sorted position of each block's last example
    blocks: int

    @classmethod
    def of(cls, scores: Tensor) -> _Blocks:
        order = torch.argsort(scores, descending=True, stable=True)
        _, block, sizes = torch.unique_consecutive(
            scores[order], return_inverse=True, return_counts=True
        )
        return cls(order, block, sizes.cumsum(0) - 1, len(sizes))

    def sums(self, weights: Tensor) -> Tensor:
        """[R, blocks] per-block sums of ``weights`` [R, n] (given in example order), each
        added up in sorted order from 0."""
        if self.blocks == len(self.order):  # no ties: the sum of one is itself (-0 is +0)
            return weights[:, self.order] + 0.0
        out = torch.zeros(len(weights), self.blocks, dtype=torch.float64)
        return out.index_add_(1, self.block, weights[:, self.order])

    def counted(self, weights: Tensor) -> tuple[Tensor, Tensor]:
        """(per-block sums, their running sums) [R, blocks] each, of non-negative whole-number
        ``weights`` [R, n] already in sorted order. Whole numbers add up exactly in any order,
        so one running sum over the examples gives both, equal to :meth:`sums` and its cumsum
        bit for bit."""
        if self.blocks == len(self.order):
            return weights, weights.cumsum(1)
        through = weights.cumsum(1)[:, self.last]
        zero = torch.zeros(len(weights), 1, dtype=weights.dtype)
        return torch.diff(through, dim=1, prepend=zero), through


RANKING = ("auroc", "auprc", "fpr95")


@in_passes
def ranking_on_counts(
    scores: Tensor, positive: Tensor, counts: Tensor, metrics: tuple[str, ...] = RANKING
) -> dict[str, Tensor]:
    """AUROC, AUPRC and FPR at 95% TPR of each resample (those of ``metrics``): [R] each, NaN
    where undefined."""
    b = _Blocks.of(scores)
    weights, positive = counts[:, b.order], positive[b.order]
    pos, tps = b.counted(weights * positive)  # per block, and predicting positive down to it
    neg, fps = b.counted(weights * ~positive)
    n_pos, n_neg = pos.sum(1), neg.sum(1)
    undefined = (n_pos == 0) | (n_neg == 0)
    nan = torch.full_like(n_pos, math.nan)
    out = {}
    if "auroc" in metrics:  # each positive against the negatives ranked below it, ties half
        auroc = (pos * (n_neg[:, None] - fps + 0.5 * neg)).sum(1) / (n_pos * n_neg)
        out["auroc"] = torch.where(undefined, nan, auroc)
    if "auprc" in metrics:
        # Precision at each block's threshold, weighted by the recall step (empty steps: 0).
        precision = torch.where(pos > 0, tps / (tps + fps).clamp_min(1e-300), 0.0)
        auprc = (pos * precision).sum(1) / n_pos
        out["auprc"] = torch.where(n_pos == 0, nan, auprc)
    if "fpr95" in metrics:
        # FPR at the ROC point whose TPR is nearest 0.95, the lower FPR on ties (the (0, 0)
        # start included; an empty block repeats the point before it, which changes nothing).
        zero = torch.zeros(len(counts), 1, dtype=torch.float64)
        tpr = torch.cat([zero, tps / n_pos[:, None]], 1)
        fpr = torch.cat([zero, fps / n_neg[:, None]], 1)
        distance = (tpr - 0.95).abs()
        nearest = distance <= distance.amin(1, keepdim=True)
        fpr95 = torch.where(nearest, fpr, math.inf).amin(1)
        out["fpr95"] = torch.where(undefined, nan, fpr95)
    return out


# --------------------------------------------------------------------------- selective prediction
def _harmonic(n: int) -> Tensor:
    """H[m] = sum_{i<=m} 1/i for m = 0..n."""
    return torch.cat(
        [
            torch.zeros(1, dtype=torch.float64),
            (1.0 / torch.arange(1, n + 1, dtype=torch.float64)).cumsum(0),
        ]
    )


@in_passes
def _selective(scores: Tensor, errors: Tensor, nll: Tensor, counts: Tensor) -> dict[str, Tensor]:
    """AURC, risk at each coverage and selective NLL at 90% of each resample ([R] each).

    Accepted least uncertain first; a block of tied scores is accepted in random order, so the
    expected errors among the first k rise linearly through the block (:func:`M.aurc`). With
    A errors and K examples before a block of n examples and e errors, the risks at k = K + j
    sum to (A - e K / n) (H[K + n] - H[K]) + e: the area needs no per-example curve.
    """
    b = _Blocks.of(-scores)  # ascending uncertainty
    weights = counts[:, b.order]
    n, ends = b.counted(weights)
    e, errors_to = b.counted(weights * errors[b.order])
    total = n.sum(1)
    starts, errors_before = ends - n, errors_to - e
    h = _harmonic(int(total.max()))
    rate = torch.where(n > 0, e / n.clamp_min(1), 0.0)
    summed = ((errors_before - rate * starts) * (h[ends.long()] - h[starts.long()]) + e).sum(1)
    first = rate.gather(1, (n > 0).to(torch.int8).argmax(1, keepdim=True))[:, 0]  # risk at k=1
    last = errors_to[:, -1] / total
    aurc = torch.where(total >= 2, (summed - (first + last) / 2) / total, math.nan)
    nll_to = b.sums(counts * nll).cumsum(1)

    def accepted_at(coverage: float) -> tuple[Tensor, Tensor]:
        """(block index, examples accepted) at the smallest block end >= coverage (M's rule)."""
        needed = torch.ceil(coverage * total - 1e-9)[:, None]
        at = torch.searchsorted(ends.contiguous(), needed.contiguous())
        return at, ends.gather(1, at)[:, 0]

    out = {"aurc": aurc}
    for coverage in COVERAGES:
        at, accepted = accepted_at(coverage)
        out[f"risk@{round(coverage * 100)}"] = errors_to.gather(1, at)[:, 0] / accepted
    at, accepted = accepted_at(0.9)
    out["snll@90"] = nll_to.gather(1, at)[:, 0] / accepted
    return out


# --------------------------------------------------------------------------- calibration
def _calibration(probs: Tensor, labels: Tensor, counts: Tensor, bins: int = 15) -> dict:
    """NLL, Brier / C, adaptive ECE (``bins`` equal-mass bins) and accuracy of each resample.

    The equal-mass bins split the resample's sorted confidences (each example repeated by its
    count, ties in index order) like ``numpy.array_split``; a bin border may fall between the
    copies of one example, which :func:`_prefix_at` handles."""
    total = counts.sum(1)
    p_true = probs.gather(1, labels[:, None])[:, 0]
    nll = -p_true.clamp_min(M.PROB_FLOOR).log()
    onehot = torch.nn.functional.one_hot(labels, probs.shape[1]).to(torch.float64)
    brier = ((probs - onehot) ** 2).sum(1) / probs.shape[1]
    confidence, predicted = probs.max(1)
    correct = (predicted == labels).to(torch.float64)
    order = torch.argsort(confidence, stable=True)
    w = counts[:, order]
    ends = w.cumsum(1)
    gap = correct[order] - confidence[order]  # bin value: |sum correct - sum confidence|
    q = torch.div(total, bins, rounding_mode="floor")
    r = total - q * bins
    k = torch.arange(bins + 1, dtype=torch.float64)
    borders = k[None] * q[:, None] + torch.minimum(k[None], r[:, None])  # [R, bins + 1]
    prefix = _prefix_at(ends, w, gap, borders)
    ece = (prefix[:, 1:] - prefix[:, :-1]).abs().sum(1) / total
    return {
        "nll": counts @ nll / total,
        "brier": counts @ brier / total,
        "ece": ece,
        "accuracy": counts @ correct / total,
    }


def _prefix_at(ends: Tensor, w: Tensor, value: Tensor, at: Tensor) -> Tensor:
    """Sum of ``value`` over the first ``at`` items of each expanded row ([R, P]): sorted
    examples repeated ``w`` times, ``ends`` = cumsum(w)."""
    cum = (w * value[None]).cumsum(1)
    i = torch.searchsorted(ends.contiguous(), at.contiguous(), right=True)  # the item holding t
    i_c = i.clamp_max(ends.shape[1] - 1)
    before_end = ends.gather(1, i_c) - w.gather(1, i_c)
    before_sum = cum.gather(1, i_c) - w.gather(1, i_c) * value[i_c]
    inside = before_sum + (at - before_end) * value[i_c]
    return torch.where(i >= ends.shape[1], cum[:, -1:].expand_as(at), inside)


# --------------------------------------------------------------------------- every metric
class _Run:
    """One run's per-example arrays as tensors, and its subsets by evaluation set."""

    def __init__(self, p: Predictions) -> None:
        self.p, self.g = p, EvalGroups.of(p)
        self.score = torch.from_numpy(p.score).double()
        self.probs = torch.from_numpy(p.probs).double()
        self.labels = torch.from_numpy(p.label.astype(np.int64))
        self.errors = torch.from_numpy(~self.g.correct)
        safe = self.labels.clamp_min(0)
        self.nll = -self.probs.gather(1, safe[:, None])[:, 0].clamp_min(M.PROB_FLOOR).log()
        is_dev = self.g.kind == "dev"
        self.scaled = (
            torch.from_numpy(temperature_scaled(p, is_dev)[0].probs).double()
            if is_dev.any()
            else None
        )


def _metrics(run: _Run, counts: Tensor) -> dict[str, Tensor]:
    """Every bootstrapped metric of ``run`` for the resamples ``counts`` [R, N]: key -> [R]."""
    g, out = run.g, {}
    is_id, is_cid = g.kind == "id", g.kind == "cid"
    id_or_cid = is_id | is_cid

    def on(mask: np.ndarray) -> tuple[Tensor, Tensor]:
        index = torch.from_numpy(np.flatnonzero(mask))
        return index, counts[:, index]

    def add(prefix: str, values: dict[str, Tensor]) -> None:
        out.update({f"{prefix}/{k}": v for k, v in values.items()})

    i, c = on(id_or_cid)
    add("id_vs_error", ranking_on_counts(run.score[i], run.errors[i], c))
    cid_sets = [n for n in run.p.group_names if n.startswith("cid/")]
    if cid_sets:
        per_set = []
        for name in cid_sets:
            i, c = on(g.names == name)
            per_set.append(ranking_on_counts(run.score[i], run.errors[i], c))
        for key in ("auroc", "auprc", "fpr95"):
            out[f"id_vs_error_cid_mean/{key}"] = torch.stack([s[key] for s in per_set]).nanmean(0)
        for severity in sorted(set(g.severity[is_cid].tolist()) | {0}):
            mask = is_id if severity == 0 else is_cid & (g.severity == severity)
            i, c = on(mask)
            ranking = ranking_on_counts(run.score[i], run.errors[i], c)
            out[f"id_vs_error_by_severity/{severity}"] = ranking["auroc"]
    ood_sets = [n.split("/", 1)[1] for n in run.p.group_names if n.startswith("ood/")]
    for name in ood_sets:
        ood = g.names == f"ood/{name}"
        i, c = on((is_id & g.correct) | ood)
        positive = torch.from_numpy(ood[i.numpy()])
        add(f"id_vs_ood/{name}", ranking_on_counts(run.score[i], positive, c))
    if ood_sets:
        for key in ("auroc", "auprc", "fpr95"):
            values = torch.stack([out[f"id_vs_ood/{n}/{key}"] for n in ood_sets])
            out[f"id_vs_ood/mean/{key}"] = values.nanmean(0)
    for name, mask in (("id", is_id), ("id+cid", id_or_cid)):
        if mask.any():
            i, c = on(mask)
            add(f"selective/{name}", _selective(run.score[i], run.errors[i], run.nll[i], c))
    i, c = on(is_id)
    calibration = _calibration(run.probs[i], run.labels[i], c)
    out["accuracy/id"] = calibration.pop("accuracy")
    add("calibration", calibration)
    if run.scaled is not None:
        scaled = _calibration(run.scaled[i], run.labels[i], c)
        scaled.pop("accuracy")
        add("calibration_ts", scaled)
    return out


def bootstrap(
    p: Predictions, resamples: int = RESAMPLES, seed: int = 0, chunk: int = CHUNK
) -> dict[str, np.ndarray]:
    """Every metric of ``p`` on ``resamples`` stratified resamples: key (``task/metric``, as in
    ``metrics.json``) -> [resamples] values (NaN where a resample leaves the metric undefined)."""
    return paired(p, None, resamples, seed, chunk)[0]


def paired(
    p: Predictions,
    q: Predictions | None,
    resamples: int = RESAMPLES,
    seed: int = 0,
    chunk: int = CHUNK,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """The bootstrap of ``p`` and of ``q`` on the *same* resampled indices (``q`` may be None).
    ``q`` must hold the same examples: same labels and evaluation sets, in the same order."""
    if q is not None and not same_examples(p, q):
        raise ValueError(
            "a paired bootstrap needs two runs on the same examples (same data, split seed and "
            "evaluation sets, in the same order); these runs' scores.npz differ in their labels "
            "or evaluation sets"
        )
    runs = [_Run(p)] + ([_Run(q)] if q is not None else [])
    parts: list[dict[str, list[Tensor]]] = [{} for _ in runs]
    for first in range(0, resamples, chunk):
        counts = resample_counts(p.group, min(chunk, resamples - first), seed, first)
        for run, part in zip(runs, parts, strict=True):
            for key, value in _metrics(run, counts).items():
                part.setdefault(key, []).append(value)
    joined = [{k: torch.cat(v).numpy() for k, v in part.items()} for part in parts]
    return joined[0], (joined[1] if q is not None else None)


def same_examples(p: Predictions, q: Predictions) -> bool:
    """True when two runs hold the same examples (labels and evaluation sets, in one order):
    then equal seeds give them the same resamples."""
    return (
        p.group_names == q.group_names
        and np.array_equal(p.group, q.group)
        and np.array_equal(p.label, q.label)
    )


def interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval (2.5th, 97.5th at 95%) of the defined resampled values."""
    defined = values[~np.isnan(values)]
    if len(defined) == 0:
        return (math.nan, math.nan)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(defined, [tail, 100 - tail])
    return float(low), float(high)


def intervals(samples: dict[str, np.ndarray], level: float = LEVEL) -> dict[str, list[float]]:
    """key -> [low, high] for every bootstrapped metric."""
    return {key: list(interval(values, level)) for key, values in samples.items()}
