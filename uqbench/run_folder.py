"""Run folders: exclusive, atomic, and auditable.

A run writes into ``<name>.partial/`` and renames it to ``<name>/`` only when everything is
written, so a run that is killed leaves no folder that looks finished. Creation is exclusive
(a scratch folder holding a ``.owner`` record, host and pid, is renamed into place, and the
rename fails if the folder exists): a partial folder is *stale* only when it has that record and
its owner is gone, and only then is it cleaned, so two runs never touch each other's folders and
no run ever removes a folder it did not make (a user's ``notes.partial``, say).

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


def json_safe(value: Any) -> Any:
    """Recursively replace NaN/inf by None (JSON has neither) and tuples by lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _umask() -> int:
    """The process's umask, read without changing it (``os.umask`` can only set it, and a
    set-and-restore races with other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: never half-written.
    The file gets the permissions a plain ``open`` would (0666 less the umask), not
    ``mkstemp``'s private 0600."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
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


NAME_MAX, PATH_MAX = 255, 4096  # Linux's limits, in bytes


def check_writable_folder(path: Path, option: str) -> None:
    """``path`` can be a folder this process writes into: every component at most 255 bytes,
    the whole at most 4,096, not an existing file, and its nearest existing ancestor a folder
    this process may write (a read-only mount included). Raises :class:`ConfigError` naming
    ``option`` and the fix; nothing is created."""
    from uqbench.errors import ConfigError

    path = Path(os.path.abspath(path))
    long = [part for part in path.parts if len(os.fsencode(part)) > NAME_MAX]
    if long or len(os.fsencode(str(path))) > PATH_MAX:
        what = f"a component of {len(os.fsencode(long[0]))} bytes" if long else "too long a path"
        raise ConfigError(
            f"{option}={str(path)[:80]}... has {what} (limits: {NAME_MAX} bytes a name, "
            f"{PATH_MAX} in all); choose a shorter path"
        )
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option}={path} is a file, not a folder; choose a folder")
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{option}={path}: {ancestor} is a file, not a folder; choose a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{option}={path}: {ancestor} cannot be written (read-only or not yours); choose a "
            "writable folder"
        )


def check_writable_file(path: Path, option: str) -> None:
    """``path`` can be a file this process writes: not a folder, in a writable folder."""
    from uqbench.errors import ConfigError

    if Path(path).is_dir():
        raise ConfigError(f"{option}={path} is a folder; give a file name (e.g. {path}/x.png)")
    check_writable_folder(Path(os.path.abspath(path)).parent, option)


def _this_host() -> str:
    return socket.gethostname()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process, alive
    return True


def _owner(partial: Path) -> dict[str, Any] | None:
    """The owner record this project wrote in ``partial``, or ``None`` where there is none: a
    folder without one was not made by a run (it is a user's, or a run's kept results)."""
    try:
        owner = json.loads((partial / OWNER).read_text())
    except (OSError, ValueError):
        return None  # written atomically, so an unreadable one is not ours either
    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int):
        return None
    return owner


def owner_alive(partial: Path) -> bool:
    """Whether the run that owns ``partial`` may still be writing it (alive on this host, or on
    another host, where we cannot tell)."""
    owner = _owner(partial)
    return owner is not None and _alive(owner)


def _alive(owner: dict[str, Any]) -> bool:
    return owner.get("host") != _this_host() or _pid_alive(owner["pid"])


def _remove_stale(partial: Path) -> bool:
    """Remove ``partial`` if a run of this project made it and its process is gone; rename
    first, so one cleaner wins a race. A folder without an owner record is never touched."""
    owner = _owner(partial)
    if owner is None or _alive(owner):
        return False
    trash = partial.with_name(f"{partial.name}.stale-{os.getpid()}")
    try:
        os.rename(partial, trash)
    except OSError:
        return False
    shutil.rmtree(trash, ignore_errors=True)
    return True


def scratch_path(parent: Path, base: str) -> Path:
    """A hidden scratch name under ``parent`` that says whose it is: ``.<base>@<host>@<pid>``
    (hostnames hold no ``@``), so what a killed process left can be told and removed."""
    return parent / f".{base}@{_this_host()}@{os.getpid()}"


def is_dead_scratch(path: Path) -> bool:
    """Whether ``path`` is a scratch file or folder of this project (:func:`scratch_path`, or
    ``<name>.partial.stale-<pid>`` while a stale run folder is removed) whose process on this
    host is gone."""
    name = path.name
    if name.startswith(".") and name.count("@") >= 2:
        _, host, pid = name.rsplit("@", 2)
        return host == _this_host() and pid.isdigit() and not _pid_alive(int(pid))
    _, sep, pid = name.rpartition(f"{PARTIAL}.stale-")
    return bool(sep) and pid.isdigit() and not _pid_alive(int(pid))


def remove_dead_scratch(paths: list[Path]) -> list[Path]:
    """Remove those of ``paths`` that are dead processes' scratch (files or folders)."""
    removed = []
    for path in sorted(paths):
        if not is_dead_scratch(path):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def clean_stale(parent: Path) -> list[Path]:
    """Remove every ``*.partial`` folder under ``parent`` that a run of this project made and
    whose process is gone, and the scratch folders of dead runs; nothing else is touched."""
    if not parent.is_dir():
        return []
    removed = [p for p in sorted(parent.glob(f"*{PARTIAL}")) if p.is_dir() and _remove_stale(p)]
    scratch = [*parent.glob(f".*{PARTIAL}@*@*"), *parent.glob(f"*{PARTIAL}.stale-*")]
    return removed + remove_dead_scratch([p for p in scratch if p.is_dir()])


class RunFolder:
    """A run folder being written: files go to ``path`` (the ``.partial`` folder) until
    :meth:`commit` renames it to ``final``; :meth:`abort` removes it."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.path = final.with_name(final.name + PARTIAL)

    @classmethod
    def create(cls, parent: Path, name: str) -> RunFolder:
        """Make ``parent/name.partial`` exclusively, its owner record inside from the first
        moment (a scratch folder with the record is renamed into place); fail clearly if the
        name is taken."""
        folder = cls(parent / name)
        if folder.final.exists():
            raise RunDirError(f"run folder {folder.final} already exists; choose another name=")
        scratch = scratch_path(parent, name + PARTIAL)
        try:
            parent.mkdir(parents=True, exist_ok=True)
            scratch.mkdir()
            owner = {"host": _this_host(), "pid": os.getpid(), "started": time.time()}
            atomic_write_json(scratch / OWNER, owner)
            if folder.path.exists():
                folder._take_over_stale()
            try:
                os.rename(scratch, folder.path)  # fails if another run's folder is there now
            except OSError:
                folder._take_over_stale()
                os.rename(scratch, folder.path)
        except OSError as exc:
            shutil.rmtree(scratch, ignore_errors=True)
            raise RunDirError(
                f"cannot write run folder under {parent}: {exc.strerror or exc}. "
                f"Choose a writable folder with out=<path>."
            ) from exc
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        return folder

    def _take_over_stale(self) -> None:
        """Remove a dead run's folder at ``path``; refuse a live run's or anyone else's."""
        if _remove_stale(self.path):
            return
        if _owner(self.path) is None:
            raise RunDirError(
                f"{self.path} exists and is not a folder a live uqbench run is writing (no owner "
                f"record: yours, or a run's kept results); uqbench never removes it. Rename or "
                f"remove it, or choose another name="
            )
        raise RunDirError(
            f"run folder {self.path} is being written by another live run; "
            f"choose another name= (or wait for it to finish)"
        )

    def commit(self) -> Path:
        """Rename the partial folder to its final name. If that name was taken meanwhile, the
        results stay in the partial folder, which loses its owner record so that no cleaner
        ever removes it, and the error says where they are."""
        try:
            os.rename(self.path, self.final)
        except OSError as exc:
            (self.path / OWNER).unlink(missing_ok=True)
            raise RunDirError(
                f"cannot finish run folder {self.final}: {exc.strerror or exc} (another run "
                f"took that name); the complete results are kept in {self.path}: rename it "
                f"to a free name to use it"
            ) from exc
        (self.final / OWNER).unlink(missing_ok=True)
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
