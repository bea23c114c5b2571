"""Streaming monitoring from recorded outputs: the stream's layout, the event rule, the
operating points and the metrics, each against a direct computation."""

from __future__ import annotations

import numpy as np
import pytest

from uqbench import metrics as M
from uqbench.predictions import Predictions
from uqbench.streams import (
    CID,
    ID,
    OOD,
    Stream,
    StreamSpec,
    best_f1_threshold,
    build,
    delays,
    evaluate,
    event_labels,
    events,
    recall_threshold,
    split_halves,
    windowed_accuracy,
)

CORRUPTIONS = ("fog", "snow", "noise")


def _predictions(seed: int = 0, knows_errors: float = 0.0, n: int = 300) -> Predictions:
    """A run whose accuracy falls with severity (as a real model's does) and is 0 on OOD."""
    names = ["dev", "id", *[f"cid/{c}/{s}" for c in CORRUPTIONS for s in range(1, 6)], "ood/far"]
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(len(names)), n).astype(np.int32)
    severity = np.array([int(names[g].split("/")[2]) if "/" in names[g] and
                         names[g].startswith("cid") else 0 for g in group])  # fmt: skip
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
    scores = np.zeros(100)
    scores[[15, 18, 60]] = 1.0
    found = delays(scores, [(10, 30), (40, 55), (58, 80)], 0.5)
    np.testing.assert_array_equal(found, [5, np.nan, 2])


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
    per_stream = [M.auprc(p.score[t.index], event_labels(len(t.index), events(t, band, 100)))
                  for t in tests]  # fmt: skip
    assert good.auprc == pytest.approx(np.mean(per_stream))
    assert band == id_band(p, spec)


def test_a_run_without_corruptions_has_no_stream():
    p = _predictions()
    keep = ~np.char.startswith(np.array(p.group_names)[p.group], "cid/")
    names = ["dev", "id", "ood/far"]
    remap = {p.group_names.index(n): i for i, n in enumerate(names)}
    q = Predictions(p.probs[keep], p.score[keep], p.label[keep],
                    np.array([remap[g] for g in p.group[keep]], dtype=np.int32), names)  # fmt: skip
    with pytest.raises(ValueError, match="no corruptions"):
        evaluate(q)
