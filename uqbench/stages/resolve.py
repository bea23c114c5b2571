"""Resolve and check a run configuration before any data is loaded or any folder is made.

Every plugin is loaded, every override bound to its schema, the Trainer's arguments tried, and
the backbone and methods built once on PyTorch's ``meta`` device (shapes without memory), so a
bad option is a clear error in a second, not after the data loaded or a training run.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from uqbench import registry
from uqbench.config import RunConfig, bind, logger_names, schema, shorten
from uqbench.errors import ConfigError, UQBenchError

if TYPE_CHECKING:
    from uqbench.method import Needs

# Trainer arguments the runner owns; the user cannot override them with trainer.*.
RUNNER_OWNED = ("logger", "default_root_dir", "enable_checkpointing")
SEED_MAX = 2**32 - 1  # numpy's and Lightning's bound
MAX_THREADS = 1024  # torch takes an int; far beyond any machine this runs on
MAX_EPOCHS = 1_000_000
NAME_MAX = 120  # leaves room for "-<method>.partial" within a 255-byte file name
_FORBIDDEN_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")
TRAIN_BYTES_PER_PARAM = 16  # float32 weights, gradients and two Adam moments


@dataclass
class Resolved:
    """A run configuration with every plugin loaded and every argument checked."""

    config: RunConfig
    method_cls: Any
    data_cls: Any
    backbone: str
    backbone_factory: Any
    method_args: dict[str, Any]
    data_args: dict[str, Any]
    backbone_args: dict[str, Any]
    trainer_args: dict[str, Any] = field(default_factory=dict)

    @property
    def needs(self) -> Needs:
        """What the method needs from the runner, with these options."""
        return self.method_cls.needs_for(self.method_args)

    def to_dict(self) -> dict[str, Any]:
        c = self.config
        return {
            "method": c.method,
            "data": c.data,
            "backbone": self.backbone,
            "seed": c.seed,
            "threads": c.threads,
            "logger": c.logger,
            "method_args": self.method_args,
            "data_args": self.data_args,
            "backbone_args": self.backbone_args,
            "trainer_args": self.trainer_args,
        }


def method_names(text: str) -> list[str]:
    """``msp`` -> [msp]; ``[msp,energy]`` or ``msp,energy`` -> [msp, energy]; no duplicates."""
    names = [n.strip() for n in text.strip().strip("[]").split(",") if n.strip()]
    if not names:
        raise ConfigError("method= names no method; e.g. method=snapuq or method=[msp,energy]")
    if len(set(names)) != len(names):
        raise ConfigError(f"method= lists a method twice: {shorten(text)}")
    return names


def check_name(name: str | None) -> None:
    """A run name is one path component: no separators, not . or .., no control characters."""
    if name is None:
        return
    if not name or name in (".", "..") or _FORBIDDEN_NAME.search(name):
        raise ConfigError(
            f"name={shorten(name)!r} is not a folder name: use one path component without "
            f"'/', '\\\\' or control characters, not '.' or '..' (the parent folder is out=)"
        )
    if len(name.encode()) > NAME_MAX or name.endswith(".partial"):
        raise ConfigError(
            f"name= must be at most {NAME_MAX} bytes and not end in .partial "
            f"(got {len(name.encode())} bytes: {shorten(name)!r})"
        )


def _check_top_level(config: RunConfig) -> None:
    if not 0 <= config.seed <= SEED_MAX:
        raise ConfigError(f"seed must be in 0..{SEED_MAX}, got {shorten(str(config.seed))}")
    if config.threads is not None and not 1 <= config.threads <= MAX_THREADS:
        raise ConfigError(
            f"threads must be in 1..{MAX_THREADS} (or omitted for the default), got "
            f"{shorten(str(config.threads))}"
        )
    logger_names(config.logger)
    if config.run is not None:
        raise ConfigError("run= belongs to `uqbench test run=<folder>`; `uqbench fit` trains anew")
    check_name(config.name)
    check_name(config.resume)
    if config.resume and config.name and config.name != config.resume:
        raise ConfigError(
            f"name={config.name} and resume={config.resume}: a resumed run keeps the interrupted "
            f"run's name; give resume= alone"
        )


def recipe_defaults(method_cls: Any, data_cls: Any) -> dict[str, Any]:
    """The datamodule's training recipe, restricted to the options this method takes (a method
    that does not train the backbone with an optimizer, or names its options otherwise, keeps
    its own defaults)."""
    params = schema(method_cls, skip=("backbone",))
    return {k: v for k, v in data_cls.recipe.items() if k in params}


def trainer_args(data_cls: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """The Trainer's arguments: the datamodule's epochs, then the user's, checked by building
    a Trainer with them (so a bad value fails now, not after the data loaded)."""
    from lightning.pytorch import Trainer

    from uqbench.stages.lightning_output import quiet_lightning

    quiet_lightning()
    owned = [k for k in overrides if k in RUNNER_OWNED]
    if owned:
        raise ConfigError(
            f"trainer.{owned[0]} is set by uqbench itself; use logger= for the logger"
        )
    args = {"max_epochs": data_cls.default_max_epochs, **data_cls.trainer_defaults}
    overrides = dict(overrides)
    if "callbacks" in overrides:  # specs, kept as data; built for each Trainer
        from uqbench import callbacks

        args["callbacks"] = callbacks.parse(overrides.pop("callbacks"))
    args.update(bind(Trainer, overrides, "trainer", fill_defaults=False))
    epochs = args.get("max_epochs")
    if not isinstance(epochs, int) or not 1 <= epochs <= MAX_EPOCHS:
        raise ConfigError(
            f"trainer.max_epochs must be a whole number in 1..{MAX_EPOCHS:,}, got "
            f"{shorten(repr(epochs))} (0 would write an untrained network as a result; -1 or "
            f"none would train without end)"
        )
    try:
        Trainer(**trial_trainer_options(args))
    except UQBenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - Lightning's own message, attributed to trainer.*
        keys = ", ".join(f"trainer.{k}" for k in overrides) or "the trainer defaults"
        raise ConfigError(f"{keys}: Lightning refused them: {shorten(str(exc), 300)}") from None
    return args


def trial_trainer_options(args: dict[str, Any]) -> dict[str, Any]:
    """uqbench's Trainer defaults under the user's ``args`` (callback specs built), and the
    runner-owned options."""
    from uqbench import callbacks

    return {
        "accelerator": "auto",
        "devices": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        **args,
        "callbacks": callbacks.build(args.get("callbacks", [])),
        "logger": False,
        "enable_checkpointing": False,
    }


def resolve(config: RunConfig) -> Resolved:
    """Load the plugins named in ``config`` and check every override against their schemas."""
    from uqbench.datamodule import UQDataModule
    from uqbench.method import UQMethod

    _check_top_level(config)
    method_cls = registry.load("method", config.method)
    if not (isinstance(method_cls, type) and issubclass(method_cls, UQMethod)):
        raise ConfigError(f"method {config.method!r} is not a uqbench.UQMethod subclass")
    data_cls = registry.load("data", config.data)
    if not (isinstance(data_cls, type) and issubclass(data_cls, UQDataModule)):
        raise ConfigError(f"data {config.data!r} is not a uqbench.UQDataModule subclass")
    backbone = config.backbone or data_cls.default_backbone
    factory = registry.load("backbone", backbone)
    resolved = Resolved(
        config,
        method_cls,
        data_cls,
        backbone,
        factory,
        method_args=bind(
            method_cls,
            recipe_defaults(method_cls, data_cls) | config.method_args,
            "method",
            skip=("backbone",),
        ),
        data_args=bind(data_cls, config.data_args, "data"),
        backbone_args=bind(
            factory, config.backbone_args, "backbone", skip=("num_classes", "input_shape")
        ),
        trainer_args=trainer_args(data_cls, config.trainer_args),
    )
    # Its constructor checks its options and loads nothing; then every file must be there.
    data_cls(**resolved.data_args).check_files()
    return resolved


def dry_run(group: list[Resolved]) -> None:
    """Build the group's backbone and methods on the ``meta`` device: every constructor check
    runs (taps, ranks, grids) and the model's size is known, without allocating memory."""
    from uqbench.backbones.base import check_backbone

    first = group[0]
    with torch.device("meta"):
        try:
            backbone = build_backbone(first)
        except (RuntimeError, ValueError, IndexError, OverflowError, TypeError) as exc:
            # A plugin's backbone that does not check its own options fails in torch.
            raise ConfigError(
                f"backbone {first.backbone} cannot be built with {first.backbone_args} "
                f"({type(exc).__name__}: {str(exc)[:200]}); check the backbone.* options"
            ) from None
        check_backbone(backbone, first.backbone)
        _check_size(backbone, first)
        _check_batch_norm(backbone, first)
        for resolved in group:
            resolved.method_cls(backbone=backbone, **resolved.method_args)


def build_backbone(resolved: Resolved) -> Any:
    data = resolved.data_cls
    return resolved.backbone_factory(
        num_classes=data.num_classes, input_shape=data.input_shape, **resolved.backbone_args
    )


def _check_size(backbone: Any, resolved: Resolved) -> None:
    params = sum(p.numel() for p in backbone.parameters())
    needed = params * TRAIN_BYTES_PER_PARAM
    available = _physical_memory()
    if available and needed > available:
        raise ConfigError(
            f"backbone {resolved.backbone} with {resolved.backbone_args} has {params:,} "
            f"parameters: training needs about {needed / 2**30:.1f} GiB, more than this "
            f"machine's {available / 2**30:.1f} GiB. Choose smaller backbone.* options."
        )


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _check_batch_norm(backbone: Any, resolved: Resolved) -> None:
    batch = resolved.data_args.get("batch_size", 2)
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in backbone.modules())
    if has_bn and batch < 2:
        raise ConfigError(
            f"data.batch_size={batch} with backbone {resolved.backbone}, which has batch norm: "
            f"batch statistics of one example are meaningless and train it to chance. Use "
            f"data.batch_size=2 or more (the datamodule's default is a safe choice)."
        )


def default_threads() -> int:
    """CPU threads for torch: half the cores, at most 4 (see the README on why not all)."""
    return max(1, min(4, (os.cpu_count() or 1) // 2))
