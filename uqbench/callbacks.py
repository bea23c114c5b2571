"""``trainer.callbacks=[...]``: Lightning callbacks by import path, with arguments.

A callback is written as its class path (``lightning.pytorch.callbacks.LearningRateMonitor``; a
bare name is looked up in ``lightning.pytorch.callbacks``) or, with arguments, as a mapping in
jsonargparse's form (LightningCLI's): ``{"class_path": ..., "init_args": {...}}``. On the
command line a list of names is ``[A,B]``; with arguments the value is JSON::

    trainer.callbacks='[{"class_path": "EarlyStopping",
                         "init_args": {"monitor": "provisional/dev/nll", "patience": 2}}]'

and in a ``--config`` file the same list in YAML. The specs are kept (``config.json`` records
them) and the callbacks built for each Trainer; every spec is imported and built once when the
configuration is checked, so a wrong path or argument stops the run before any data loads.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

from uqbench.config import shorten, split_list
from uqbench.errors import ConfigError

CALLBACKS_MODULE = "lightning.pytorch.callbacks"


def parse(value: Any) -> list[dict[str, Any]]:
    """``trainer.callbacks``'s value as specs ``{"class_path": str, "init_args": dict}``."""
    if isinstance(value, str) and value.strip().startswith("[") and "{" in value:
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"trainer.callbacks: not valid JSON ({exc}); write [A,B] for class paths or "
                f'[{{"class_path": "A", "init_args": {{...}}}}] with arguments'
            ) from None
    items = value if isinstance(value, list) else split_list(value, "trainer.callbacks")
    specs = []
    for item in items:
        if isinstance(item, str):
            item = {"class_path": item}
        if not isinstance(item, dict) or not isinstance(item.get("class_path"), str):
            raise ConfigError(
                f"trainer.callbacks: {shorten(repr(item))} is neither a class path nor a "
                f"mapping with class_path (and init_args)"
            )
        unknown = set(item) - {"class_path", "init_args"}
        args = item.get("init_args", {})
        if unknown or not isinstance(args, dict):
            raise ConfigError(
                f"trainer.callbacks: {shorten(repr(item))}: a callback has class_path and "
                f"init_args (a mapping) only"
            )
        specs.append({"class_path": item["class_path"], "init_args": dict(args)})
    build(specs)  # checked now: importable, a Callback, its arguments accepted
    return specs


def _class(path: str) -> Any:
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module or CALLBACKS_MODULE), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(
            f"trainer.callbacks: cannot import {path!r} ({type(exc).__name__}: {exc}); give a "
            f"class path such as lightning.pytorch.callbacks.EarlyStopping"
        ) from None


def build(specs: list[dict[str, Any]]) -> list[Any]:
    """The callback instances of ``specs``."""
    from lightning.pytorch.callbacks import Callback

    callbacks = []
    for spec in specs:
        cls = _class(spec["class_path"])
        if not (isinstance(cls, type) and issubclass(cls, Callback)):
            raise ConfigError(
                f"trainer.callbacks: {spec['class_path']} is not a Lightning Callback"
            )
        try:
            callbacks.append(cls(**spec["init_args"]))
        except Exception as exc:  # noqa: BLE001 - the callback's own message, attributed
            raise ConfigError(
                f"trainer.callbacks: {spec['class_path']}({shorten(str(spec['init_args']))}) "
                f"failed: {type(exc).__name__}: {shorten(str(exc), 200)}"
            ) from None
    return callbacks
