"""The plugin registry: every selectable name is an entry point.

Groups (see the README for how to add a plugin):

- ``uqbench.methods``: ``name = "pkg.module:UQMethodSubclass"``
- ``uqbench.datamodules``: ``name = "pkg.module:UQDataModuleSubclass"``
- ``uqbench.backbones``: ``name = "pkg.module:factory"`` where
  ``factory(num_classes, input_shape, **kwargs) -> Backbone``.

First-party plugins register through the same groups (``pyproject.toml``), so a third-party
package plugs in exactly the way the suite's own code does. ``timm/<model>`` is the one name
that is not an entry point: it wraps any timm model (see ``uqbench.backbones.timm_backbone``).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from uqbench.errors import UnknownNameError

GROUPS: dict[str, str] = {
    "method": "uqbench.methods",
    "data": "uqbench.datamodules",
    "backbone": "uqbench.backbones",
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

    @property
    def broken(self) -> bool:
        return self.error is not None


def _entry_points(kind: str) -> dict[str, metadata.EntryPoint]:
    group = GROUPS[kind]
    found: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=group):
        found.setdefault(ep.name, ep)  # the first distribution on sys.path wins, as for imports
    return dict(sorted(found.items()))


def names(kind: str) -> list[str]:
    """Registered names of one kind (``method``, ``data`` or ``backbone``), sorted."""
    return list(_entry_points(kind))


def _distribution(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "?"


def load(kind: str, name: str) -> Any:
    """Import and return the object registered as ``name``.

    Raises :class:`UnknownNameError` listing the valid names and the closest match.
    Import errors of a registered plugin propagate with the plugin named.
    """
    if kind == "backbone" and name.startswith(TIMM_PREFIX):
        from uqbench.backbones.timm_backbone import timm_factory

        return timm_factory(name[len(TIMM_PREFIX) :])
    eps = _entry_points(kind)
    if name not in eps:
        valid = list(eps) + ([f"{TIMM_PREFIX}<model>"] if kind == "backbone" else [])
        close = difflib.get_close_matches(name, list(eps), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownNameError(
            f"unknown {kind} {name!r}.{hint} Valid {kind} names: {', '.join(valid)}. "
            f"Run `uqbench list` to see every installed plugin."
        )
    try:
        return eps[name].load()
    except Exception as exc:  # a broken plugin must say which one it is
        raise UnknownNameError(
            f"{kind} {name!r} ({eps[name].value}) is installed but failed to import: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def entries() -> list[Entry]:
    """Every registered plugin of every kind, each imported to tell whether it works.

    A plugin that fails to import is returned with its error; it never hides the others.
    """
    found: list[Entry] = []
    for kind in GROUPS:
        for name, ep in _entry_points(kind).items():
            entry = Entry(kind, name, ep.value, _distribution(ep))
            try:
                ep.load()
            except Exception as exc:  # noqa: BLE001 - any failure marks the plugin broken
                entry.error = f"{type(exc).__name__}: {exc}"
            found.append(entry)
    return found
