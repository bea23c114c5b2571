"""Command-line overrides and their schemas.

An override is ``key=value``. Top-level keys are the fields of :class:`RunConfig`; the prefixed
keys ``method.*``, ``data.*`` and ``backbone.*`` are checked against the typed constructor
signature of the selected plugin (its signature *is* its schema), and ``trainer.*`` against
``lightning.pytorch.Trainer``. Values are coerced by the annotated type, so ``method.lr=1e-3`` is
a float and ``method.mapping=none`` stays the string ``"none"``.

Why not Hydra: the schemas here are discovered at run time from plugin signatures, not from a
YAML tree, and every error must name the plugin's own parameters. The override grammar we need
(``a.b=value``, lists as ``[x,y]``) is a few lines; multirun lives in ``uqbench bench``.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from uqbench.errors import ConfigError

PREFIXES = ("method", "data", "backbone", "trainer")


@dataclass
class RunConfig:
    """Everything one run needs, as the user chose it (plugin defaults are filled in later)."""

    method: str = "snapuq"
    data: str = "digits"
    backbone: str | None = None  # None: the datamodule's default backbone
    seed: int = 13
    threads: int | None = None  # torch CPU threads; None: half the cores, at most 4
    train_base: bool = True  # false: a post-hoc method must find its base model in the cache
    logger: str = "csv"  # csv, tensorboard, wandb, mlflow (several: [csv,mlflow]) or none
    out: str = "runs"  # parent folder of run folders
    name: str | None = None  # run folder name; default <method>-<data>-s<seed>-<time>
    run: str | None = None  # `uqbench test`: the run folder to evaluate
    deploy: str | None = None  # boards (comma-separated) to deploy each run to after the fit
    resume: str | None = None  # the name of an interrupted run to continue from its checkpoints
    method_args: dict[str, Any] = field(default_factory=dict)
    data_args: dict[str, Any] = field(default_factory=dict)
    backbone_args: dict[str, Any] = field(default_factory=dict)
    trainer_args: dict[str, Any] = field(default_factory=dict)


_TOP_LEVEL = {f.name: f for f in dataclasses.fields(RunConfig) if not f.name.endswith("_args")}
ECHO_LIMIT = 80


def shorten(text: str, limit: int = ECHO_LIMIT) -> str:
    """``text`` cut to ``limit`` characters for an error message (values can be huge)."""
    text = str(text)
    return text if len(text) <= limit else f"{text[: limit - 1]}... ({len(text)} characters)"


def closest(name: str, choices: list[str]) -> str | None:
    """The closest valid name, compared case-insensitively (``MSP`` suggests ``msp``)."""
    lowered = {c.lower(): c for c in choices}
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1)
    return lowered[match[0]] if match else None


def parse_overrides(overrides: list[str]) -> RunConfig:
    """Turn ``["method=msp", "method.lr=1e-3", ...]`` into a :class:`RunConfig`.

    Prefixed values stay strings here; :func:`bind` coerces them once the plugin is known.
    """
    config = RunConfig()
    hints = typing.get_type_hints(RunConfig)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"malformed override {shorten(item)!r}: expected key=value, "
                "e.g. method=msp or method.lr=1e-3"
            )
        head, dot, rest = key.partition(".")
        if dot:
            if head not in PREFIXES or not rest:
                raise ConfigError(
                    f"unknown key {shorten(key)!r}: prefixed keys start with one of "
                    f"{', '.join(p + '.' for p in PREFIXES)}"
                )
            getattr(config, f"{head}_args")[rest] = raw
        elif key in _TOP_LEVEL:
            setattr(config, key, coerce(raw, hints[key], key))
            if key == "logger":
                logger_names(config.logger)
        else:
            raise ConfigError(
                f"unknown key {shorten(key)!r}. Valid top-level keys: "
                f"{', '.join(sorted(_TOP_LEVEL))}; "
                f"plugin options go under {', '.join(p + '.' for p in PREFIXES)}"
            )
    return config


def schema(target: Any, skip: tuple[str, ...] = ()) -> dict[str, inspect.Parameter]:
    """The keyword parameters of a class constructor or factory, following ``**kwargs`` up the MRO.

    A subclass whose ``__init__`` takes ``**kwargs`` inherits its parents' parameters, so a method
    that only adds ``rank: int = 64`` still accepts the base class's ``lr``.
    """
    params: dict[str, inspect.Parameter] = {}
    callables = (
        [c.__init__ for c in target.__mro__ if "__init__" in vars(c)]
        if (isinstance(target, type))
        else [target]
    )
    for fn in callables:
        sig = inspect.signature(fn)
        hints = _type_hints(fn)
        more = False
        for p in sig.parameters.values():
            if p.kind is p.VAR_KEYWORD:
                more = True
            elif p.kind is not p.VAR_POSITIONAL and p.name not in ("self", *skip):
                params.setdefault(p.name, p.replace(annotation=hints.get(p.name, p.annotation)))
        if not more:
            break
    return params


def _type_hints(fn: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable annotations fall back to the raw ones
        return {}


def bind(
    target: Any,
    raw: dict[str, Any],
    prefix: str,
    skip: tuple[str, ...] = (),
    fill_defaults: bool = True,
) -> dict[str, Any]:
    """Check ``raw`` overrides against ``target``'s signature and coerce them to its types.

    Returns every argument, defaults included (only the given ones if ``fill_defaults`` is off).

    Raises :class:`ConfigError` naming the key and the expected type, or listing the valid keys.
    """
    params = schema(target, skip)
    name = getattr(target, "__name__", str(target))
    bound: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in params:
            close = closest(key, list(params))
            hint = f" Did you mean {prefix}.{close}?" if close else ""
            raise ConfigError(
                f"unknown key {prefix}.{shorten(key)} for {name}.{hint} Valid keys: "
                + (
                    ", ".join(
                        f"{prefix}.{k} ({type_name(p.annotation)})" for k, p in params.items()
                    )
                    or "none (it takes no options)"
                )
            )
        bound[key] = coerce(value, params[key].annotation, f"{prefix}.{key}")
    for key, p in params.items():
        if key in bound or not fill_defaults:
            continue
        if p.default is inspect.Parameter.empty:
            raise ConfigError(f"{prefix}.{key} is required by {name} ({type_name(p.annotation)})")
        bound[key] = p.default
    return bound


def type_name(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return "any"
    if typing.get_origin(annotation) is Literal:
        return "one of " + "|".join(map(str, typing.get_args(annotation)))
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert a command-line string to ``annotation``; non-strings are checked, not parsed."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation in (Any, inspect.Parameter.empty):
        return _guess(value) if isinstance(value, str) else value
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and isinstance(value, str) and value.lower() in ("null", "none"):
            return None
        if value is None and type(None) in args:
            return None
        for arg in sorted((a for a in args if a is not type(None)), key=_union_order(value)):
            try:
                return coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {type_name(annotation)}, got {shorten(repr(value))}")
    if origin is Literal:
        for choice in args:
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
        raise ConfigError(
            f"{key}: expected one of {', '.join(map(str, args))}, got {shorten(repr(value))}"
        )
    if origin in (list, tuple) or annotation in (list, tuple):
        items = split_list(value, key)
        item_type = args[0] if args else Any
        out = [coerce(v, item_type, key) for v in items]
        return tuple(out) if (origin or annotation) is tuple else out
    if annotation is bool:
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected bool (true or false), got {shorten(repr(value))}")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected {annotation.__name__}, got {value!r}")
        try:
            number = annotation(value) if annotation is float else _to_int(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"{key}: expected {annotation.__name__}, got {shorten(repr(value))}"
            ) from None
        if annotation is float and not math.isfinite(number):
            raise ConfigError(f"{key}: expected a finite float, got {shorten(repr(value))}")
        return number
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected str, got {shorten(repr(value))}")
    if isinstance(annotation, type) and isinstance(value, annotation):
        return value
    raise ConfigError(f"{key}: cannot set a value of type {type_name(annotation)} from the CLI")


LOGGERS = ("csv", "tensorboard", "wandb", "mlflow")


def logger_names(text: str) -> list[str]:
    """``csv``, ``[csv,mlflow]`` or ``none`` as the list of Lightning loggers to use."""
    names = split_list(text, "logger")
    if names == ["none"]:
        return []
    wrong = [n for n in names if n not in LOGGERS]
    if not names or wrong or len(set(names)) != len(names):
        raise ConfigError(
            f"logger={shorten(text)!r}: give one or more of {', '.join(LOGGERS)} (e.g. "
            f"logger=[csv,tensorboard]), each once, or logger=none"
        )
    return names


def _union_order(value: Any) -> Callable[[Any], int]:
    """The order in which a union's members are tried for ``value``: numbers, booleans and
    choices first, then a list when the value is written as one, then a string, then any
    list (``trainer.devices=2`` is the int 2, ``[0,1]`` a list, ``auto`` a string)."""
    listed = isinstance(value, list | tuple) or str(value).strip().startswith("[")

    def rank(arg: Any) -> int:
        is_list = typing.get_origin(arg) in (list, tuple) or arg in (list, tuple)
        if is_list:
            return 1 if listed else 3
        return 2 if arg is str else 0

    return rank


def _to_int(value: Any) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return int(str(value))


def split_list(value: Any, key: str) -> list[Any]:
    """``a,b``, ``[a,b]`` or a list as a list of its (stripped, non-empty) items."""
    if isinstance(value, (list, tuple)):
        return list(value)
    text = str(value).strip()
    if text.startswith("["):
        if not text.endswith("]"):
            raise ConfigError(f"{key}: unterminated list {shorten(repr(value))}; write [a,b,c]")
        text = text[1:-1]
    return [part.strip() for part in text.split(",") if part.strip()]


def _guess(text: str) -> Any:
    """Best-effort literal for parameters without a type annotation."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_options(
    command: str,
    overrides: list[str],
    schema: dict[str, Any],
    groups: dict[str, dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``key=value`` overrides of a subcommand, typed by ``schema`` (key -> annotation) and by
    each prefixed group (``stream.window``: ``groups["stream"]["window"]``) with the grammar of
    ``fit``'s options (:func:`coerce`). Returns (values, {group: values}); the last of a
    repeated key wins. Raises :class:`ConfigError` naming the key and the valid ones."""
    groups = groups or {}
    values: dict[str, Any] = {}
    grouped: dict[str, dict[str, Any]] = {name: {} for name in groups}
    valid = [f"{k} ({type_name(t)})" for k, t in schema.items()]
    valid += [f"{g}.{k} ({type_name(t)})" for g, keys in groups.items() for k, t in keys.items()]
    for item in overrides:
        key, sep, raw = item.partition("=")
        head, dot, rest = key.partition(".")
        try:
            if sep and key in schema:
                values[key] = coerce(raw, schema[key], key)
                continue
            if sep and dot and head in groups and rest in groups[head]:
                grouped[head][rest] = coerce(raw, groups[head][rest], key)
                continue
        except ConfigError as exc:
            raise ConfigError(f"uqbench {command}: {exc}") from None
        close = closest(key, [*schema, *(f"{g}.{k}" for g, ks in groups.items() for k in ks)])
        hint = f" Did you mean {close}?" if close and sep else ""
        raise ConfigError(
            f"uqbench {command}: {shorten(item)!r} is not key=value with a known key.{hint} "
            f"Valid keys: {', '.join(valid)}"
        )
    return values, grouped
