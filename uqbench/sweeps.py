"""W&B sweep configurations for ``uqbench fit``, checked and expanded without a W&B server.

A sweep file (``sweeps/*.yaml``) is a W&B sweep configuration whose command is the block list
``[${env}, uqbench, fit, ${args_no_hyphens}]``: each run becomes ``uqbench fit key=value ...``
with the sweep's parameters as overrides. :func:`check` validates a file before anyone runs it:
the W&B schema (with the ``sweeps`` package, the controller's own library), the command's
shape, the metric (``dev/<key>``, the calibrated method's dev metric ``uqbench fit`` logs; a
test metric ``final/<key>`` is refused, since a sweep that optimizes it tunes on the test set)
and every parameter (a run drawn from the sweep is resolved as ``uqbench fit`` would, so
an unknown or ill-typed parameter is named; every grid point is checked, three draws of a
search). :func:`runs` expands it (every grid point, or draws
from a random or Bayesian search) and :func:`command_line` builds a run's command exactly as
``wandb agent`` does, with wandb's own helpers.
"""

from __future__ import annotations

import dataclasses
import platform
from pathlib import Path
from typing import Any

from uqbench.errors import ConfigError

COMMAND = ["${env}", "uqbench", "fit", "${args_no_hyphens}"]
METRIC_PREFIX = "dev/"  # uqbench fit logs the calibrated method's dev metrics under dev/<key>
TEST_PREFIX = "final/"  # and the test metrics under final/<key>: never a sweep's target


def load(path: Path) -> dict[str, Any]:
    import yaml

    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"sweep file {path}: cannot read it as YAML ({exc})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"sweep file {path}: expected a mapping, got {type(config).__name__}")
    return config


def _sweeps() -> Any:
    """The ``sweeps`` package, imported without the warnings its pydantic v1 settings raise."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import sweeps
    return sweeps


def runs(config: dict[str, Any], count: int | None = None) -> list[dict[str, Any]]:
    """The runs of a sweep as ``{parameter: value}``: every point of a grid (or its first
    ``count``), or ``count`` draws (default 3) of a random or Bayesian search."""
    sweeps = _sweeps()

    import warnings

    drawn: list[Any] = []
    limit = count if count is not None else (None if config.get("method") == "grid" else 3)
    while limit is None or len(drawn) < limit:
        with warnings.catch_warnings():
            # A Bayesian search fits its Gaussian process to the drawn runs' metric, which is
            # 0.0 for all of them here (nothing has run): it warns that the fit is degenerate.
            warnings.simplefilter("ignore")
            run = sweeps.next_run(config, drawn)
        if run is None:  # a grid is exhausted
            break
        # The next draw needs the earlier ones finished with a metric; none has run, so 0.0.
        run.state = sweeps.RunState.finished
        run.summary_metrics = {config["metric"]["name"]: 0.0}
        drawn.append(run)
    return [{name: item["value"] for name, item in run.config.items()} for run in drawn]


def space(config: dict[str, Any]) -> str:
    """The size of the sweep's search space, in words: the number of points of a grid (and
    its factors), or which parameters are continuous."""
    sizes, continuous = {}, []
    for name, spec in config.get("parameters", {}).items():
        if "values" in spec:
            sizes[name] = len(spec["values"])
        elif "value" in spec:
            sizes[name] = 1
        elif spec.get("distribution") == "int_uniform":
            sizes[name] = int(spec["max"]) - int(spec["min"]) + 1
        else:
            continuous.append(name)
    varied = {k: v for k, v in sizes.items() if v > 1}
    total = 1
    for size in varied.values():
        total *= size
    factors = " x ".join(f"{k} {v}" for k, v in varied.items()) or "one point"
    if continuous:
        return f"search space: continuous in {', '.join(continuous)}" + (
            f", times {total} discrete points ({factors})" if varied else ""
        )
    return f"search space: {total} points ({factors})"


def command_line(config: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """The command ``wandb agent`` runs for one run of this sweep, built with wandb's helpers
    (``create_sweep_command`` and ``create_sweep_command_args``) and the agent's substitution
    of the ``${...}`` macros."""
    from wandb.sdk.launch.sweeps import utils

    command = utils.create_sweep_command(list(config.get("command", COMMAND)))
    args = {name: {"value": value} for name, value in params.items()}
    values = utils.create_sweep_command_args({"args": args})
    values["env"] = ["/usr/bin/env"] if platform.system() != "Windows" else []
    values["program"] = [config.get("program", "")]
    out: list[str] = []
    for chunk in map(str, command):
        if chunk.startswith("${") and chunk.endswith("}"):
            out += values.get(chunk[2:-1]) or []
        else:
            out.append(chunk)
    return out


def _dev_keys() -> list[str]:
    from uqbench.metric_table import DEV_TASKS, TABLE

    return [s.key for s in TABLE if s.task in DEV_TASKS]


def check(config: dict[str, Any], where: str = "sweep") -> None:
    """Raise :class:`ConfigError` naming what is wrong with a sweep for ``uqbench fit``."""
    sweeps = _sweeps()
    from uqbench.config import parse_overrides
    from uqbench.metric_table import dev_spec
    from uqbench.stages.resolve import dry_run, method_names, resolve

    violations = sweeps.schema_violations_from_proposed_config(config)
    if violations:
        raise ConfigError(f"{where}: not a valid W&B sweep: {'; '.join(violations)}")
    command = [str(c) for c in config.get("command", [])]
    if command[1:3] != ["uqbench", "fit"] or "${args_no_hyphens}" not in command:
        raise ConfigError(
            f"{where}: command must be the block list [${{env}}, uqbench, fit, "
            f"${{args_no_hyphens}}] (uqbench takes key=value overrides), got {command}"
        )
    metric = config["metric"]["name"]
    if metric.startswith(TEST_PREFIX):
        key = metric[len(TEST_PREFIX) :]
        raise ConfigError(
            f"{where}: metric {metric!r} is a test metric: a sweep that optimizes it tunes on "
            f"the test set. Optimize the dev metric instead: {METRIC_PREFIX}{key} (the "
            f"calibrated method on the dev split; dev metrics: {', '.join(_dev_keys())})"
        )
    try:
        if not metric.startswith(METRIC_PREFIX):
            raise KeyError(metric)
        dev_spec(metric[len(METRIC_PREFIX) :])
    except KeyError:
        raise ConfigError(
            f"{where}: metric {metric!r} is not a dev metric uqbench fit logs; it logs "
            f"{', '.join(METRIC_PREFIX + k for k in _dev_keys())}"
        ) from None
    for params in runs(config):  # every grid point; three draws of a search
        overrides = [f"{k}={v}" for k, v in params.items()]
        try:
            run = parse_overrides(overrides)
            group = [resolve(dataclasses.replace(run, method=n)) for n in method_names(run.method)]
            dry_run(group)
        except ConfigError as exc:
            refused = " ".join(overrides)
            raise ConfigError(f"{where}: a run with {refused} is refused: {exc}") from None
