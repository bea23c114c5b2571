"""Run folders and atomic writes.

A run writes into ``<name>.partial/`` and renames it to ``<name>/`` only when everything is
written, so a run that is killed leaves no folder that looks finished, and no ``metrics.json``
beside a missing checkpoint. Readers (``uqbench test``, leaderboards) ignore ``*.partial``.

Layout of a finished run folder::

    config.json      the resolved configuration: every plugin argument, defaults included
    metrics.json     the metrics (``schema_version``), tuned values, cost facts, timings
    scores.npz       per-example probs [N, C], score [N], label [N] (-1: OOD), group [N] and
                     group_names: enough to recompute every metric and to bootstrap it
    checkpoint.pt    the method's state_dict (load with ``torch.load(..., weights_only=True)``)
    logs/            the Lightning logger's files (CSV by default)
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from uqbench.errors import RunDirError

SCHEMA_VERSION = 1
CONFIG, METRICS, SCORES, CHECKPOINT = "config.json", "metrics.json", "scores.npz", "checkpoint.pt"


def json_safe(value: Any) -> Any:
    """Recursively replace NaN/inf by None (JSON has neither) and tuples by lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: never half-written."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    text = json.dumps(json_safe(obj), indent=2, sort_keys=False, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())


class RunFolder:
    """A run folder being written: files go to ``path`` (the ``.partial`` folder) until
    :meth:`commit` renames it to ``final``; :meth:`abort` removes it."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.path = final.with_name(final.name + ".partial")

    @classmethod
    def create(cls, parent: Path, name: str) -> RunFolder:
        """Make ``parent/name.partial``; fail early and clearly if it cannot be written."""
        folder = cls(parent / name)
        if folder.final.exists():
            raise RunDirError(f"run folder {folder.final} already exists; choose another name=")
        try:
            parent.mkdir(parents=True, exist_ok=True)
            if folder.path.exists():  # left by a killed run with the same name
                shutil.rmtree(folder.path)
            folder.path.mkdir()
            probe = folder.path / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise RunDirError(
                f"cannot write run folder under {parent}: {exc.strerror or exc}. "
                f"Choose a writable folder with out=<path>."
            ) from exc
        return folder

    def commit(self) -> Path:
        os.replace(self.path, self.final)
        return self.final

    def abort(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def read_run(run: Path) -> tuple[dict[str, Any], Path]:
    """The config of a finished run folder and its checkpoint path, or a clear error."""
    if run.name.endswith(".partial"):
        raise RunDirError(f"{run} is an unfinished run (killed or failed); it cannot be evaluated")
    config_path, checkpoint = run / CONFIG, run / CHECKPOINT
    if not config_path.is_file():
        raise RunDirError(f"{run} is not a run folder: {CONFIG} is missing")
    if not checkpoint.is_file():
        raise RunDirError(
            f"checkpoint missing: {checkpoint} does not exist; re-run `uqbench fit` to recreate it"
        )
    return json.loads(config_path.read_text()), checkpoint
