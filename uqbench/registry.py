"""The plugin registry: every selectable name is an entry point.

Groups (see the README for how to add a plugin):

- ``uqbench.methods``: ``name = "pkg.module:UQMethodSubclass"``
- ``uqbench.datamodules``: ``name = "pkg.module:UQDataModuleSubclass"``
- ``uqbench.backbones``: ``name = "pkg.module:factory"`` where
  ``factory(num_classes, input_shape, **kwargs) -> Backbone``.
- ``uqbench.boards``: ``name = "pkg.module:factory"`` returning a
  :class:`~uqbench.deploy.boards.Board`.
- ``uqbench.device_scores``: ``kind = "pkg.module:DeviceScoreSubclass"`` (what a method runs on
  the device after its network, :mod:`uqbench.deploy.device_score`).

First-party plugins register through the same groups (``pyproject.toml``), so a third-party
package plugs in exactly the way the suite's own code does. ``timm/<model>`` is the one name
that is not an entry point: it wraps any timm model (see ``uqbench.backbones.timm_backbone``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from uqbench.errors import UnknownNameError

GROUPS: dict[str, str] = {
    "method": "uqbench.methods",
    "data": "uqbench.datamodules",
    "backbone": "uqbench.backbones",
    "board": "uqbench.boards",
    "device_score": "uqbench.device_scores",
}
TIMM_PREFIX = "timm/"


@dataclass
class Entry:
    """One registered plugin as ``uqbench list`` shows it."""

    kind: str
    name: str
    target: str
    distribution: str
    error: str | None = None
    conflict: bool = False  # another distribution registers the same name

    @property
    def broken(self) -> bool:
        return self.error is not None


def _all_entry_points(kind: str) -> dict[str, list[metadata.EntryPoint]]:
    """Every entry point of one kind by name; a name with two or more is a conflict."""
    return _scan(kind, tuple(sys.path))


@functools.lru_cache(maxsize=16)
def _scan(kind: str, path: tuple[str, ...]) -> dict[str, list[metadata.EntryPoint]]:
    # Reading distribution metadata costs milliseconds per entry point: once per sys.path.
    found: dict[str, list[metadata.EntryPoint]] = {}
    seen: set[tuple[str, str, str]] = set()
    for ep in metadata.entry_points(group=GROUPS[kind]):
        key = (ep.name, ep.value, _distribution(ep))
        if key not in seen:  # the same distribution seen twice on sys.path is not a conflict
            seen.add(key)
            found.setdefault(ep.name, []).append(ep)
    return dict(sorted(found.items()))


def _entry_points(kind: str) -> dict[str, metadata.EntryPoint]:
    return {name: eps[0] for name, eps in _all_entry_points(kind).items()}


def names(kind: str) -> list[str]:
    """Registered names of one kind (``method``, ``data``, ``backbone`` or ``board``), sorted."""
    return list(_entry_points(kind))


def own_names(kind: str) -> list[str]:
    """The names of one kind that uqbench itself registers (its own methods, data sets, ...),
    sorted; a plugin's are left out."""
    points = _entry_points(kind).items()
    return [name for name, ep in points if getattr(ep.dist, "name", None) == "uqbench"]


def _distribution(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "?"


def module_of(kind: str, name: str) -> str:
    """The module a registered name lives in, without importing it (names are checked)."""
    return _entry_points(kind)[name].module


def load(kind: str, name: str) -> Any:
    """Import and return the object registered as ``name``.

    Raises :class:`UnknownNameError` listing the valid names and the closest match.
    Import errors of a registered plugin propagate with the plugin named.
    """
    if kind == "backbone" and name.startswith(TIMM_PREFIX):
        from uqbench.backbones.timm_backbone import timm_factory

        return timm_factory(name[len(TIMM_PREFIX) :])
    from uqbench.config import closest, shorten

    every = _all_entry_points(kind)
    if name not in every:
        valid = list(every) + ([f"{TIMM_PREFIX}<model>"] if kind == "backbone" else [])
        close = closest(name, list(every))
        hint = f" Did you mean {close!r}?" if close else ""
        raise UnknownNameError(
            f"unknown {kind} {shorten(name)!r}.{hint} Valid {kind} names: {', '.join(valid)}. "
            f"Run `uqbench list` to see every installed plugin."
        )
    if len(every[name]) > 1:
        sources = "; ".join(f"{_distribution(ep)} ({ep.value})" for ep in every[name])
        raise UnknownNameError(
            f"{kind} {name!r} is registered by more than one installed distribution: {sources}. "
            f"Uninstall one of them (pip uninstall <name>) so the name means one plugin."
        )
    eps = _entry_points(kind)
    try:
        return eps[name].load()
    except Exception as exc:  # a broken plugin must say which one it is
        raise UnknownNameError(
            f"{kind} {name!r} ({eps[name].value}) is installed but failed to import: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def entries(use_cache: bool = True) -> list[Entry]:
    """Every registered plugin of every kind, each imported to tell whether it works.

    A plugin that fails to import is returned with its error; it never hides the others.
    Importing plugins means importing torch and Lightning (seconds), so the statuses are cached
    under a fingerprint of everything an import result depends on (see :func:`_fingerprint`);
    any install, uninstall or edit of a plugin's files invalidates it.
    """
    points = [
        (kind, name, ep)
        for kind in GROUPS
        for name, eps in _all_entry_points(kind).items()
        for ep in eps
    ]
    fingerprint = _fingerprint(points)
    cache_file = _status_cache()
    if use_cache:
        cached = _read_statuses(cache_file, fingerprint)
        if cached is not None:
            return cached
    found: list[Entry] = []
    counts = {
        (kind, name): sum(1 for k, n, _ in points if (k, n) == (kind, name))
        for kind, name, _ in points
    }
    for kind, name, ep in points:
        entry = Entry(kind, name, ep.value, _distribution(ep), conflict=counts[(kind, name)] > 1)
        try:
            ep.load()
        except Exception as exc:  # noqa: BLE001 - any failure marks the plugin broken
            entry.error = f"{type(exc).__name__}: {exc}"
        found.append(entry)
    _write_statuses(cache_file, fingerprint, found)
    return found


def _status_cache() -> Path:
    root = os.environ.get("UQBENCH_CACHE") or Path.home() / ".cache" / "uqbench"
    return Path(root) / "plugin-status.json"


def _fingerprint(points: list[tuple[str, str, metadata.EntryPoint]]) -> str:
    """A hash of what decides whether the plugins import: the interpreter, every sys.path entry
    (its mtime changes when a package is installed or removed), each entry point with its
    distribution, and the modification times of every file beside each plugin's module and in
    uqbench's own core."""
    parts: list[str] = [sys.version]
    for entry in sys.path:
        parts.append(f"{entry}:{_mtime(Path(entry or '.'))}")
    folders = {Path(__file__).parent}
    for kind, name, ep in points:
        parts.append(f"{kind}/{name}={ep.value}@{_distribution(ep)}")
        spec = _find_spec(ep.module)
        if spec is not None and spec.origin:
            folders.add(Path(spec.origin).parent)
    for folder in sorted(folders):
        for file in sorted(folder.rglob("*.py")):
            parts.append(f"{file}:{_mtime(file)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _find_spec(module: str) -> Any:
    try:
        return importlib.util.find_spec(module)
    except Exception:  # noqa: BLE001 - a missing parent package: the import itself will say
        return None


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1


def _read_statuses(path: Path, fingerprint: str) -> list[Entry] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("fingerprint") != fingerprint:
        return None
    return [Entry(**row) for row in data["entries"]]


def _write_statuses(path: Path, fingerprint: str, found: list[Entry]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [dataclasses.asdict(e) for e in found]
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"fingerprint": fingerprint, "entries": rows}))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs speed
