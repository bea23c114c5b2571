"""Evaluation: one pass over every evaluation set, then every metric from the record.

The record holds per-example outputs only, so metrics (and bootstrap intervals) can always be
recomputed from ``scores.npz`` without the model.

Tasks, as in the paper's Appendix F:

- **ID ok | ID err**: positives are wrong predictions, negatives right ones, over the ID test split
  and every CID set together (also reported per severity).
- **ID ok | OOD**: positives are OOD inputs, negatives correctly classified ID test inputs;
  misclassified ID inputs are left out.
- **Selective prediction** (AURC, risk at 80/90/95% coverage, selective NLL at 90%): on the ID
  test split, and on ID + CID.
- **Calibration** (NLL, Brier, ECE with 15 adaptive bins) and accuracy: on the ID test split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from uqbench import metrics as M
from uqbench.datamodule import UQDataModule
from uqbench.method import UQMethod

COVERAGES = (0.8, 0.9, 0.95)
EVAL_BATCH = 512


@dataclass
class EvalRecord:
    """Per-example outputs. ``probs`` [N, C]; ``score`` [N] (higher = more uncertain);
    ``label`` [N] (-1 for OOD); ``group`` [N] indexes ``group_names`` (``id``,
    ``cid/<corruption>/<severity>``, ``ood``)."""

    probs: np.ndarray
    score: np.ndarray
    label: np.ndarray
    group: np.ndarray
    group_names: list[str]

    def save(self, path: Path) -> None:
        with open(path, "wb") as handle:
            np.savez_compressed(
                handle,
                probs=self.probs,
                score=self.score,
                label=self.label,
                group=self.group,
                group_names=np.array(self.group_names),
            )

    @classmethod
    def load(cls, path: Path) -> EvalRecord:
        with np.load(path, allow_pickle=False) as data:
            return cls(
                data["probs"],
                data["score"],
                data["label"],
                data["group"],
                [str(n) for n in data["group_names"]],
            )


@torch.no_grad()
def predict(method: UQMethod, datamodule: UQDataModule) -> EvalRecord:
    """Run ``method`` once over every evaluation set of ``datamodule``."""
    method.eval()
    chunks, names = [], []
    for index, eval_set in enumerate(datamodule.eval_sets()):
        names.append(eval_set.name)
        for x, y in _loader(eval_set.dataset):
            out = method(x)
            groups = np.full(len(y), index, dtype=np.int32)
            chunks.append(
                (out.probs.float().numpy(), out.score.double().numpy(), y.numpy(), groups)
            )
    return _stack(chunks, names)


@torch.no_grad()
def predict_posthoc(methods: list[Any], datamodule: UQDataModule) -> dict[int, EvalRecord]:
    """Fit and evaluate post-hoc methods that share one backbone from one recorded pass per split.

    The train split is recorded only if a method asks for it. Returns ``id(method)`` -> record.
    """
    from uqbench.posthoc import RecordRequest, record

    backbone = methods[0].backbone
    request = RecordRequest()
    for method in methods:
        request = request | method.record_request()
        method.eval()
    train = None
    if any(m.needs_train_record for m in methods):
        train = record(backbone, _loader(datamodule.train_set), request)
    dev = record(backbone, _loader(datamodule.dev_set), request)
    dev_mix = record(backbone, datamodule.dev_mix_dataloader(), request)
    for method in methods:
        method.fit_record(train, dev, dev_mix)
    parts: dict[int, list[tuple[np.ndarray, ...]]] = {id(m): [] for m in methods}
    names = []
    for index, eval_set in enumerate(datamodule.eval_sets()):
        names.append(eval_set.name)
        rec = record(backbone, _loader(eval_set.dataset), request)
        groups = np.full(len(rec.labels), index, dtype=np.int32)
        for method in methods:
            out = method.output(rec.out)
            parts[id(method)].append(
                (out.probs.float().numpy(), out.score.double().numpy(), rec.labels.numpy(), groups)
            )
    return {key: _stack(chunks, names) for key, chunks in parts.items()}


def _loader(dataset: Any) -> DataLoader:
    return DataLoader(dataset, batch_size=EVAL_BATCH)


def _stack(chunks: list[tuple[np.ndarray, ...]], names: list[str]) -> EvalRecord:
    probs, scores, labels, groups = (np.concatenate(c) for c in zip(*chunks, strict=True))
    return EvalRecord(probs, scores, labels.astype(np.int64), groups, names)


def _ranking(scores: np.ndarray, positives: np.ndarray) -> dict[str, float]:
    return {
        "auroc": M.auroc(scores, positives),
        "auprc": M.auprc(scores, positives),
        "fpr95": M.fpr_at_tpr(scores, positives, 0.95),
    }


def _selective(score: np.ndarray, probs: np.ndarray, label: np.ndarray) -> dict[str, float]:
    errors = probs.argmax(1) != label
    out = {"aurc": M.aurc(score, errors)}
    for coverage in COVERAGES:
        out[f"risk@{round(coverage * 100)}"] = M.risk_at_coverage(score, errors, coverage)
    out["snll@90"] = M.selective_nll(score, probs, label, 0.9)
    return out


def compute_metrics(record: EvalRecord) -> dict[str, Any]:
    """Every metric of the report from a record (see the module docstring for the tasks)."""
    names = np.array(record.group_names)[record.group]
    kind = np.array([n.split("/")[0] for n in names])
    severity = np.array([int(n.split("/")[2]) if n.startswith("cid/") else 0 for n in names])
    is_id, is_cid, is_ood = kind == "id", kind == "cid", kind == "ood"
    probs, score, label = record.probs.astype(np.float64), record.score, record.label
    correct = probs.argmax(1) == label
    id_or_cid = is_id | is_cid

    result: dict[str, Any] = {
        "counts": {
            "id": int(is_id.sum()),
            "cid": int(is_cid.sum()),
            "ood": int(is_ood.sum()),
            "id_errors": int((is_id & ~correct).sum()),
            "id_cid_errors": int((id_or_cid & ~correct).sum()),
        },
        "accuracy": {"id": M.accuracy(probs[is_id], label[is_id])},
    }
    severities = sorted(set(severity[is_cid].tolist()))
    if severities:
        by_severity = {
            str(s): M.accuracy(probs[severity == s], label[severity == s]) for s in severities
        }
        result["accuracy"]["cid"] = by_severity
        result["accuracy"]["cid_mean"] = float(np.mean(list(by_severity.values())))
    result["id_vs_error"] = _ranking(score[id_or_cid], ~correct[id_or_cid])
    result["id_vs_error_by_severity"] = {
        str(s): M.auroc(score[mask], ~correct[mask])
        for s in [0, *severities]
        for mask in [(severity == s) & id_or_cid]
    }
    if is_ood.any():
        keep = (is_id & correct) | is_ood
        result["id_vs_ood"] = _ranking(score[keep], is_ood[keep])
    result["selective"] = {"id": _selective(score[is_id], probs[is_id], label[is_id])}
    if is_cid.any():
        result["selective"]["id+cid"] = _selective(
            score[id_or_cid], probs[id_or_cid], label[id_or_cid]
        )
    result["calibration"] = {
        "nll": M.nll(probs[is_id], label[is_id]),
        "brier": M.brier(probs[is_id], label[is_id]),
        "ece": M.adaptive_ece(probs[is_id], label[is_id], 15),
    }
    return result
