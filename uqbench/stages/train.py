"""The training stage: Lightning's Trainer, the logger (CSV or W&B) and the run's device.

Lightning decides the device (``trainer.accelerator=auto`` by default: a GPU when there is one),
and every later stage runs on the device training used. Lightning's info lines go to debug, and
its progress bar shows only when a terminal is attached (never in CI or in logs).
"""

from __future__ import annotations

import netrc
import os
import socket
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import torch

from uqbench.config import logger_names
from uqbench.errors import ConfigError
from uqbench.stages.lightning_output import quiet_lightning
from uqbench.stages.resolve import Resolved, trial_trainer_options

OFFLINE_MODES = ("offline", "disabled", "dryrun")
WANDB_CONNECT_S = 5.0  # how long the server may take to accept a connection before training


def check_wandb_login() -> None:
    """``logger=wandb`` must never wait at W&B's login prompt nor fail after training: check for
    a key before training, then that the server answers. An unreachable server switches this
    process to offline logging (``WANDB_MODE=offline``, W&B's own switch) with a warning, so a
    finished run is never lost to the logger; ``wandb sync`` uploads it later."""
    if os.environ.get("WANDB_MODE", "").lower() in OFFLINE_MODES:
        return
    url = urllib.parse.urlsplit(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    host = url.hostname or "api.wandb.ai"
    if not os.environ.get("WANDB_API_KEY") and not _netrc_has(host):
        raise ConfigError(
            "logger=wandb needs a W&B login and none was found: run `wandb login` (or set "
            "WANDB_API_KEY), or log without a server with WANDB_MODE=offline (sync later with "
            "`wandb sync`), or use logger=csv"
        )
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=WANDB_CONNECT_S).close()
    except OSError as exc:
        print(
            f"uqbench: warning: the W&B server {host}:{port} cannot be reached ({exc}); logging "
            "offline into the run folder's wandb/ (upload it later with `wandb sync`)",
            file=sys.stderr,
        )
        os.environ["WANDB_MODE"] = "offline"


def _netrc_has(host: str) -> bool:
    try:
        return bool(netrc.netrc().authenticators(host))
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def make_logger(resolved: Resolved, folder: Path, name: str) -> list[Any]:
    """Lightning's loggers for ``logger=``, each writing inside the run folder: ``logs/``
    (CSV), ``tensorboard/``, ``wandb/`` (offline under ``WANDB_MODE=offline``) and ``mlruns/``
    (MLflow's file store, which needs no server)."""
    loggers = []
    for kind in logger_names(resolved.config.logger):
        if kind == "csv":
            from lightning.pytorch.loggers import CSVLogger

            loggers.append(CSVLogger(save_dir=str(folder), name="", version="logs"))
        elif kind == "tensorboard":
            from lightning.pytorch.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(save_dir=str(folder), name="", version="tensorboard"))
        elif kind == "wandb":
            import wandb
            from lightning.pytorch.loggers import WandbLogger

            loggers.append(
                WandbLogger(
                    project=os.environ.get("WANDB_PROJECT", "uqbench"),
                    name=name,
                    save_dir=str(folder),
                    offline=os.environ.get("WANDB_MODE") == "offline",
                    config=resolved.to_dict(),
                    # A bench's runs share a group (it sets WANDB_RUN_GROUP for its cells).
                    group=os.environ.get("WANDB_RUN_GROUP"),
                    tags=[
                        resolved.config.method,
                        resolved.config.data,
                        f"seed-{resolved.config.seed}",
                    ],
                    # W&B's own closing lines name the partial folder; uqbench prints the
                    # final one when the run closes.
                    settings=wandb.Settings(silent=True),
                )
            )
        else:
            from lightning.pytorch.loggers import MLFlowLogger

            # MLflow keeps its file store for offline use but asks for an explicit opt-in.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            loggers.append(
                MLFlowLogger(
                    experiment_name=os.environ.get("MLFLOW_EXPERIMENT_NAME", "uqbench"),
                    run_name=name,
                    tracking_uri=(folder / "mlruns").as_uri(),
                )
            )
    return loggers


def make_trainer(resolved: Resolved, logger: Any, checkpointing: list[Any] | None = None) -> Any:
    """The run's Trainer: uqbench's defaults, the user's ``trainer.*`` (callbacks built), the
    ``logger`` and, for a run that can be resumed, the ``checkpointing`` callbacks."""
    from lightning.pytorch import Trainer

    quiet_lightning()
    options = trial_trainer_options(
        {
            "enable_progress_bar": sys.stderr.isatty(),
            "num_sanity_val_steps": 0,
            "log_every_n_steps": 5,
            **resolved.trainer_args,
        }
    )
    return Trainer(
        **options
        | {
            "logger": logger or False,
            "callbacks": [*options["callbacks"], *(checkpointing or [])],
            "enable_checkpointing": bool(checkpointing),
        }
    )


def run_device(resolved: Resolved) -> torch.device:
    """The device the Trainer would train on (also for methods that never train)."""
    return make_trainer(resolved, False).strategy.root_device


def fit(trainer: Any, module: Any, datamodule: Any, ckpt_path: Path | None = None) -> None:
    """``trainer.fit`` (from ``ckpt_path``, loaded with ``weights_only=True``, when resuming),
    with Ctrl-C raised as ``KeyboardInterrupt`` (Lightning shuts down gracefully and then exits
    with status 1, or returns, instead)."""
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SystemExit:
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    if trainer.interrupted:
        raise KeyboardInterrupt
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # Training was the only collective work: every rank waits here, then each leaves the
        # group, so rank 0 calibrates and evaluates alone (nothing waits for a rank that left).
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    if not trainer.is_global_zero:
        # Lightning's ddp launcher runs this command once per device; the others stop after
        # training (removing their own partial folders), and rank 0 calibrates and evaluates.
        raise SystemExit(0)


def ddp_child() -> bool:
    """Whether this process is one Lightning's DDP launcher started for another device (it
    sets ``LOCAL_RANK`` for them; the process the user started has none, or 0)."""
    return os.environ.get("LOCAL_RANK", "0") != "0"


def set_threads(threads: int | None) -> int:
    from uqbench.stages.resolve import default_threads

    count = threads or default_threads()
    torch.set_num_threads(count)
    return count
