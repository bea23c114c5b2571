"""Streaming monitoring from recorded outputs: the stream's layout, the event rule, the
operating points and the metrics, each against a direct computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uqbench import bootstrap as B
from uqbench import metrics as M
from uqbench.bootstrap import CHUNK, ranking_on_counts, resample_counts
from uqbench.predictions import Predictions
from uqbench.streams import (
    CID,
    ID,
    OOD,
    Stream,
    StreamSpec,
    _resampled_auprc,
    alarm,
    best_f1_threshold,
    build,
    delays,
    evaluate,
    event_labels,
    events,
    recall_threshold,
    split_halves,
    true_onsets,
    windowed_accuracy,
)

CORRUPTIONS = ("fog", "snow", "noise")


def _predictions(seed: int = 0, knows_errors: float = 0.0, n: int = 300) -> Predictions:
    """A run whose accuracy falls with severity (as a real model's does) and is 0 on OOD."""
    names = ["dev", "id", *[f"cid/{c}/{s}" for c in CORRUPTIONS for s in range(1, 6)], "ood/far"]
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(len(names)), n).astype(np.int32)
    severity = np.array(
        [
            int(names[g].split("/")[2]) if "/" in names[g] and names[g].startswith("cid") else 0
            for g in group
        ]
    )
    label = rng.integers(0, 4, len(group)).astype(np.int32)
    right = rng.random(len(group)) < 0.95 - 0.15 * severity
    predicted = np.where(right, label, (label + 1) % 4)
    label[group == len(names) - 1] = -1
    probs = np.full((len(group), 4), 0.1, dtype=np.float32)
    probs[np.arange(len(group)), predicted] = 0.7
    score = rng.random(len(group)) + knows_errors * (predicted != label)
    return Predictions(probs, score, label, group, names)


def test_the_stream_follows_the_papers_layout():
    p = _predictions()
    dev, _ = split_halves(p, 0)
    spec = StreamSpec()
    s = build(p, dev, spec, seed=1)
    assert len(s.index) == 2000 + 5 * 1000 + 4 * 100
    expected = [ID] * 2000
    for sev in range(1, 6):
        expected += [CID] * 1000 + ([OOD] * 100 if sev < 5 else [])
    assert s.kind.tolist() == expected
    names = np.array(p.group_names)[p.group[s.index]]
    cid = names[s.kind == CID].reshape(-1, 200)  # blocks of 200 frames
    for block, row in enumerate(cid):
        corruption, severity = CORRUPTIONS[block % 3], block // 5 + 1
        assert set(row) == {f"cid/{corruption}/{severity}"}
    assert set(names[s.kind == OOD]) == {"ood/far"} and set(names[s.kind == ID]) == {"id"}
    assert np.array_equal(s.correct, p.probs[s.index].argmax(1) == p.label[s.index])


def test_dev_and_test_streams_draw_from_disjoint_underlying_examples():
    p = _predictions()
    dev, test = split_halves(p, 0)
    first = {name: np.flatnonzero(p.group == g)[0] for g, name in enumerate(p.group_names)}
    positions = {name: set((dev[name] - first[name]).tolist()) for name in p.group_names}
    assert positions["id"] == positions["cid/fog/3"] == positions["cid/noise/5"]
    for name in p.group_names:
        assert not set(dev[name]) & set(test[name])
        assert len(dev[name]) + len(test[name]) == 300


def test_windowed_accuracy_and_the_event_rule():
    correct = np.ones(1000, dtype=bool)
    correct[300:500] = False  # a drop
    correct[560:700] = False  # 60 frames later: merged with the first
    correct[900:930] = False  # too short once the window has passed: dropped
    acc = windowed_accuracy(correct, 100)
    naive = [np.mean(correct[t - 99 : t + 1]) if t >= 99 else np.nan for t in range(1000)]
    np.testing.assert_allclose(acc, naive)
    stream = Stream(np.arange(1000), np.zeros(1000), correct)
    found = events(stream, (0.99, 0.01), 100)  # band: below 0.96
    assert found == [(304, 794)]  # from 5 errors in the window to the last with 5; merged
    labels = event_labels(1000, found)
    assert labels.sum() == 491 and labels[304] and not labels[303]


def test_operating_points_against_brute_force():
    rng = np.random.default_rng(3)
    scores = np.round(rng.random(500), 2)  # ties
    labels = rng.random(500) < scores * 0.6
    best, chosen = -1.0, None
    for t in sorted(set(scores), reverse=True):
        flagged = scores >= t
        tp = (flagged & labels).sum()
        f1 = 2 * tp / (flagged.sum() + labels.sum())
        if f1 > best + 1e-12:
            best, chosen = f1, t
    assert best_f1_threshold(scores, labels) == chosen
    t90 = recall_threshold(scores, labels, 0.9)
    assert (scores[labels] >= t90).mean() >= 0.9
    higher = min(s for s in set(scores) if s > t90)
    assert (scores[labels] >= higher).mean() < 0.9  # the highest such threshold


def test_detection_delay_and_misses():
    """Delays count from each event's true onset; a crossing before it does not count, and an
    event with no crossing within it is missed."""
    alarms = np.zeros(100)
    alarms[[5, 15, 18, 60]] = 1.0
    onsets = np.array([8, 40, 58])
    found = delays(alarms, [(10, 30), (40, 55), (58, 80)], onsets, 0.5)
    np.testing.assert_array_equal(found, [7, np.nan, 2])


def test_the_alarm_is_a_causal_trailing_mean():
    scores = np.random.default_rng(0).random(300)
    got = alarm(scores, 50)
    naive = [scores[max(t - 49, 0) : t + 1].mean() for t in range(300)]
    np.testing.assert_allclose(got, naive)
    changed = scores.copy()
    changed[200:] += 5  # the future never moves the past
    np.testing.assert_array_equal(alarm(changed, 50)[:200], got[:200])


def test_true_onsets_are_the_shift_starts_before_each_labelled_onset():
    stream = Stream(np.arange(500), np.zeros(500), np.ones(500, bool), np.array([100, 300, 400]))
    found = true_onsets(stream, [(160, 250), (300, 320), (420, 499), (30, 60)])
    np.testing.assert_array_equal(found, [100, 300, 400, 30])


def _constructed(late: int, seed: int = 0) -> tuple[Predictions, StreamSpec]:
    """A run made to a known answer: ID and dev examples are right with score 0; every CID
    example is wrong; OOD too. A CID or OOD example's score is 1, except that ``late`` marks
    the examples that will fill the first ``late`` frames of each shift with score 0. The
    stream has one severity (ID 400 frames, CID 400 frames), so it has one shift, at 400."""
    spec = StreamSpec(
        id_frames=400,
        cid_frames=400,
        cycle=400,
        severities=(1,),
        window=50,
        alarm_window=1,
        band_frames=2000,
        test_streams=2,
        seed=seed,
    )
    names = ["dev", "id", "cid/fog/1", "ood/far"]
    n = 2000
    group = np.repeat(np.arange(4), n).astype(np.int32)
    label = np.zeros(len(group), np.int32)
    predicted = np.where(group >= 2, 1, 0)
    label[group == 3] = -1
    probs = np.full((len(group), 2), 0.0, np.float32)
    probs[np.arange(len(group)), predicted] = 1.0
    score = (group >= 2).astype(np.float64)
    return Predictions(probs, score, label, group, names), spec


@pytest.mark.parametrize("late", [0, 30])
def test_a_score_that_rises_late_shows_that_delay(late, monkeypatch):
    """Constructed streams with a known answer: every CID frame is an error, so the accuracy
    drop starts at the shift (frame 400); the labelled event starts later, once the window has
    gathered errors. A score that rises ``late`` frames after the shift has a delay of exactly
    ``late`` frames, measured from the shift, not from the labelled onset."""
    import uqbench.streams as S

    p, spec = _constructed(late)
    real_build = S.build

    def build_with_a_late_score(p, pools, spec, seed):
        stream = real_build(p, pools, spec, seed)
        shifted = stream.index[stream.kind == CID][:late]
        p.score[shifted] = 0.0  # the first `late` frames of the shift: not yet risen
        return stream

    monkeypatch.setattr(S, "build", build_with_a_late_score)
    result = evaluate(p, spec, resamples=100)
    assert result.median_delay == late and result.miss_rate == 0
    assert result.events == spec.test_streams  # one event per test stream
    assert result.id_fpr == 0.0  # clean ID frames never reach the threshold


def test_a_score_that_never_rises_on_test_misses_every_event():
    """The dev stream's shift raises the score (so the dev threshold is 1); on the test
    streams' examples (the other half) it never rises: every test event is missed."""
    p, spec = _constructed(0)
    _, test_pools = split_halves(p, spec.seed)
    p.score[test_pools["cid/fog/1"]] = 0.0
    p.score[test_pools["ood/far"]] = 0.0
    result = evaluate(p, spec, resamples=100)
    assert result.threshold == 1.0
    assert result.miss_rate == 1.0 and np.isnan(result.median_delay) and result.events == 2


def test_a_score_that_knows_the_errors_monitors_better_than_a_random_one():
    spec = StreamSpec(test_streams=2)
    good = evaluate(_predictions(knows_errors=1.0), spec, resamples=200)
    random = evaluate(_predictions(knows_errors=0.0), spec, resamples=200)
    assert good.auprc > random.auprc + 0.1
    assert good.auprc_interval[0] <= good.auprc <= good.auprc_interval[1]
    assert good.events > 0 and 0 <= good.miss_rate <= 1
    assert good.id_fpr < random.id_fpr
    assert abs(good.abstention - spec.budget) < 0.05  # the controller holds its budget
    assert evaluate(_predictions(knows_errors=1.0), spec, resamples=200) == good  # fixed seeds
    # AUPRC of the first test stream recomputed from the frames directly.
    from uqbench.streams import id_band, streams

    p = _predictions(knows_errors=1.0)
    _, tests, band = streams(p, spec)
    per_stream = [
        M.auprc(alarm(p.score[t.index], 100), event_labels(len(t.index), events(t, band, 100)))
        for t in tests
    ]
    assert good.auprc == pytest.approx(np.mean(per_stream))
    assert band == id_band(p, spec)


def test_a_run_without_corruptions_has_no_stream():
    p = _predictions()
    keep = ~np.char.startswith(np.array(p.group_names)[p.group], "cid/")
    names = ["dev", "id", "ood/far"]
    remap = {p.group_names.index(n): i for i, n in enumerate(names)}
    q = Predictions(
        p.probs[keep],
        p.score[keep],
        p.label[keep],
        np.array([remap[g] for g in p.group[keep]], dtype=np.int32),
        names,
    )
    with pytest.raises(ValueError, match="no corruptions"):
        evaluate(q)


@pytest.mark.parametrize(
    "change",
    [
        {"window": 0},
        {"alarm_window": -1},
        {"severities": (9,)},
        {"severities": ()},
        {"recall": 2.0},
        {"budget": 0.0},
        {"test_streams": 0},
        {"window": 20_000},
    ],
)
def test_a_nonsense_stream_layout_is_refused(change):
    from uqbench.errors import ConfigError

    with pytest.raises(ConfigError, match="invalid stream layout"):
        StreamSpec(**change)


def test_resampled_auprc_in_chunks_equals_one_pass(monkeypatch):
    """The stream AUPRC's resamples go through in chunks and passes; every value is the one a
    single pass over all rows gives, bit for bit (and the point estimate's, with counts of
    one)."""
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=700), 1)  # ties
    labels = rng.random(700) < 0.2
    resamples = CHUNK * 2 + 17
    counts = resample_counts(np.zeros(700, dtype=np.int32), resamples, seed=4)
    monkeypatch.setattr(B, "PASS_ELEMENTS", 2**40)
    one_pass = ranking_on_counts(torch.from_numpy(scores), torch.from_numpy(labels), counts)
    monkeypatch.setattr(B, "PASS_ELEMENTS", 700 * 9)
    chunked = _resampled_auprc(scores, labels, resamples, seed=4)
    np.testing.assert_array_equal(chunked, one_pass["auprc"].numpy())
    ones = torch.ones(1, 700, dtype=torch.float64)
    exact = ranking_on_counts(torch.from_numpy(scores), torch.from_numpy(labels), ones)
    assert float(exact["auprc"][0]) == pytest.approx(M.auprc(scores, labels), rel=1e-12)
