"""The deployed model's quality against the float method: accuracy, failure detection (AUROC,
AUPRC) and the rank agreement of the scores, on every evaluation set a datamodule has (the ID
test split, each CID severity pooled over the corruptions, each OOD set)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

OOD_EXAMPLES = 2000  # per OOD set
CID_EXAMPLES = 1000  # per severity, pooled over the corruptions


def _auroc(scores: np.ndarray, positives: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if positives.all() or not positives.any():
        return None  # one class only: undefined
    return float(roc_auc_score(positives, scores))


def _auprc(scores: np.ndarray, positives: np.ndarray) -> float | None:
    from sklearn.metrics import average_precision_score

    if positives.all() or not positives.any():
        return None
    return float(average_precision_score(positives, scores))


def rank_agreement(float_score: np.ndarray, int8_score: np.ndarray) -> float | None:
    """Spearman's rank correlation of the int8 score with the float score (1: same order)."""
    from scipy.stats import spearmanr

    if len(float_score) < 2 or np.ptp(float_score) == 0 or np.ptp(int8_score) == 0:
        return None
    return float(spearmanr(float_score, int8_score).statistic)


def first(dataset, limit: int) -> tuple[torch.Tensor, np.ndarray]:
    """The first ``limit`` examples of ``dataset`` and their labels."""
    xs, ys, seen = [], [], 0
    for x, y in DataLoader(dataset, batch_size=256):
        xs.append(x)
        ys.append(np.asarray(y))
        seen += len(x)
        if seen >= limit:
            break
    return torch.cat(xs)[:limit], np.concatenate(ys)[:limit]


def _both(method: Any, device: Any, x: torch.Tensor) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"float": (predictions, scores), "int8": (...)} of the method and its device model."""
    with torch.no_grad():
        out = method(x)
    probs, score = device(x)
    return {
        "float": (out.probs.argmax(1).numpy(), out.score.double().numpy()),
        "int8": (probs.argmax(1), score.astype(np.float64)),
    }


def _classified(paths: dict[str, tuple[np.ndarray, np.ndarray]], y: np.ndarray) -> dict[str, Any]:
    """Accuracy and failure detection (errors positive) of both paths on labelled inputs."""
    return {
        "examples": int(len(y)),
        "accuracy": {k: float((p == y).mean()) for k, (p, _) in paths.items()},
        "auroc_id_vs_error": {k: _auroc(s, p != y) for k, (p, s) in paths.items()},
        "auprc_id_vs_error": {k: _auprc(s, p != y) for k, (p, s) in paths.items()},
        "score_rank_agreement": rank_agreement(paths["float"][1], paths["int8"][1]),
    }


def compare(method: Any, datamodule: Any, device: Any) -> dict[str, Any]:
    """Int8 (``device``: float inputs -> (probabilities, scores)) against the float method on
    the ID test split, each CID severity (up to ``CID_EXAMPLES``, the same number of each
    corruption's first examples) and each OOD set (its first ``OOD_EXAMPLES``, against the
    correctly classified ID examples of each path)."""
    xs, ys = zip(*DataLoader(datamodule.test_set, batch_size=256), strict=True)
    x_test, y_test = torch.cat(xs), torch.cat(ys).numpy()
    test = _both(method, device, x_test)
    quality = {"set": "id (the test split)", **_classified(test, y_test)}
    quality["prediction_agreement"] = float((test["int8"][0] == test["float"][0]).mean())
    quality["auroc_id_ok_vs_ood"] = {}
    for name in datamodule.ood_names:
        x_ood, _ = first(datamodule.ood_set(name), OOD_EXAMPLES)
        ood = _both(method, device, x_ood)
        auroc, auprc = {}, {}
        for path, (predictions, scores) in test.items():
            ok = predictions == y_test
            positives = np.r_[np.zeros(ok.sum()), np.ones(len(x_ood))]
            both = np.r_[scores[ok], ood[path][1]]
            auroc[path], auprc[path] = _auroc(both, positives), _auprc(both, positives)
        quality["auroc_id_ok_vs_ood"][name] = {
            "examples": int(len(x_ood)),
            **auroc,
            "auprc": auprc,
            "score_rank_agreement": rank_agreement(ood["float"][1], ood["int8"][1]),
        }
    quality["cid"] = {}
    corruptions = tuple(datamodule.corruptions)
    for severity in datamodule.severities if corruptions else ():
        per = -(-CID_EXAMPLES // len(corruptions))
        parts = [first(datamodule.cid_set(c, severity), per) for c in corruptions]
        x_cid = torch.cat([x for x, _ in parts])
        y_cid = np.concatenate([y for _, y in parts])
        quality["cid"][str(severity)] = _classified(_both(method, device, x_cid), y_cid)
    return quality
