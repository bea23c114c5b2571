"""Metrics against scikit-learn, closed forms and brute-force references, ties included."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score, roc_curve

from uqbench import metrics as M

RNG = np.random.default_rng(0)
CASES = [
    # (scores, targets): continuous, heavy ties, all tied, tiny
    (RNG.normal(size=300), RNG.integers(0, 2, 300)),
    (RNG.integers(0, 4, 300).astype(float), RNG.integers(0, 2, 300)),
    (np.zeros(50), RNG.integers(0, 2, 50)),
    (np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])),
]


@pytest.mark.parametrize("scores,targets", CASES)
def test_auroc_matches_sklearn(scores, targets):
    assert M.auroc(scores, targets) == pytest.approx(roc_auc_score(targets, scores), abs=1e-12)


@pytest.mark.parametrize("scores,targets", CASES)
def test_auprc_matches_sklearn_average_precision(scores, targets):
    expected = average_precision_score(targets, scores)
    assert M.auprc(scores, targets) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("scores,targets", CASES)
def test_fpr95_matches_roc_curve(scores, targets):
    fpr, tpr, _ = roc_curve(targets, scores, drop_intermediate=False)
    distance = np.abs(tpr - 0.95)
    expected = fpr[distance == distance.min()].min()
    assert M.fpr_at_tpr(scores, targets) == pytest.approx(expected)


def test_ranking_metrics_are_nan_for_a_single_class_and_raise_on_empty():
    scores = np.array([0.2, 0.5, 0.9])
    for fn in (M.auroc, M.fpr_at_tpr):
        assert math.isnan(fn(scores, np.zeros(3)))
        assert math.isnan(fn(scores, np.ones(3)))
    assert math.isnan(M.auprc(scores, np.zeros(3)))
    assert M.auprc(scores, np.ones(3)) == 1.0  # only positives: every threshold is precise
    for fn in (M.auroc, M.auprc, M.aurc):
        with pytest.raises(ValueError, match="no examples"):
            fn(np.array([]), np.array([]))


def test_inputs_are_validated():
    with pytest.raises(ValueError, match="NaN"):
        M.auroc([0.1, float("nan")], [0, 1])
    with pytest.raises(ValueError, match="0/1"):
        M.auroc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="must match"):
        M.auroc([0.1, 0.2, 0.3], [0, 1])


def test_auroc_perfect_and_inverted():
    assert M.auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert M.auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0


def _aurc_brute(scores, errors):
    """Plain trapezoid over k/N with a fixed order (no ties in the inputs that use it)."""
    order = np.argsort(scores, kind="stable")
    e = np.asarray(errors, float)[order]
    k = np.arange(1, len(e) + 1)
    return np.trapezoid(np.cumsum(e) / k, k / len(e))


def test_aurc_without_ties_is_the_plain_trapezoid():
    scores, errors = RNG.normal(size=200), RNG.integers(0, 2, 200)
    assert M.aurc(scores, errors) == pytest.approx(_aurc_brute(scores, errors), abs=1e-12)


def test_aurc_with_ties_is_the_mean_over_orderings_of_tied_examples():
    scores = np.array([0.0, 1.0, 1.0, 1.0, 2.0])
    errors = np.array([0, 1, 0, 0, 1])
    # Average over all orderings of the tied block, each ordering a plain trapezoid.
    import itertools

    areas = []
    for perm in itertools.permutations([1, 2, 3]):
        order = [0, *perm, 4]
        e = errors[order].astype(float)
        k = np.arange(1, 6)
        areas.append(np.trapezoid(np.cumsum(e) / k, k / 5))
    assert M.aurc(scores, errors) == pytest.approx(np.mean(areas), abs=1e-12)


def test_aurc_closed_forms():
    n = 40
    errors = np.r_[np.ones(10), np.zeros(30)]
    # A constant score: expected risk is the error rate at every coverage.
    assert M.aurc(np.zeros(n), errors) == pytest.approx(0.25 * (1 - 1 / n))
    # A perfect ranking: no risk until the first error is accepted.
    perfect = errors + 0.0  # errors get the highest uncertainty
    k = np.arange(1, n + 1)
    risk = np.maximum(k - 30, 0) / k
    assert M.aurc(perfect, errors) == pytest.approx(np.trapezoid(risk, k / n))
    assert math.isnan(M.aurc([0.3], [1]))


def test_risk_at_coverage_accepts_whole_tie_blocks_from_above():
    scores = np.array([0.1, 0.2, 0.2, 0.2, 0.9])
    errors = np.array([0, 0, 1, 0, 1])
    # 40% coverage needs 2 examples; the tie block at 0.2 is accepted whole: 4 examples.
    assert M.risk_at_coverage(scores, errors, 0.4) == pytest.approx(1 / 4)
    assert M.risk_at_coverage(scores, errors, 0.2) == 0.0
    assert M.risk_at_coverage(scores, errors, 1.0) == pytest.approx(2 / 5)
    with pytest.raises(ValueError, match="coverage"):
        M.risk_at_coverage(scores, errors, 0.0)


def test_risk_at_coverage_matches_brute_force_without_ties():
    scores, errors = RNG.normal(size=101), RNG.integers(0, 2, 101)
    for coverage in (0.5, 0.8, 0.9, 0.95):
        keep = np.argsort(scores)[: math.ceil(coverage * 101)]
        assert M.risk_at_coverage(scores, errors, coverage) == pytest.approx(errors[keep].mean())


def _probs(n=200, c=5, seed=1):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c)) * 2
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return p, rng.integers(0, c, n)


def test_nll_and_brier_against_references():
    p, y = _probs()
    assert M.nll(p, y) == pytest.approx(log_loss(y, p, labels=range(5)), abs=1e-10)
    onehot = np.eye(5)[y]
    assert M.brier(p, y) == pytest.approx(((p - onehot) ** 2).sum(1).mean() / 5)
    # A certain, correct prediction has zero loss and zero Brier score.
    assert M.brier(np.eye(3), [0, 1, 2]) == 0.0
    assert M.nll(np.eye(3), [0, 1, 2]) == pytest.approx(0.0, abs=1e-12)


def test_selective_nll_is_the_nll_of_the_accepted():
    p, y = _probs(100)
    scores = np.random.default_rng(3).normal(size=100)
    keep = np.argsort(scores)[:90]
    assert M.selective_nll(scores, p, y, 0.9) == pytest.approx(M.nll(p[keep], y[keep]))


def _ece_reference(p, y, bins):
    conf, pred = p.max(1), p.argmax(1)
    order = np.argsort(conf, kind="stable")
    total = 0.0
    for chunk in np.array_split(order, bins):
        if len(chunk):
            total += len(chunk) * abs((pred[chunk] == y[chunk]).mean() - conf[chunk].mean())
    return total / len(y)


@pytest.mark.parametrize("n", [7, 15, 200, 1001])
def test_adaptive_ece_matches_equal_mass_reference(n):
    p, y = _probs(n)
    assert M.adaptive_ece(p, y, 15) == pytest.approx(_ece_reference(p, y, 15), abs=1e-12)


def test_ece_closed_form_for_constant_confidence():
    # Every prediction at confidence 0.7 and 50% accuracy: one bin gives |0.5 - 0.7| = 0.2;
    # so do 15 bins of two when right and wrong alternate in the (stable) sorted order.
    p = np.tile([0.7, 0.3], (30, 1))
    y = np.array([0, 1] * 15)
    assert M.adaptive_ece(p, y, n_bins=1) == pytest.approx(0.2)
    assert M.adaptive_ece(p, y, n_bins=15) == pytest.approx(0.2)
    # With one example a bin, each bin is all right (|1 - 0.7|) or all wrong (|0 - 0.7|).
    assert M.adaptive_ece(p[:10], y[:10], n_bins=15) == pytest.approx(0.5)


def test_metric_classes_accumulate_batches_like_the_functions():
    scores, targets = CASES[1]
    p, y = _probs(300)
    pairs = [
        (M.AUROC(), M.auroc(scores, targets)),
        (M.AUPRC(), M.auprc(scores, targets)),
        (M.FPRAtTPR(0.95), M.fpr_at_tpr(scores, targets)),
        (M.AURC(), M.aurc(scores, targets)),
        (M.RiskAtCoverage(0.9), M.risk_at_coverage(scores, targets, 0.9)),
    ]
    for metric, expected in pairs:
        for chunk in np.array_split(np.arange(300), 7):
            metric.update(torch.tensor(scores[chunk]), torch.tensor(targets[chunk]))
        assert metric.compute().item() == pytest.approx(expected, abs=1e-12)
    for metric, fn in [
        (M.NLL(), M.nll),
        (M.BrierScore(), M.brier),
        (M.AdaptiveECE(), M.adaptive_ece),
        (M.Accuracy(), M.accuracy),
    ]:
        for chunk in np.array_split(np.arange(300), 4):
            metric.update(torch.tensor(p[chunk]), torch.tensor(y[chunk]))
        assert metric.compute().item() == pytest.approx(fn(p, y), abs=1e-12)
    snll = M.SelectiveNLL(0.9)
    snll.update(torch.tensor(scores), torch.tensor(p), torch.tensor(y))
    assert snll.compute().item() == pytest.approx(M.selective_nll(scores, p, y, 0.9))


@pytest.mark.filterwarnings("ignore:.*was called before the ``update`` method.*")
def test_metric_class_without_updates_raises_clearly():
    with pytest.raises(ValueError, match="no examples"):
        M.AUROC().compute()


class _Tunable:
    """A stand-in method: a 2 x 2 grid whose objective is given, NaN for one candidate."""

    def __init__(self, values, fixed_b=None, higher_is_better=True):
        from uqbench.method import Objective

        self.values, self.applied = values, None
        self.objective = Objective("test objective", higher_is_better)
        self.b = (fixed_b,) if fixed_b is not None else (1, 2)

    def search_space(self):
        return {"a": ("x", "y"), "b": self.b}

    def tuning_scorer(self, data):
        return lambda c: self.values[(c["a"], c["b"])]

    def apply(self, choice):
        self.applied = choice


def test_tuning_loop_records_every_candidate_ranks_nan_last_and_respects_fixed_values():
    from uqbench.tuning import tune

    values = {("x", 1): 0.6, ("x", 2): math.nan, ("y", 1): 0.9, ("y", 2): 0.9}
    method = _Tunable(values)
    record = tune(method, data=None)
    assert method.applied == {"a": "y", "b": 1}  # best; the tie goes to the first candidate
    assert [c["params"] for c in record["candidates"]] == [
        {"a": "x", "b": 1},
        {"a": "x", "b": 2},
        {"a": "y", "b": 1},
        {"a": "y", "b": 2},
    ]
    assert record["candidates"][1]["value"] != record["candidates"][1]["value"]  # NaN kept
    assert record["searched"] == ["a", "b"] and record["fixed"] == []
    lower = _Tunable({k: (v if v == v else 0.0) for k, v in values.items()}, higher_is_better=False)
    tune(lower, None)
    assert lower.applied == {"a": "x", "b": 2}  # minimizing
    fixed = _Tunable(values, fixed_b=2)
    record = tune(fixed, None)
    assert fixed.applied == {"a": "y", "b": 2} and record["fixed"] == ["b"]


def test_metric_table_tasks_against_scikit_learn():
    from sklearn.metrics import roc_auc_score
    from uqbench.methods.temperature import fit_temperature

    from uqbench.metric_table import compute_metrics, lookup, spec
    from uqbench.predictions import Predictions

    rng = np.random.default_rng(0)
    names = ["dev", "id", "cid/blur/1", "cid/noise/1", "ood/near", "ood/far"]
    sizes = [60, 80, 70, 70, 50, 40]
    group = np.repeat(np.arange(len(names)), sizes)
    n = len(group)
    logits = rng.normal(size=(n, 5)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    label = np.where(group >= 4, -1, rng.integers(0, 5, n))
    score = rng.normal(size=n) + (probs.argmax(1) != label)  # informative, with noise
    p = Predictions(
        probs.astype(np.float32), score, label.astype(np.int32), group.astype(np.int32), names
    )
    m = compute_metrics(p)
    probs32 = p.probs.astype(np.float64)
    wrong = probs32.argmax(1) != label
    pooled = (group >= 1) & (group <= 3)
    assert m["id_vs_error"]["auroc"] == pytest.approx(roc_auc_score(wrong[pooled], score[pooled]))
    per_set = [roc_auc_score(wrong[group == g], score[group == g]) for g in (2, 3)]
    assert m["id_vs_error_cid_mean"]["auroc"] == pytest.approx(np.mean(per_set))
    ok_id = (group == 1) & ~wrong
    for g, name in ((4, "near"), (5, "far")):
        keep = ok_id | (group == g)
        expected = roc_auc_score(group[keep] == g, score[keep])
        assert m["id_vs_ood"][name]["auroc"] == pytest.approx(expected)
    mean = (m["id_vs_ood"]["near"]["auroc"] + m["id_vs_ood"]["far"]["auroc"]) / 2
    assert lookup(m, "id_vs_ood/mean/auroc") == pytest.approx(mean)
    assert m["counts"]["ood"] == {"near": 50, "far": 40} and m["counts"]["dev"] == 60
    dev = group == 0
    log_probs = torch.from_numpy(probs32).clamp_min(1e-12).log()
    t = fit_temperature(log_probs[dev], torch.from_numpy(label[dev]))
    assert m["calibration_ts"]["temperature"] == pytest.approx(t)
    scaled = (log_probs / t).softmax(-1).float().double()
    assert m["calibration_ts"]["nll"] == pytest.approx(M.nll(scaled[group == 1], label[group == 1]))
    # Directions and keys come from the table.
    assert spec("id_vs_ood/near/auroc").higher_is_better
    assert not spec("selective/id/aurc").higher_is_better


def test_dev_metrics_are_the_test_tables_metrics_on_the_dev_group():
    from sklearn.metrics import roc_auc_score

    from uqbench.metric_table import dev_metrics
    from uqbench.predictions import Predictions

    rng = np.random.default_rng(3)
    n = 400
    logits = rng.normal(size=(n, 3))
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    label = rng.integers(0, 3, n).astype(np.int32)
    group = np.repeat([0, 1], n // 2).astype(np.int32)  # dev, then id
    score = rng.random(n) + (probs.argmax(1) != label)
    p = Predictions(probs, score, label, group, ["dev", "id"])
    dev = dev_metrics(p)
    errors = probs.argmax(1) != label
    assert dev["id_vs_error"]["auroc"] == pytest.approx(roc_auc_score(errors[:200], score[:200]))
    assert dev["accuracy"]["id"] == pytest.approx(1 - errors[:200].mean())
    assert set(dev) == {"id_vs_error", "selective/id", "calibration", "accuracy"}
    assert dev_metrics(Predictions(probs, score, label, np.ones(n, np.int32), ["dev", "id"])) == {}
