"""Configuration files: ``--config FILE`` (YAML, or JSON) holds the same keys as the command
line, and ``--print-config`` writes the resolved configuration
back in the form ``--config`` reads.

A file is a mapping. A scalar or list value is the override ``key=value``; a mapping under
``X`` or ``X_args`` gives ``X.<key>=value`` for each of its entries (``method_args: {lr: 0.001}``
is ``method.lr=0.001``; ``bench: {jobs: 2}`` is ``bench.jobs=2``). The file's overrides come
first and the command line's after, so the command line wins.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from uqbench.errors import ConfigError

ARGS_SUFFIX = "_args"


def _text(value: Any, key: str) -> str:
    """One value as the command line writes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: {value} in the config file is not a finite number")
    if isinstance(value, list | tuple):
        if any(isinstance(v, dict) for v in value):  # e.g. callbacks with init_args: JSON
            return json.dumps(value)
        return "[" + ",".join(_text(v, key) for v in value) + "]"
    if isinstance(value, dict):
        raise ConfigError(f"{key}: a mapping nested this deep is not an option; flatten it")
    return str(value)


def overrides_from(document: Any, source: str) -> list[str]:
    """The ``key=value`` overrides a parsed config file stands for."""
    if document is None:
        return []
    if not isinstance(document, dict):
        raise ConfigError(
            f"{source}: a config file is a mapping of keys, got a {type(document).__name__}"
        )
    found = []
    for key, value in document.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"{source}: key {key!r} is not a name")
        if isinstance(value, dict):
            prefix = key.removesuffix(ARGS_SUFFIX)
            found += [f"{prefix}.{k}={_text(v, f'{prefix}.{k}')}" for k, v in value.items()]
        else:
            found.append(f"{key}={_text(value, key)}")
    return found


def read(path: Path) -> list[str]:
    """The overrides in the config file at ``path`` (checked: a clear error, exit status 2,
    for a missing, unreadable or malformed file)."""
    import yaml

    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"--config {path}: cannot read it ({exc.__class__.__name__}: {exc})"
        ) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML or JSON: {exc}") from None
    return overrides_from(document, f"--config {path}")


def split_argv(argv: list[str]) -> tuple[list[str], Path | None, bool]:
    """(the other arguments, ``--config``'s file, whether ``--print-config`` was given)."""
    rest, config, printing = [], None, False
    items = iter(argv)
    for item in items:
        if item == "--print-config":
            printing = True
        elif item == "--config" or item.startswith("--config="):
            value = item.partition("=")[2] if "=" in item else next(items, None)
            if not value:
                raise ConfigError("--config needs a file: --config run.yaml")
            if config is not None:
                raise ConfigError("--config is given twice; merge the files into one")
            config = Path(value)
        else:
            rest.append(item)
    return rest, config, printing


def dump(resolved: dict[str, Any]) -> str:
    """YAML that :func:`read` turns back into the same overrides."""
    import yaml

    from uqbench.run_folder import json_safe

    return yaml.safe_dump(json_safe(resolved), sort_keys=False, default_flow_style=False)
