"""Run folders: exclusive, atomic, and auditable.

A run writes into ``<name>.partial/`` and renames it to ``<name>/`` only when everything is
written, so a run that is killed leaves no folder that looks finished. Creation is exclusive
(``mkdir`` fails if the folder exists), and a ``.owner`` file in the partial folder says which
process (host and pid) writes it: a partial folder is *stale* only when its owner is gone, and
only then is it cleaned, so two runs never touch each other's folders.

Layout of a finished run folder::

    config.json      the resolved configuration: every plugin argument, defaults included
    metrics.json     metrics (``schema_version``), tuning records, cost facts, timings, and the
                     SHA-256 of config.json (``config_sha256``): an edited config is refused
    scores.npz       per-example predictions (:mod:`uqbench.predictions`)
    checkpoint.pt    the method's state_dict (load with ``torch.load(..., weights_only=True)``)
    logs/            the Lightning logger's files (CSV by default)
    test-*.json      one per ``uqbench test``, beside the fit's record, never over it
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from uqbench.errors import RunDirError

SCHEMA_VERSION = 2
CONFIG, METRICS, SCORES, CHECKPOINT = "config.json", "metrics.json", "scores.npz", "checkpoint.pt"
OWNER = ".owner"
PARTIAL = ".partial"
CREATION_GRACE_S = 60.0  # a partial folder without an owner file yet is being created


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


def canonical_json(obj: Any) -> str:
    return json.dumps(json_safe(obj), indent=2, sort_keys=False, allow_nan=False) + "\n"


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, canonical_json(obj).encode())


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 of a configuration's canonical JSON (key order does not matter)."""
    text = json.dumps(json_safe(config), sort_keys=True, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _owner_alive(partial: Path) -> bool:
    """Whether the process that owns ``partial`` may still be writing it."""
    try:
        owner = json.loads((partial / OWNER).read_text())
    except FileNotFoundError:
        try:
            return time.time() - partial.stat().st_mtime < CREATION_GRACE_S
        except FileNotFoundError:
            return False
    except (OSError, ValueError):
        return False  # an unreadable owner file was left half-written by a killed process
    if owner.get("host") != socket.gethostname():
        return True  # another machine's process: we cannot tell, so never touch it
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _remove_stale(partial: Path) -> bool:
    """Remove ``partial`` if its owner is gone; rename first, so one cleaner wins a race."""
    if _owner_alive(partial):
        return False
    trash = partial.with_name(f"{partial.name}.stale-{os.getpid()}")
    try:
        os.rename(partial, trash)
    except OSError:
        return False
    shutil.rmtree(trash, ignore_errors=True)
    return True


def clean_stale(parent: Path) -> list[Path]:
    """Remove every ``*.partial`` folder under ``parent`` whose owner process is gone."""
    if not parent.is_dir():
        return []
    return [p for p in sorted(parent.glob(f"*{PARTIAL}")) if p.is_dir() and _remove_stale(p)]


class RunFolder:
    """A run folder being written: files go to ``path`` (the ``.partial`` folder) until
    :meth:`commit` renames it to ``final``; :meth:`abort` removes it."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.path = final.with_name(final.name + PARTIAL)

    @classmethod
    def create(cls, parent: Path, name: str) -> RunFolder:
        """Make ``parent/name.partial`` exclusively and claim it; fail clearly otherwise."""
        folder = cls(parent / name)
        if folder.final.exists():
            raise RunDirError(f"run folder {folder.final} already exists; choose another name=")
        try:
            parent.mkdir(parents=True, exist_ok=True)
            try:
                folder.path.mkdir()
            except FileExistsError:
                if not _remove_stale(folder.path):
                    raise RunDirError(
                        f"run folder {folder.path} is being written by another live run; "
                        f"choose another name= (or wait for it to finish)"
                    ) from None
                folder.path.mkdir()
            owner = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
            atomic_write_json(folder.path / OWNER, owner)
        except OSError as exc:
            raise RunDirError(
                f"cannot write run folder under {parent}: {exc.strerror or exc}. "
                f"Choose a writable folder with out=<path>."
            ) from exc
        return folder

    def commit(self) -> Path:
        (self.path / OWNER).unlink(missing_ok=True)
        try:
            os.rename(self.path, self.final)
        except OSError as exc:
            raise RunDirError(
                f"cannot finish run folder {self.final}: {exc.strerror or exc} (another run "
                f"took that name); the complete results are in {self.path}"
            ) from exc
        return self.final

    def abort(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunDirError(
            f"{path} is damaged ({type(exc).__name__}: {exc}); this {what} cannot be trusted. "
            f"Re-run `uqbench fit` to recreate the run."
        ) from None
    if not isinstance(value, dict):
        raise RunDirError(f"{path} is damaged (not a JSON object); re-run `uqbench fit`")
    return value


def read_run(run: Path) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """A finished run folder's config, metrics document and checkpoint path, checked: a missing,
    damaged or edited record is a clear error."""
    if run.name.endswith(PARTIAL):
        raise RunDirError(f"{run} is an unfinished run (killed or failed); it cannot be evaluated")
    config_path, metrics_path, checkpoint = run / CONFIG, run / METRICS, run / CHECKPOINT
    if not config_path.is_file():
        raise RunDirError(f"{run} is not a run folder: {CONFIG} is missing")
    if not checkpoint.is_file():
        raise RunDirError(
            f"checkpoint missing: {checkpoint} does not exist; re-run `uqbench fit` to recreate it"
        )
    if not metrics_path.is_file():
        raise RunDirError(f"{metrics_path} is missing: the fit's record is incomplete")
    config = _read_json(config_path, "configuration")
    document = _read_json(metrics_path, "record")
    if document.get("config_sha256") != config_hash(config):
        raise RunDirError(
            f"{config_path} does not match the configuration this run was fitted with (its "
            f"SHA-256 differs from metrics.json's config_sha256): it was edited. Evaluating it "
            f"would mix two configurations; run `uqbench fit` with the settings you want instead."
        )
    return config, document, checkpoint
