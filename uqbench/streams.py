"""Streaming monitoring (the paper's section 4.2, appendices D.3-D.5 and E), from a run's
recorded per-example outputs: no second forward pass.

A **stream** is a sequence of frames, each one example of the run's evaluation sets (its
probabilities, score and label come from ``scores.npz``): an ID segment, then for each severity
a CID segment whose corruption type changes every ``cycle`` frames, with a short OOD burst
between severities (:class:`StreamSpec` holds the lengths and order; every one is an option).
The development stream and the test streams draw from disjoint halves of the examples (the
same positions in the ID test split and in every CID set, which hold the same underlying images
corrupted), with fixed seeds; a pool smaller than a segment is drawn with replacement.

**Events** come from a labelled copy: the trailing windowed accuracy (``window`` frames; an OOD
frame is never correct) below the ID band ``mean - 3 sd`` of the windowed accuracy of a long
ID-only run over the separate ID dev split. Events closer than ``window`` frames are merged and
events shorter than ``window`` dropped (D.4).

**The monitor** never sees labels. Its alarm statistic at frame t is the trailing mean of the
method's per-example score over the last ``alarm_window`` frames (those there are, at the start
of a stream): causal, and on the same time scale as the event rule. The paper leaves the
statistic open; thresholding a single example's score instead would flag clean ID frames at the
rate the score ranks correct ones high, and "detect" any shift on its first frame.

**Onsets.** A shift starts where a CID severity segment or an OOD burst begins. An event's true
onset is the start of the latest shift at or before its labelled onset (the labelled onset lags:
the windowed accuracy needs errors to gather), so a delay counts from when the data changed.

**Per method** (:func:`evaluate`): frame-level event AUPRC of the alarm statistic on each test
stream; the threshold that maximizes event-frame F1 on the dev stream, frozen, and at it the
median detection delay (first frame at or after the true onset, within the event, whose alarm
reaches the threshold, minus the onset; crossings before the onset do not count) and the miss
rate (events with no such frame, those the stream ends in included) over the test streams'
events; the false-positive rate on the test streams' clean ID frames (ID segment, no event) at
the threshold whose event recall on the dev stream reaches 90%; and the budgeted
abstention controller (:mod:`uqbench.controller`) run over each test stream on the score
mapped through the dev stream's empirical CDF (a monotone map that leaves every ranking metric
unchanged and puts every method's score on [0, 1], so one controller gain fits all), with its
realised abstention rate and the accuracy of the frames it accepted. 95% intervals: AUPRC by
resampling frames, delay by resampling events (E, F.5), 1,000 resamples each.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from uqbench import metrics as M
from uqbench.bootstrap import CHUNK, RESAMPLES, interval, ranking_on_counts, resample_counts
from uqbench.controller import AbstentionController
from uqbench.metric_table import EvalGroups
from uqbench.predictions import Predictions

ID, CID, OOD = 0, 1, 2  # segment kinds


@dataclass(frozen=True)
class StreamSpec:
    """Lengths (frames) and order of a stream, the event rule and the operating points."""

    id_frames: int = 2000
    cid_frames: int = 1000  # per severity
    ood_frames: int = 100  # a burst between two severities
    cycle: int = 200  # a CID segment changes corruption type every `cycle` frames
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    window: int = 100  # sliding-window accuracy (m)
    alarm_window: int = 100  # frames in the monitor's trailing mean of the score
    band_frames: int = 10_000  # the ID-only run that sets the band
    test_streams: int = 3
    recall: float = 0.9  # the dev-matched recall of the clean-ID false-positive rate
    budget: float = 0.2  # the abstention controller's budget
    seed: int = 0

    def __post_init__(self) -> None:
        from uqbench.errors import ConfigError

        counts = ["id_frames", "cid_frames", "cycle", "window", "alarm_window"]
        counts += ["band_frames", "test_streams"]
        bad = [f"stream.{k}={getattr(self, k)} (>= 1)" for k in counts if getattr(self, k) < 1]
        if self.ood_frames < 0 or self.seed < 0:
            bad.append("stream.ood_frames and stream.seed (>= 0)")
        if not self.severities or not set(self.severities) <= {1, 2, 3, 4, 5}:
            bad.append(f"stream.severities={list(self.severities)} (a non-empty subset of 1-5)")
        if not 0 < self.recall <= 1 or not 0 < self.budget < 1:
            bad.append("stream.recall in (0, 1] and stream.budget in (0, 1)")
        if self.window > self.band_frames:
            bad.append("stream.window <= stream.band_frames")
        if bad:
            raise ConfigError(f"invalid stream layout: {'; '.join(bad)}")


PROTOCOL = 2  # the events/alarm/delay definitions' version: cached results of another are stale


@dataclass
class Stream:
    """Frames as example indices into the run's :class:`Predictions`, with their segment kind,
    the labelled copy's per-frame correctness and the frames where a shift starts (a CID
    severity segment or an OOD burst begins)."""

    index: np.ndarray
    kind: np.ndarray
    correct: np.ndarray
    shift_starts: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))


# --------------------------------------------------------------------------- building
def split_halves(p: Predictions, seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(dev pools, test pools): each evaluation set's example indices, split in two halves by
    position; sets of one size share the split, so an ID image and its corrupted copies land
    on the same side."""
    masks: dict[int, np.ndarray] = {}
    dev, test = {}, {}
    for g, name in enumerate(p.group_names):
        members = np.flatnonzero(p.group == g)
        n = len(members)
        if n not in masks:
            masks[n] = np.random.default_rng([seed, n]).permutation(n) < n // 2
        dev[name], test[name] = members[masks[n]], members[~masks[n]]
    return dev, test


def build(p: Predictions, pools: dict[str, np.ndarray], spec: StreamSpec, seed: int) -> Stream:
    """One stream: ID, then per severity a CID segment (types cycled) and an OOD burst between
    severities (D.7's order)."""
    corruptions = list(
        dict.fromkeys(n.split("/")[1] for n in p.group_names if n.startswith("cid/"))
    )
    oods = [n for n in p.group_names if n.startswith("ood/")]
    if not corruptions:
        raise ValueError("a stream needs CID sets: this run's data set has no corruptions")
    rng = np.random.default_rng([spec.seed, seed])

    def draw(name: str, frames: int) -> np.ndarray:
        pool = pools[name]
        if len(pool) == 0:
            raise ValueError(f"evaluation set {name} has no examples on this side of the split")
        return rng.choice(pool, frames, replace=len(pool) < frames)

    parts = [(draw("id", spec.id_frames), ID)]
    starts = []  # the part index where each shift starts
    block = 0
    for i, severity in enumerate(spec.severities):
        starts.append(len(parts))
        for start in range(0, spec.cid_frames, spec.cycle):
            name = f"cid/{corruptions[block % len(corruptions)]}/{severity}"
            block += 1
            if name not in pools:
                raise ValueError(f"the stream needs {name}, which this run did not evaluate")
            parts.append((draw(name, min(spec.cycle, spec.cid_frames - start)), CID))
        if oods and i < len(spec.severities) - 1:
            starts.append(len(parts))
            parts.append((draw(oods[i % len(oods)], spec.ood_frames), OOD))
    index = np.concatenate([frames for frames, _ in parts])
    kind = np.concatenate([np.full(len(f), k) for f, k in parts])
    first_frame = np.cumsum([0] + [len(f) for f, _ in parts])
    return Stream(index, kind, EvalGroups.of(p).correct[index], first_frame[starts])


# --------------------------------------------------------------------------- events
def windowed_accuracy(correct: np.ndarray, window: int) -> np.ndarray:
    """Trailing accuracy over ``window`` frames at each frame (NaN before the first full one)."""
    c = np.concatenate([[0.0], np.cumsum(correct, dtype=np.float64)])
    out = np.full(len(correct), np.nan)
    out[window - 1 :] = (c[window:] - c[:-window]) / window
    return out


def id_band(p: Predictions, spec: StreamSpec) -> tuple[float, float]:
    """(mean, sd) of the windowed accuracy of a long ID-only run over the ID dev split."""
    dev = np.flatnonzero(p.group == p.group_names.index("dev"))
    rng = np.random.default_rng([spec.seed, 999])
    frames = rng.choice(dev, spec.band_frames, replace=True)
    acc = windowed_accuracy(EvalGroups.of(p).correct[frames], spec.window)
    acc = acc[~np.isnan(acc)]
    return float(acc.mean()), float(acc.std())


def events(stream: Stream, band: tuple[float, float], window: int) -> list[tuple[int, int]]:
    """Event intervals [on, off] (frames, inclusive): windowed accuracy below mean - 3 sd,
    gaps shorter than ``window`` merged, events shorter than ``window`` dropped."""
    acc = windowed_accuracy(stream.correct, window)
    active = np.nan_to_num(acc, nan=np.inf) < band[0] - 3 * band[1]
    edges = np.diff(np.concatenate([[0], active.astype(np.int8), [0]]))
    runs = list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1, strict=True))
    merged: list[list[int]] = []
    for on, off in runs:
        if merged and on - merged[-1][1] - 1 < window:
            merged[-1][1] = int(off)
        else:
            merged.append([int(on), int(off)])
    return [(on, off) for on, off in merged if off - on + 1 >= window]


def event_labels(length: int, intervals: list[tuple[int, int]]) -> np.ndarray:
    labels = np.zeros(length, dtype=bool)
    for on, off in intervals:
        labels[on : off + 1] = True
    return labels


# --------------------------------------------------------------------------- operating points
def best_f1_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold (flag when score >= it) among the distinct scores with the highest
    event-frame F1; of equal F1 the highest threshold."""
    s, t = torch.from_numpy(scores).double(), torch.from_numpy(labels)
    fps, tps = M.threshold_counts(s, t)
    precision = tps / (tps + fps)
    recall = tps / max(int(t.sum()), 1)
    f1 = 2 * precision * recall / (precision + recall + 1e-12)
    thresholds = torch.sort(torch.unique(s), descending=True).values
    return float(thresholds[int(torch.argmax(f1))])  # argmax: the first maximum


def recall_threshold(scores: np.ndarray, labels: np.ndarray, recall: float) -> float:
    """The highest threshold whose event recall on these frames reaches ``recall``."""
    event_scores = np.sort(scores[labels])[::-1]
    needed = int(np.ceil(recall * len(event_scores) - 1e-9))
    return float(event_scores[max(needed, 1) - 1])


def alarm(scores: np.ndarray, window: int) -> np.ndarray:
    """The monitor's alarm statistic: at each frame the mean score of the last ``window`` frames
    (of the frames so far, before the first ``window``). Causal: frame t sees frames <= t."""
    c = np.concatenate([[0.0], np.cumsum(scores, dtype=np.float64)])
    t = np.arange(1, len(scores) + 1)
    first = np.maximum(t - window, 0)
    return (c[t] - c[first]) / (t - first)


def true_onsets(stream: Stream, intervals: list[tuple[int, int]]) -> np.ndarray:
    """Each event's true onset: the latest shift start at or before its labelled onset (the
    labelled onset itself for an event before any shift, in the ID segment)."""
    out = np.empty(len(intervals), dtype=np.int64)
    for k, (on, _) in enumerate(intervals):
        before = stream.shift_starts[stream.shift_starts <= on]
        out[k] = before.max() if len(before) else on
    return out


def delays(
    alarms: np.ndarray, intervals: list[tuple[int, int]], onsets: np.ndarray, threshold: float
) -> np.ndarray:
    """Frames from each event's true onset to the first frame of [onset, event end] whose alarm
    reaches ``threshold``; NaN where there is none (missed, E.4; an event the stream ends in
    without an alarm included)."""
    out = np.full(len(intervals), np.nan)
    for k, ((_, off), onset) in enumerate(zip(intervals, onsets, strict=True)):
        hit = np.flatnonzero(alarms[onset : off + 1] >= threshold)
        if len(hit):
            out[k] = hit[0]
    return out


def dev_cdf(dev_sorted: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The dev stream's empirical CDF at ``scores`` (``dev_sorted``: its scores, sorted): a
    monotone map of any method's score onto [0, 1]."""
    return np.searchsorted(dev_sorted, scores, side="right") / len(dev_sorted)


# --------------------------------------------------------------------------- per method
@dataclass
class StreamResult:
    """One method's stream metrics on one run (means over the test streams)."""

    auprc: float
    auprc_interval: tuple[float, float]
    median_delay: float  # frames, over detected events of every test stream
    delay_interval: tuple[float, float]
    miss_rate: float
    id_fpr: float  # on test ID frames, at the dev-matched recall
    abstention: float  # the controller's realised abstention rate
    accepted_accuracy: float
    events: int  # over the test streams
    threshold: float


def streams(p: Predictions, spec: StreamSpec) -> tuple[Stream, list[Stream], tuple[float, float]]:
    """(dev stream, test streams, ID band) of a run."""
    dev_pools, test_pools = split_halves(p, spec.seed)
    dev = build(p, dev_pools, spec, seed=0)
    tests = [build(p, test_pools, spec, seed=k + 1) for k in range(spec.test_streams)]
    return dev, tests, id_band(p, spec)


def evaluate(
    p: Predictions, spec: StreamSpec | None = None, resamples: int = RESAMPLES
) -> StreamResult:
    """Every stream metric of the run whose predictions are ``p``."""
    spec = spec or StreamSpec()
    dev, tests, band = streams(p, spec)
    dev_scores = alarm(p.score[dev.index], spec.alarm_window)
    dev_labels = event_labels(len(dev.index), events(dev, band, spec.window))
    if not dev_labels.any():
        raise ValueError("the dev stream has no accuracy-drop event: nothing to set a threshold")
    threshold = best_f1_threshold(dev_scores, dev_labels)
    at_recall = recall_threshold(dev_scores, dev_labels, spec.recall)
    dev_sorted = np.sort(p.score[dev.index])  # the controller maps per-example scores
    auprcs, lows, highs, all_delays, id_fprs, abstentions, accepted = [], [], [], [], [], [], []
    for test in tests:
        intervals = events(test, band, spec.window)
        labels = event_labels(len(test.index), intervals)
        scores = alarm(p.score[test.index], spec.alarm_window)
        if labels.any() and not labels.all():
            auprcs.append(M.auprc(scores, labels))
            low, high = interval(_resampled_auprc(scores, labels, resamples, spec.seed))
            lows.append(low), highs.append(high)
        all_delays.append(delays(scores, intervals, true_onsets(test, intervals), threshold))
        clean = (test.kind == ID) & ~labels
        id_fprs.append(float((scores[clean] >= at_recall).mean()))
        mapped = dev_cdf(dev_sorted, p.score[test.index])
        controller = AbstentionController(spec.budget, threshold=1 - spec.budget)
        abstain = controller.run(torch.from_numpy(mapped)).numpy()
        abstentions.append(float(abstain.mean()))
        accepted.append(float(test.correct[~abstain].mean()) if (~abstain).any() else np.nan)
    found = np.concatenate(all_delays)
    detected = found[~np.isnan(found)]
    return StreamResult(
        auprc=float(np.mean(auprcs)) if auprcs else np.nan,
        auprc_interval=(float(np.mean(lows)), float(np.mean(highs))) if lows else (np.nan, np.nan),
        median_delay=float(np.median(detected)) if len(detected) else np.nan,
        delay_interval=_delay_interval(found, resamples, spec.seed),
        miss_rate=float(np.isnan(found).mean()) if len(found) else np.nan,
        id_fpr=float(np.mean(id_fprs)),
        abstention=float(np.mean(abstentions)),
        accepted_accuracy=float(np.nanmean(accepted)),
        events=len(found),
        threshold=threshold,
    )


def _resampled_auprc(
    scores: np.ndarray, labels: np.ndarray, resamples: int, seed: int
) -> np.ndarray:
    """[resamples] frame-level AUPRC of a stream, its frames resampled (drawn a chunk of rows
    at a time, as the bootstrap draws them: [resamples, frames] counts at once take memory)."""
    every = np.zeros(len(scores), dtype=np.int32)  # frames are resampled as one set
    auprcs = []
    for first in range(0, resamples, CHUNK):
        counts = resample_counts(every, min(CHUNK, resamples - first), seed, first)
        ranking = ranking_on_counts(
            torch.from_numpy(scores), torch.from_numpy(labels), counts, metrics=("auprc",)
        )
        auprcs.append(ranking["auprc"].numpy())
    return np.concatenate(auprcs)


def _delay_interval(found: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """The median detection delay's 95% interval by resampling events (missed ones included
    in the draw, left out of each median, as the point estimate does)."""
    if len(found) == 0 or np.isnan(found).all():
        return (np.nan, np.nan)
    rng = np.random.default_rng(seed)
    draws = found[rng.integers(0, len(found), (resamples, len(found)))]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a draw of missed events only: NaN
        return interval(np.nanmedian(draws, axis=1))
