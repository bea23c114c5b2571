"""What a W&B run holds besides its metrics: the run folder's files as a versioned artifact and
the per-set metrics as a ``wandb.Table`` (called once the run folder is written)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

RUN_FILES = ("metrics.json", "scores.npz", "config.json", "checkpoint.pt")
PER_SET_COLUMNS = ["set", "accuracy", "auroc_id_vs_error", "auroc_id_vs_ood"]


def per_set_rows(metrics: dict[str, Any]) -> list[list[Any]]:
    """One row per evaluation set: ``id``, each CID severity ``cid s<k>``, each OOD set ``ood
    <name>``, with the metrics that set has (None where it has none)."""
    accuracy = metrics.get("accuracy", {})
    by_severity = metrics.get("id_vs_error_by_severity", {})
    rows = [["id", accuracy.get("id"), metrics.get("id_vs_error", {}).get("auroc"), None]]
    for severity, value in accuracy.get("cid", {}).items():
        rows.append([f"cid s{severity}", value, by_severity.get(severity), None])
    for name, task in metrics.get("id_vs_ood", {}).items():
        if name != "mean":
            rows.append([f"ood {name}", None, None, task.get("auroc")])
    return rows


def finish_written() -> None:
    """Finish the current W&B run and return once its files are written.

    ``wandb.finish()`` only informs W&B's service process, which closes the run's transaction
    log (``run-*.wandb``) later, on its own; a run folder committed or read before then holds a
    partial log (seen in CI: the header alone). Tearing the service down waits for it; the next
    ``wandb.init`` starts a new one."""
    import wandb

    wandb.finish()
    wandb.teardown()


def log_run(run: Any, folder: Path, name: str, document: dict[str, Any]) -> None:
    """Log the written run ``folder`` (named ``name`` once committed) to the W&B ``run``."""
    import wandb

    artifact = wandb.Artifact(
        f"run-{name}",
        type="uqbench-run",
        description="a uqbench run folder: metrics, per-example scores, config, checkpoint",
        metadata={k: document.get(k) for k in ("method", "data", "backbone", "seed")},
    )
    for file in RUN_FILES:
        if (folder / file).is_file():
            artifact.add_file(str(folder / file), name=file)
    run.log_artifact(artifact)
    table = wandb.Table(columns=PER_SET_COLUMNS, data=per_set_rows(document["metrics"]))
    run.log({"final/per_set": table})


def log_leaderboard(folder: Path, group: str | None) -> None:
    """Log a written leaderboard folder (``<out>/<data>/``) as one W&B run of ``group``: every
    figure as an image, every exported table (``tables/*.csv``) as a ``wandb.Table``."""
    import csv
    import os

    import wandb

    run = wandb.init(
        project=os.environ.get("WANDB_PROJECT", "uqbench"),
        group=group,
        job_type="leaderboard",
        name=f"leaderboard-{folder.name}",
        dir=str(folder),
        settings=wandb.Settings(silent=True),
    )
    try:
        images = {f"figures/{p.stem}": wandb.Image(str(p)) for p in sorted(folder.glob("*.png"))}
        tables = {}
        for path in sorted((folder / "tables").glob("*.csv")):
            with path.open() as handle:
                header, *rows = list(csv.reader(handle))
            tables[f"tables/{path.stem}"] = wandb.Table(columns=header, data=rows)
        run.log(images | tables)
    finally:
        finish_written()
