"""``uqbench fit method=snapuq --help``: one plugin's keys with their types, defaults and the
docstring line that describes each, read from the plugin itself (its signature is its schema).
"""

from __future__ import annotations

import inspect
import re
import sys
from typing import Any

from uqbench.config import schema, split_list, type_name

# The command-line keys that select a plugin, its registry kind and the constructor
# parameters the runner fills in itself.
SELECTORS = {
    "method": ("method", ("backbone",)),
    "data": ("data", ()),
    "backbone": ("backbone", ("num_classes", "input_shape")),
    "board": ("board", ()),
    "deploy": ("board", ()),
}


def _documentation(target: Any) -> list[str]:
    """The lines of the docstrings that describe ``target``: its own, its ``__init__``'s and
    its module's (a first-party method documents its options in its module's docstring)."""
    texts = [inspect.getdoc(target) or ""]
    if isinstance(target, type):
        texts.append(inspect.getdoc(target.__init__) or "")
    module = sys.modules.get(getattr(target, "__module__", ""), None)
    texts.append(inspect.getdoc(module) or "" if module else "")
    return [line.strip() for text in texts for line in text.splitlines() if line.strip()]


def _describing(key: str, lines: list[str]) -> str | None:
    """The first docstring line that names ``key`` as an option (``key``, ``key=``, ``key:``)."""
    pattern = re.compile(rf"(``{key}``|`{key}`|\b{key}=|^{key}:|\b{key} \()")
    return next((line for line in lines if pattern.search(line)), None)


def _board_parameters(target: Any) -> dict[str, inspect.Parameter]:
    """A board's options: the sizes and clock of the board the factory builds."""
    board = target()
    hints = {"flash_kb": int, "ram_kb": int, "clock_mhz": float}
    return {
        key: inspect.Parameter(
            key, inspect.Parameter.KEYWORD_ONLY, default=getattr(board, key), annotation=hint
        )
        for key, hint in hints.items()
    }


def plugin_help(selector: str, name: str) -> str:
    """The help text of the plugin ``name`` chosen by ``selector=`` (``method``, ``data``,
    ``backbone``, ``board``, ``deploy``)."""
    from uqbench import registry

    kind, skip = SELECTORS[selector]
    target = registry.load(kind, name)
    params = _board_parameters(target) if kind == "board" else schema(target, skip)
    lines = _documentation(target)
    prefix = "board" if kind == "board" else selector
    out = [f"{selector}={name}: {lines[0] if lines else type(target).__name__}", ""]
    if not params:
        out.append(f"  (no {prefix}.* options)")
    for key, p in params.items():
        default = "required" if p.default is inspect.Parameter.empty else f"default {p.default!r}"
        out.append(f"  {prefix}.{key}  ({type_name(p.annotation)}, {default})")
        described = _describing(key, lines)
        if described:
            out.append(f"      {described}")
    return "\n".join(out)


def selections(overrides: list[str]) -> list[tuple[str, str]]:
    """The (selector, name) pairs chosen by ``overrides`` (``method=[a,b]`` gives two)."""
    found = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep and key in SELECTORS:
            found += [(key, name) for name in split_list(value, key)]
    return found
