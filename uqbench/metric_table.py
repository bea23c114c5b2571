"""The metric table: every metric declared once, and the evaluation it drives.

Each :class:`MetricSpec` names a metric, its task and subset, the ``torchmetrics.Metric`` that
computes it, whether higher is better and how it is displayed. :data:`TABLE` drives
``metrics.json`` (its keys are the paths ``task/metric``), the printed report, the leaderboard
columns and the metric a sweep optimizes (:func:`spec`). Tasks, as in the paper's Appendix F:

- ``id_vs_error``: positives are wrong predictions, negatives right ones, pooled over the ID
  test split and every CID set; ``id_vs_error_cid_mean`` is the mean over corruption x
  severity of the same metric within each CID set (the paper's F.2 rule);
- ``id_vs_ood/<set>``: OOD inputs of one named set are positives, correctly classified ID test
  inputs negatives (misclassified ID inputs are left out); ``id_vs_ood/mean`` averages the sets;
- ``selective/id`` and ``selective/id+cid``: AURC, risk at 80/90/95% coverage, selective NLL;
- ``calibration``: NLL, Brier and ECE on ID with the method's probabilities;
  ``calibration_ts``: the same with its log-probabilities temperature-scaled on dev (one T
  fitted by NLL on the ``dev`` group), so every method can be compared calibrated (paper C.4).

Every metric is a :class:`torchmetrics.Metric`, updated once per evaluation set (a chunk of
examples) and computed once, in float64 and exact on ties (:mod:`uqbench.metrics`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from uqbench import metrics as M
from uqbench.predictions import Predictions

COVERAGES = (0.8, 0.9, 0.95)


@dataclass(frozen=True)
class MetricSpec:
    """One metric of one task: ``key`` is its path in ``metrics.json`` (``task/name``)."""

    task: str
    name: str
    subset: str
    make: Callable[[], Metric]
    higher_is_better: bool
    fmt: str = ".3f"
    function: Callable[..., float] | None = None  # the same value from whole arrays at once

    @property
    def key(self) -> str:
        return f"{self.task}/{self.name}"


def _ranking(task: str, subset: str) -> list[MetricSpec]:
    return [
        MetricSpec(task, "auroc", subset, M.AUROC, True, function=M.auroc),
        MetricSpec(task, "auprc", subset, M.AUPRC, True, function=M.auprc),
        MetricSpec(task, "fpr95", subset, M.FPRAtTPR, False, function=M.fpr_at_tpr),
    ]


def _selective(task: str, subset: str) -> list[MetricSpec]:
    return [
        MetricSpec(task, "aurc", subset, M.AURC, False, ".4f"),
        *(
            MetricSpec(
                task, f"risk@{round(c * 100)}", subset, lambda c=c: M.RiskAtCoverage(c), False
            )
            for c in COVERAGES
        ),
        MetricSpec(task, "snll@90", subset, lambda: M.SelectiveNLL(0.9), False),
    ]


def _calibration(task: str, subset: str) -> list[MetricSpec]:
    return [
        MetricSpec(task, "nll", subset, M.NLL, False),
        MetricSpec(task, "brier", subset, M.BrierScore, False, ".4f"),
        MetricSpec(task, "ece", subset, lambda: M.AdaptiveECE(15), False),
    ]


def table(ood_sets: list[str]) -> list[MetricSpec]:
    """Every metric reported for a datamodule whose OOD sets are ``ood_sets``."""
    rows = [
        *_ranking("id_vs_error", "ID + every CID set, pooled"),
        *_ranking("id_vs_error_cid_mean", "mean over corruption x severity"),
    ]
    for name in [*ood_sets, *(["mean"] if ood_sets else [])]:
        subset = "mean over OOD sets" if name == "mean" else f"ID ok vs OOD set {name}"
        rows += _ranking(f"id_vs_ood/{name}", subset)
    rows += _selective("selective/id", "ID") + _selective("selective/id+cid", "ID + CID")
    rows += _calibration("calibration", "ID, the method's probabilities")
    rows += _calibration("calibration_ts", "ID, probabilities temperature-scaled on dev")
    rows += [MetricSpec("accuracy", "id", "ID", M.Accuracy, True)]
    return rows


TABLE = table(["<set>"])  # the shape of the table, for documentation and lookups


def spec(key: str) -> MetricSpec:
    """The spec whose key is ``key`` (``id_vs_ood/<any set>/auroc`` matches any OOD set)."""
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == "id_vs_ood" and parts[1] != "mean":
        parts[1] = "<set>"
    for row in table(["<set>"]):
        if row.key == "/".join(parts):
            return row
    raise KeyError(f"no metric {key!r}; keys look like {TABLE[0].key}")


def lookup(metrics: dict[str, Any], key: str) -> Any:
    """The value at path ``key`` of a ``metrics.json`` ``metrics`` object (None if absent)."""
    node: Any = metrics
    for part in key.split("/"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


# --------------------------------------------------------------------------- evaluation
@dataclass
class EvalGroups:
    """Per-example views of a :class:`Predictions`: set names, kinds (``dev``, ``id``, ``cid``,
    ``ood``), CID severity (0 elsewhere) and correctness."""

    names: np.ndarray
    kind: np.ndarray
    severity: np.ndarray
    correct: np.ndarray

    @classmethod
    def of(cls, p: Predictions) -> EvalGroups:
        parts = [n.split("/") for n in p.group_names]
        kind = np.array([q[0] for q in parts], dtype=object)[p.group]
        severity = np.array([int(q[2]) if q[0] == "cid" else 0 for q in parts])[p.group]
        names = np.array(p.group_names, dtype=object)[p.group]
        return cls(names, kind, severity, p.probs.argmax(1) == p.label)


class _Arrays:
    """A :class:`Predictions` as float64 tensors, with each evaluation set's indices, made once."""

    def __init__(self, p: Predictions) -> None:
        self.probs = torch.from_numpy(p.probs).double()
        self.score = torch.from_numpy(p.score)
        self.label = torch.from_numpy(p.label.astype(np.int64))
        self.by_group = [np.flatnonzero(p.group == g) for g in range(len(p.group_names))]

    def chunks(self, keep: np.ndarray) -> Iterator[np.ndarray]:
        """Index arrays of the kept examples, one per evaluation set (the per-set updates)."""
        for index in self.by_group:
            kept = index[keep[index]]
            if len(kept):
                yield kept


def _compute(specs: list[MetricSpec], a: _Arrays, keep: np.ndarray, target: Any) -> dict:
    """Update each spec's Metric chunk by chunk with the kept examples, compute once.
    ``target``: 0/1 positives per example, or ``"probs"`` for probability metrics."""
    if not keep.any():
        return {}
    instances = [s.make() for s in specs]
    for index in a.chunks(keep):
        i = torch.from_numpy(index)
        for metric in instances:
            if isinstance(target, str):  # calibration and accuracy metrics
                metric.update(a.probs[i], a.label[i])
            elif isinstance(metric, M.SelectiveNLL):
                metric.update(a.score[i], a.probs[i], a.label[i])
            else:
                metric.update(a.score[i], torch.from_numpy(target[index]))
    return {s.name: float(m.compute()) for s, m in zip(specs, instances, strict=True)}


def temperature_scaled(p: Predictions, is_dev: np.ndarray) -> tuple[Predictions, float]:
    """``p`` with probabilities ``softmax(log p / T)``, T fitted by NLL on the dev group."""
    from uqbench.calibration import fit_temperature

    log_probs = torch.from_numpy(p.probs).double().clamp_min(M.PROB_FLOOR).log()
    labels = torch.from_numpy(p.label.astype(np.int64))
    t = fit_temperature(log_probs[is_dev], labels[is_dev])
    scaled = (log_probs / t).softmax(-1).numpy().astype(np.float32)
    return Predictions(scaled, p.score, p.label, p.group, p.group_names), t


def _mean_defined(values: list[float]) -> float:
    """Mean over the sets where the metric is defined (a set without errors has no AUROC)."""
    defined = [v for v in values if v == v]
    return float(np.mean(defined)) if defined else float("nan")


def compute_metrics(p: Predictions) -> dict[str, Any]:
    """Every metric of :func:`table` from per-example predictions."""
    g, a = EvalGroups.of(p), _Arrays(p)
    is_id, is_cid, is_dev = g.kind == "id", g.kind == "cid", g.kind == "dev"
    id_or_cid = is_id | is_cid
    errors = ~g.correct
    ood_sets = [n.split("/", 1)[1] for n in p.group_names if n.startswith("ood/")]
    specs = {s.key: s for s in table(ood_sets)}

    def rows(task: str) -> list[MetricSpec]:
        return [s for s in specs.values() if s.task == task]

    result: dict[str, Any] = {
        "counts": {
            "dev": int(is_dev.sum()),
            "id": int(is_id.sum()),
            "cid": int(is_cid.sum()),
            "ood": {name: int((g.names == f"ood/{name}").sum()) for name in ood_sets},
            "id_errors": int((is_id & errors).sum()),
            "id_cid_errors": int((id_or_cid & errors).sum()),
        },
        "accuracy": _compute(rows("accuracy"), a, is_id, "probs"),
    }
    cid_sets = sorted({n for n in g.names[is_cid]}, key=p.group_names.index)
    severities = sorted(set(g.severity[is_cid].tolist()))
    sev = g.severity
    if severities:
        by_severity = {
            str(s): _compute(rows("accuracy"), a, is_cid & (sev == s), "probs")["id"]
            for s in severities
        }
        result["accuracy"]["cid"] = by_severity
        result["accuracy"]["cid_mean"] = float(np.mean(list(by_severity.values())))
    result["id_vs_error"] = _compute(rows("id_vs_error"), a, id_or_cid, errors)
    if cid_sets:
        # One set at a time is one chunk: the plain functions give the Metrics' values.
        sets = [np.flatnonzero(g.names == n) for n in cid_sets]
        result["id_vs_error_cid_mean"] = {
            s.name: _mean_defined([s.function(p.score[i], errors[i]) for i in sets])
            for s in rows("id_vs_error_cid_mean")
        }
        sev_masks = {0: is_id, **{s: is_cid & (sev == s) for s in severities}}
        result["id_vs_error_by_severity"] = {
            str(s): M.auroc(p.score[mask], errors[mask]) for s, mask in sev_masks.items()
        }
    if ood_sets:
        per_ood = {}
        for name in ood_sets:
            ood = g.names == f"ood/{name}"
            per_ood[name] = _compute(rows(f"id_vs_ood/{name}"), a, (is_id & g.correct) | ood, ood)
        per_ood["mean"] = {
            s.name: _mean_defined([per_ood[n][s.name] for n in ood_sets])
            for s in rows("id_vs_ood/mean")
        }
        result["id_vs_ood"] = per_ood
    result["selective"] = {"id": _compute(rows("selective/id"), a, is_id, errors)}
    if is_cid.any():
        result["selective"]["id+cid"] = _compute(rows("selective/id+cid"), a, id_or_cid, errors)
    result["calibration"] = _compute(rows("calibration"), a, is_id, "probs")
    if is_dev.any():
        scaled, t = temperature_scaled(p, is_dev)
        result["calibration_ts"] = {
            "temperature": t,
            **_compute(rows("calibration_ts"), _Arrays(scaled), is_id, "probs"),
        }
    return result


DEV_TASKS = ("id_vs_error", "selective/id", "calibration", "accuracy")


def dev_metrics(p: Predictions) -> dict[str, dict[str, float]]:
    """The final (calibrated) method's metrics on the clean ``dev`` group, task by task with
    the test table's metric names (``accuracy`` under ``id``): what a sweep may optimize, since
    test metrics must never choose hyperparameters. Empty when ``p`` has no dev group. The
    post-training fits read dev, so these are in-sample for what was fitted there."""
    g, a = EvalGroups.of(p), _Arrays(p)
    is_dev = g.kind == "dev"
    if not is_dev.any():
        return {}
    errors = ~g.correct
    result = {}
    for task in DEV_TASKS:
        rows = [s for s in TABLE if s.task == task]
        target = "probs" if task in ("calibration", "accuracy") else errors
        result[task] = _compute(rows, a, is_dev, target)
    return result


def dev_spec(key: str) -> MetricSpec:
    """The spec of a dev metric key (``id_vs_error/auroc``); KeyError if there is none."""
    found = spec(key)
    if found.task not in DEV_TASKS:
        raise KeyError(key)
    return found


def flat_metrics(tree: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """A nested metrics document as ``{"a/b/c": value}``, numbers only, NaN left out."""
    flat: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_metrics(value, name + "/"))
        elif isinstance(value, (int, float)) and value == value:  # skips NaN
            flat[name] = float(value)
    return flat
