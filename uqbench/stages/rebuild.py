"""Rebuilding a finished run from its folder: its checked record, its method with the
checkpoint loaded safely, and its datamodule set up for evaluation. ``uqbench test`` and
``uqbench deploy`` both start here, so it lives below both commands (no stage imports the
runner)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from uqbench.config import RunConfig
from uqbench.errors import RunDirError
from uqbench.run_folder import read_run
from uqbench.stages.resolve import build_backbone, dry_run, resolve
from uqbench.stages.train import set_threads


def load_run(run: Path) -> tuple[Any, Any, Any, dict[str, Any]]:
    """(resolved, method with its checkpoint loaded safely, datamodule set up for test, the
    fit's record) of a finished run folder; a damaged, edited or half-written one is refused."""
    saved, fitted, checkpoint = read_run(run)
    config = RunConfig(
        method=saved["method"],
        data=saved["data"],
        backbone=saved["backbone"],
        seed=saved["seed"],
        threads=saved.get("threads"),
        logger="none",
        method_args=saved["method_args"],
        data_args=saved["data_args"],
        backbone_args=saved["backbone_args"],
        trainer_args=saved["trainer_args"],
    )
    resolved = resolve(config)
    dry_run([resolved])
    set_threads(config.threads)
    datamodule = resolved.data_cls(**resolved.data_args)
    datamodule.setup("test")
    method = resolved.method_cls(backbone=build_backbone(resolved), **resolved.method_args)
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
        keys = method.load_state_dict(state, strict=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint gets the same message
        raise RunDirError(f"cannot load checkpoint {checkpoint}: {exc}") from exc
    if keys.missing_keys or keys.unexpected_keys:
        raise RunDirError(
            f"the checkpoint {checkpoint} does not hold what this version of method "
            f"{config.method!r} has (missing: {', '.join(keys.missing_keys) or 'none'}; "
            f"unexpected: {', '.join(keys.unexpected_keys) or 'none'}): it was written by "
            f"another version of uqbench or of the plugin. Fit the run again with this version"
        )
    return resolved, method, datamodule, fitted
