"""Bootstrap intervals: the counts form of every metric against the metrics recomputed on
explicitly expanded resamples (and scikit-learn), stratification, pairing, intervals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from uqbench import bootstrap as B
from uqbench.bootstrap import (
    _Blocks,
    _metrics,
    _Run,
    bootstrap,
    interval,
    paired,
    ranking_on_counts,
    resample_counts,
)
from uqbench.metric_table import compute_metrics, lookup
from uqbench.predictions import Predictions

GROUPS = ["dev", "id", "cid/fog/1", "cid/fog/3", "cid/snow/1", "cid/snow/3", "ood/far", "ood/near"]


def _predictions(n_per_group: int = 60, seed: int = 0, coarse: bool = True) -> Predictions:
    """Random predictions of 5 classes over every kind of evaluation set; ``coarse`` rounds
    scores and probabilities so that ties are frequent."""
    rng = np.random.default_rng(seed)
    n = n_per_group * len(GROUPS)
    group = np.repeat(np.arange(len(GROUPS)), n_per_group).astype(np.int32)
    logits = rng.normal(size=(n, 5)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    label = rng.integers(0, 5, n).astype(np.int32)
    ood = np.array([GROUPS[g].startswith("ood/") for g in group])
    label[ood] = -1
    score = 1 - probs.max(1) + rng.normal(scale=0.1, size=n)
    if coarse:
        score = np.round(score, 1)
        probs = np.round(probs, 2)
        probs = probs / probs.sum(1, keepdims=True)
    return Predictions(probs.astype(np.float32), score, label, group, GROUPS)


def _expanded(p: Predictions, counts: np.ndarray) -> Predictions:
    index = np.repeat(np.arange(len(p.score)), counts.astype(int))
    return Predictions(
        p.probs[index], p.score[index], p.label[index], p.group[index], p.group_names
    )


def _flat(metrics: dict, keys) -> dict:
    return {k: lookup(metrics, k) for k in keys}


@pytest.mark.parametrize("coarse", [True, False])
def test_counts_of_one_give_the_exact_metrics(coarse):
    p = _predictions(coarse=coarse)
    values = _metrics(_Run(p), torch.ones(1, len(p.score), dtype=torch.float64))
    exact = compute_metrics(p)
    assert len(values) >= 30
    for key, value in values.items():
        np.testing.assert_allclose(float(value[0]), lookup(exact, key), rtol=1e-12, err_msg=key)


def test_each_resample_equals_the_metrics_of_the_expanded_examples():
    """Independent recomputation: the resample written out example by example, every metric
    computed by the exact functions (and AUROC / AUPRC by scikit-learn) from scratch. The
    temperature of calibration_ts is fitted on dev; a resampled dev refits it, so those keys
    are left to the counts-of-one test."""
    p = _predictions()
    counts = resample_counts(p.group, 4, seed=7)
    values = _metrics(_Run(p), counts)
    for r in range(4):
        q = _expanded(p, counts[r].numpy())
        exact = compute_metrics(q)
        for key, value in values.items():
            if key.startswith("calibration_ts"):
                continue
            np.testing.assert_allclose(float(value[r]), lookup(exact, key), rtol=1e-10, err_msg=key)
        pooled = np.isin(q.group, [1, 2, 3, 4, 5])
        errors = q.probs[pooled].argmax(1) != q.label[pooled]
        sk = roc_auc_score(errors, q.score[pooled])
        assert float(values["id_vs_error/auroc"][r]) == pytest.approx(sk, rel=1e-12)
        ap = average_precision_score(errors, q.score[pooled])
        assert float(values["id_vs_error/auprc"][r]) == pytest.approx(ap, rel=1e-12)


def test_resamples_are_stratified_and_reproducible():
    p = _predictions(n_per_group=40)
    counts = resample_counts(p.group, 20, seed=3)
    for g in range(len(GROUPS)):
        assert (counts[:, p.group == g].sum(1) == 40).all()  # every set keeps its size
    assert (counts.sum(1) == len(p.score)).all()
    # Rows depend on (seed, row): drawn in two chunks they are the same rows.
    chunks = torch.cat([resample_counts(p.group, 8, 3), resample_counts(p.group, 12, 3, first=8)])
    assert torch.equal(counts, chunks)
    assert not torch.equal(counts, resample_counts(p.group, 20, seed=4))
    assert (counts.std(0) > 0).any()  # resampling, not the identity


def test_each_row_is_drawn_by_the_documented_rule():
    """Row r: a generator seeded with seed * 1_000_003 + first + r draws each set's members,
    set by set in the order of their ids. Cached leaderboards and paired runs rely on it."""
    p = _predictions(n_per_group=30)
    counts = resample_counts(p.group, 3, seed=5, first=2)
    for r in range(3):
        gen = torch.Generator().manual_seed(5 * 1_000_003 + 2 + r)
        expected = np.zeros(len(p.score))
        for g in np.unique(p.group):
            members = np.flatnonzero(p.group == g)
            drawn = torch.randint(len(members), (len(members),), generator=gen).numpy()
            np.add.at(expected, members[drawn], 1)
        np.testing.assert_array_equal(counts[r].numpy(), expected)
    assert resample_counts(np.zeros(0, dtype=np.int32), 3, seed=5).shape == (3, 0)


def test_drawn_resamples_are_kept_per_process_and_handed_out_as_copies(monkeypatch):
    monkeypatch.setattr(B, "_drawn", {})
    group = np.repeat(np.arange(3), 50).astype(np.int32)
    first = resample_counts(group, 10, seed=1)
    first += 1  # the caller's own tensor: the kept rows are untouched
    again = resample_counts(group, 10, seed=1)
    assert again.dtype == torch.float64
    assert torch.equal(again + 1, first)
    assert len(B._drawn) == 1
    # Beyond the budget the oldest rows go first; a draw larger than it is not kept at all.
    monkeypatch.setattr(B, "COUNTS_CACHE_BYTES", 2 * 10 * 150)
    resample_counts(group, 10, seed=2)
    resample_counts(group, 10, seed=3)
    assert [key[2] for key in B._drawn] == [2, 3]
    resample_counts(group, 40, seed=4)
    assert [key[2] for key in B._drawn] == [2, 3]


@pytest.mark.parametrize("coarse", [True, False])
def test_block_sums_by_running_sums_are_bit_identical(coarse):
    """Whole-number weights (counts) summed per block of ties through one running sum equal
    the sums added up block by block, and their running sums, bit for bit."""
    p = _predictions(coarse=coarse)
    scores = torch.from_numpy(p.score).double()
    blocks = _Blocks.of(scores)
    assert (blocks.blocks < len(scores)) == coarse  # ties, or none
    weights = resample_counts(p.group, 30, seed=2) * torch.from_numpy(p.label >= 2)
    per_block = torch.zeros(30, blocks.blocks, dtype=torch.float64)
    per_block.index_add_(1, blocks.block, weights[:, blocks.order])
    sums, running = blocks.counted(weights[:, blocks.order])
    assert torch.equal(sums, per_block) and torch.equal(running, per_block.cumsum(1))
    assert torch.equal(blocks.sums(weights), per_block)


def test_block_sums_without_ties_turn_negative_zero_positive_as_adding_does():
    blocks = _Blocks.of(torch.tensor([0.3, 0.1, 0.2], dtype=torch.float64))
    summed = blocks.sums(torch.tensor([[-0.0, 1.5, -2.0]], dtype=torch.float64))
    assert summed.tolist() == [[0.0, -2.0, 1.5]]
    assert not torch.signbit(summed[0, 0]).item()  # -0.0 would print as "-0.000"


def test_ranking_computes_only_what_is_asked_and_the_same_values():
    p = _predictions()
    scores, positive = torch.from_numpy(p.score).double(), torch.from_numpy(p.label == 1)
    counts = resample_counts(p.group, 20, seed=0)
    every = ranking_on_counts(scores, positive, counts)
    alone = ranking_on_counts(scores, positive, counts, metrics=("auprc",))
    assert list(alone) == ["auprc"]
    assert torch.equal(alone["auprc"].nan_to_num(-1), every["auprc"].nan_to_num(-1))


def test_metrics_in_passes_of_a_few_rows_are_bit_identical_to_one_pass(monkeypatch):
    p = _predictions(n_per_group=200)
    counts = resample_counts(p.group, 50, seed=9)
    monkeypatch.setattr(B, "PASS_ELEMENTS", 2**40)  # every row in one pass
    whole = _metrics(_Run(p), counts)
    monkeypatch.setattr(B, "PASS_ELEMENTS", 7 * 1000)  # 7 rows a pass over 1,000 examples
    passes = _metrics(_Run(p), counts)
    assert whole.keys() == passes.keys()
    for key in whole:
        bits = [v.numpy().view(np.int64) for v in (whole[key], passes[key])]
        np.testing.assert_array_equal(*bits, err_msg=key)


def test_paired_differences_use_the_same_resamples():
    p = _predictions(seed=1)
    better = Predictions(
        p.probs,
        np.where(p.probs.argmax(1) != p.label, 1.0, 0.0) + p.score,
        p.label,
        p.group,
        p.group_names,
    )
    a, b = paired(better, p, resamples=200, seed=0)
    alone = bootstrap(better, resamples=200, seed=0)
    np.testing.assert_array_equal(a["id_vs_error/auroc"], alone["id_vs_error/auroc"])
    difference = a["id_vs_error/auroc"] - b["id_vs_error/auroc"]
    low, high = interval(difference)
    assert 0 < low < high  # a score that knows the errors beats its base, everywhere
    same, again = paired(p, p, resamples=50)
    assert all(np.array_equal(same[k], again[k], equal_nan=True) for k in same)


def test_a_paired_bootstrap_refuses_different_examples():
    p = _predictions()
    shuffled = Predictions(p.probs, p.score, np.roll(p.label, 1), p.group, p.group_names)
    with pytest.raises(ValueError, match="same examples"):
        paired(p, shuffled, resamples=10)


def test_interval_is_the_percentile_interval_of_defined_values():
    values = np.concatenate([np.arange(1000, dtype=float), [np.nan] * 5])
    low, high = interval(values)
    assert (low, high) == pytest.approx(np.percentile(np.arange(1000), [2.5, 97.5]))
    assert np.isnan(interval(np.full(3, np.nan))[0])
    # An undefined metric (no errors in the set) is NaN in every resample, not a number.
    p = _predictions()
    perfect = p.probs.copy()
    ids = p.label >= 0
    perfect[ids] = np.eye(5, dtype=np.float32)[p.label[ids]]
    q = Predictions(perfect, p.score, p.label, p.group, p.group_names)
    assert np.isnan(bootstrap(q, resamples=5)["id_vs_error/auroc"]).all()
