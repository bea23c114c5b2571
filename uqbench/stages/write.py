"""The write stage: one run folder per method, its documents assembled and written atomically."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch

from uqbench.method import UQMethod
from uqbench.metric_table import compute_metrics, dev_metrics
from uqbench.predictions import Predictions
from uqbench.run_folder import (
    CHECKPOINT,
    CONFIG,
    METRICS,
    SCHEMA_VERSION,
    SCORES,
    RunFolder,
    atomic_write_json,
    config_hash,
)
from uqbench.stages.resolve import Resolved


def config_document(resolved: Resolved, run: dict[str, Any]) -> dict[str, Any]:
    """``config.json``: the resolved configuration, where it ran, and the versions."""
    return resolved.to_dict() | {
        "schema_version": SCHEMA_VERSION,
        "uqbench_command": "fit",
        "run": run,
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }


def metrics_document(
    resolved: Resolved, method: UQMethod, predictions: Predictions, **extra: Any
) -> dict[str, Any]:
    """``metrics.json``: every test metric, the final method's dev metrics (what sweeps
    optimize), what was fitted and tuned on dev, cost facts, extras."""
    extra = {k: v for k, v in extra.items() if v is not None}
    return {
        "schema_version": SCHEMA_VERSION,
        "method": resolved.config.method,
        "data": resolved.config.data,
        "backbone": resolved.backbone,
        "seed": resolved.config.seed,
        "metrics": compute_metrics(predictions),
        "dev_metrics": dev_metrics(predictions),
        "tuned": method.tuned(),
        "cost": method.cost_facts().to_dict(),
        **extra,
    }


def write_run(
    folder: RunFolder,
    config: dict[str, Any],
    method: UQMethod,
    predictions: Predictions,
    document: dict[str, Any],
) -> Path:
    """Write every file into the partial folder; ``metrics.json`` last (it means complete)."""
    atomic_write_json(folder.path / CONFIG, config)
    predictions.save(folder.path / SCORES)
    torch.save({"state_dict": method.state_dict()}, folder.path / CHECKPOINT)
    atomic_write_json(folder.path / METRICS, document | {"config_sha256": config_hash(config)})
    return folder.path
