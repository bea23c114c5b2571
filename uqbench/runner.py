"""``uqbench fit`` and ``uqbench test``: resolve, train (or reuse), calibrate, evaluate, record.

Everything the user typed is resolved and checked (:func:`resolve`) before any data is loaded or
any folder is written, so a typo costs a second, not a training run.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from uqbench import cache, registry
from uqbench.config import RunConfig, bind
from uqbench.errors import ConfigError, RunDirError
from uqbench.evaluation import EvalRecord, compute_metrics, predict, predict_posthoc
from uqbench.records import (
    CHECKPOINT,
    CONFIG,
    METRICS,
    SCHEMA_VERSION,
    SCORES,
    RunFolder,
    atomic_write_json,
    read_run,
)

# Trainer arguments the runner owns; the user cannot override them with trainer.*.
_RUNNER_OWNED = ("logger", "default_root_dir", "enable_checkpointing", "callbacks")


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

    def to_dict(self) -> dict[str, Any]:
        c = self.config
        return {
            "method": c.method,
            "data": c.data,
            "backbone": self.backbone,
            "seed": c.seed,
            "logger": c.logger,
            "method_args": self.method_args,
            "data_args": self.data_args,
            "backbone_args": self.backbone_args,
            "trainer_args": self.trainer_args,
        }


def resolve(config: RunConfig) -> Resolved:
    """Load the plugins named in ``config`` and check every override against their schemas."""
    from lightning.pytorch import Trainer

    from uqbench.datamodule import UQDataModule
    from uqbench.method import UQMethod

    method_cls = registry.load("method", config.method)
    if not (isinstance(method_cls, type) and issubclass(method_cls, UQMethod)):
        raise ConfigError(f"method {config.method!r} is not a uqbench.UQMethod subclass")
    data_cls = registry.load("data", config.data)
    if not (isinstance(data_cls, type) and issubclass(data_cls, UQDataModule)):
        raise ConfigError(f"data {config.data!r} is not a uqbench.UQDataModule subclass")
    backbone = config.backbone or data_cls.default_backbone
    factory = registry.load("backbone", backbone)
    owned = [k for k in config.trainer_args if k in _RUNNER_OWNED]
    if owned:
        raise ConfigError(
            f"trainer.{owned[0]} is set by uqbench itself; use logger= for the logger"
        )
    trainer_args = {"max_epochs": data_cls.default_max_epochs}
    trainer_args.update(bind(Trainer, config.trainer_args, "trainer", fill_defaults=False))
    return Resolved(
        config,
        method_cls,
        data_cls,
        backbone,
        factory,
        method_args=bind(method_cls, config.method_args, "method", skip=("backbone",)),
        data_args=bind(data_cls, config.data_args, "data"),
        backbone_args=bind(
            factory, config.backbone_args, "backbone", skip=("num_classes", "input_shape")
        ),
        trainer_args=trainer_args,
    )


def _build(resolved: Resolved) -> tuple[Any, Any]:
    """The set-up datamodule and the method (with its backbone) for ``resolved``."""
    datamodule = resolved.data_cls(**resolved.data_args)
    datamodule.setup("fit")
    backbone = resolved.backbone_factory(
        num_classes=datamodule.num_classes,
        input_shape=datamodule.input_shape,
        **resolved.backbone_args,
    )
    return datamodule, resolved.method_cls(backbone=backbone, **resolved.method_args)


def _logger(resolved: Resolved, folder: Path, name: str) -> Any:
    kind = resolved.config.logger
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(folder), name="", version="logs")
    if kind == "wandb":
        import os

        from lightning.pytorch.loggers import WandbLogger

        return WandbLogger(
            project=os.environ.get("WANDB_PROJECT", "uqbench"),
            name=name,
            save_dir=str(folder),
            offline=os.environ.get("WANDB_MODE") == "offline",
            config=resolved.to_dict(),
        )
    return False


def _quiet_lightning() -> None:
    """Keep the run's output to the report: Lightning's info lines and tips go to debug."""
    import logging
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*number of training batches.*")


def _trainer(resolved: Resolved, logger: Any) -> Any:
    from lightning.pytorch import Trainer

    _quiet_lightning()
    options = {
        "accelerator": "cpu",
        "devices": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "log_every_n_steps": 5,
    }
    options.update(resolved.trainer_args)
    return Trainer(logger=logger, enable_checkpointing=False, **options)


def base_spec(resolved: Resolved, method: Any) -> dict[str, Any]:
    """What determines a trained base classifier: backbone, data, seed, training config."""
    return {
        "backbone": resolved.backbone,
        "backbone_args": resolved.backbone_args,
        "data": resolved.config.data,
        "data_args": resolved.data_args,
        "seed": resolved.config.seed,
        "training": method.training_config,
        "trainer": resolved.trainer_args,
        "torch": torch.__version__,
    }


def _train(resolved: Resolved, method: Any, datamodule: Any, logger: Any) -> dict[str, Any]:
    """Load (or train once and cache) the base classifier if the method uses one, then train
    the method itself if it trains."""
    from uqbench.method import BaseClassifier

    done: dict[str, Any] = {"trained": method.trains()}
    if method.uses_base_model():
        spec = base_spec(resolved, method)
        key = cache.base_key(spec)
        state = cache.load_base(key)
        if state is None and not resolved.config.train_base:
            raise ConfigError(
                f"no cached base model for this backbone, data, seed and training config (key "
                f"{key} in {cache.cache_root()}) and train_base=false; set train_base=true to "
                f"train it, or change the settings to those of a cached run"
            )
        if state is None:
            base = BaseClassifier(method.backbone, **method.training_config)
            _trainer(resolved, logger).fit(base, datamodule=datamodule)
            cache.save_base(key, method.backbone.state_dict(), spec)
        else:
            method.backbone.load_state_dict(state)
        done.update(base_key=key, base_reused=state is not None)
    if method.trains():
        _trainer(resolved, logger).fit(method, datamodule=datamodule)
    return done


def _document(resolved: Resolved, method: Any, record: EvalRecord, **extra: Any) -> dict[str, Any]:
    extra = {k: v for k, v in extra.items() if v is not None}
    return {
        "schema_version": SCHEMA_VERSION,
        "method": resolved.config.method,
        "data": resolved.config.data,
        "backbone": resolved.backbone,
        "seed": resolved.config.seed,
        "metrics": compute_metrics(record),
        "tuned": method.tuned(),
        "cost": method.cost_facts().to_dict(),
        **extra,
    }


def fit(config: RunConfig) -> list[tuple[Path, dict[str, Any]]]:
    """Train (or reuse), calibrate on dev, evaluate; write one run folder per method, atomically.

    ``config.method`` names one method or a group (``[msp,energy,react]``). A group shares one
    base classifier and one recorded pass per split; every member must be post-hoc.
    """
    from lightning.pytorch import seed_everything

    names = method_names(config.method)
    group = [resolve(dataclasses.replace(config, method=name)) for name in names]
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    folders = []
    try:
        for resolved in group:
            name = _run_name(config, resolved.config.method, stamp, grouped=len(group) > 1)
            folders.append(RunFolder.create(Path(config.out), name))
        seed_everything(config.seed, workers=True, verbose=False)
        started = time.perf_counter()
        datamodule, methods = _build_group(group)
        logger = _logger(group[0], folders[0].path, folders[0].final.name)
        training = _train(group[0], methods[0], datamodule, logger)
        trained = time.perf_counter()
        records = _evaluate(methods, datamodule)
        evaluated = time.perf_counter()
        seconds = {"train": trained - started, "calibrate_and_evaluate": evaluated - trained}
        results = []
        for resolved, method, folder in zip(group, methods, folders, strict=True):
            document = _document(
                resolved,
                method,
                records[id(method)],
                training=training,
                seconds=seconds,
                group=names if len(names) > 1 else None,
            )
            if logger and folder is folders[0]:
                _close_logger(logger, config, document)
            _write_run(folder, resolved, method, records[id(method)], document)
            results.append((folder.final, document))
        for folder in folders:
            folder.commit()
        return results
    except BaseException:
        for folder in folders:
            folder.abort()
        raise


def method_names(text: str) -> list[str]:
    """``msp`` -> [msp]; ``[msp,energy]`` or ``msp,energy`` -> [msp, energy]; no duplicates."""
    names = [n.strip() for n in text.strip().strip("[]").split(",") if n.strip()]
    if not names:
        raise ConfigError("method= names no method; e.g. method=snapuq or method=[msp,energy]")
    if len(set(names)) != len(names):
        raise ConfigError(f"method= lists a method twice: {text}")
    return names


def _run_name(config: RunConfig, method: str, stamp: str, grouped: bool) -> str:
    if config.name:
        return f"{config.name}-{method}" if grouped else config.name
    return f"{method}-{config.data}-s{config.seed}-{stamp}"


def _build_group(group: list[Resolved]) -> tuple[Any, list[Any]]:
    """One datamodule and one backbone; every method of the group wraps that backbone."""
    datamodule, first = _build(group[0])
    methods = [first] + [r.method_cls(backbone=first.backbone, **r.method_args) for r in group[1:]]
    if len(methods) > 1:
        for resolved, method in zip(group, methods, strict=True):
            if not method.uses_base_model() or method.trains():
                raise ConfigError(
                    f"method {resolved.config.method!r} trains its own model, so it cannot join "
                    f"a group of post-hoc methods sharing one base classifier; run it alone"
                )
    return datamodule, methods


def _evaluate(methods: list[Any], datamodule: Any) -> dict[int, EvalRecord]:
    """Post-hoc methods fit and score from one recorded pass per split; the others calibrate on
    the dev loaders and run their own forward passes."""
    from uqbench.posthoc import PostHocMethod

    shared = [m for m in methods if isinstance(m, PostHocMethod)]
    records = predict_posthoc(shared, datamodule) if shared else {}
    for method in methods:
        if id(method) not in records:
            method.calibrate(datamodule.val_dataloader(), datamodule.dev_mix_dataloader())
            records[id(method)] = predict(method, datamodule)
    return records


def _close_logger(logger: Any, config: RunConfig, document: dict[str, Any]) -> None:
    logger.log_metrics(_flatten({"final": document["metrics"]}))
    logger.finalize("success")
    if config.logger == "wandb":
        import wandb

        wandb.finish()


def _write_run(
    folder: RunFolder, resolved: Resolved, method: Any, record: EvalRecord, document: dict
) -> None:
    config_doc = resolved.to_dict() | {
        "schema_version": SCHEMA_VERSION,
        "uqbench_command": "fit",
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }
    atomic_write_json(folder.path / CONFIG, config_doc)
    record.save(folder.path / SCORES)
    torch.save({"state_dict": method.state_dict()}, folder.path / CHECKPOINT)
    atomic_write_json(folder.path / METRICS, document)  # last: its presence means complete


def test(run: Path) -> dict[str, Any]:
    """Rebuild a finished run from its config, load its checkpoint safely, evaluate it again and
    rewrite the metrics in its ``metrics.json`` atomically (what only the fit knew is kept)."""
    saved, checkpoint = read_run(run)
    config = RunConfig(
        method=saved["method"],
        data=saved["data"],
        backbone=saved["backbone"],
        seed=saved["seed"],
        logger="none",
        method_args=saved["method_args"],
        data_args=saved["data_args"],
        backbone_args=saved["backbone_args"],
        trainer_args=saved["trainer_args"],
    )
    resolved = resolve(config)
    datamodule, method = _build(resolved)
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
        method.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint gets the same message
        raise RunDirError(f"cannot load checkpoint {checkpoint}: {exc}") from exc
    started = time.perf_counter()
    record = predict(method, datamodule)
    fresh = _document(resolved, method, record)
    # Keep what only the fit knew (training, dev diagnostics, timings); replace the metrics.
    previous = json.loads((run / METRICS).read_text()) if (run / METRICS).is_file() else {}
    document = fresh | {k: v for k, v in previous.items() if k not in ("metrics", "cost")}
    document["seconds"] = previous.get("seconds", {}) | {
        "test_evaluate": time.perf_counter() - started
    }
    atomic_write_json(run / METRICS, document)
    return document


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "/"))
        elif isinstance(value, (int, float)) and value == value:  # skips NaN
            flat[name] = float(value)
    return flat
