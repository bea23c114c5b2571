"""``uqbench fit`` and ``uqbench test``: the stages of :mod:`uqbench.stages`, in order.

Everything the user typed is resolved and checked before any data is loaded or any folder is
written, so a typo costs a second, not a training run.
"""

from __future__ import annotations

import dataclasses
import math
import os
import secrets
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from uqbench.config import RunConfig, logger_names
from uqbench.dev_data import DevData
from uqbench.errors import ConfigError, RunDirError
from uqbench.metric_table import flat_metrics
from uqbench.random_state import kept_random_state
from uqbench.recorded_pass import TapRequest
from uqbench.run_folder import RunFolder, atomic_write_json, check_writable_folder, clean_stale
from uqbench.stages import base_model, train
from uqbench.stages.calibrate import calibrate_method
from uqbench.stages.checkpoints import Checkpoints
from uqbench.stages.evaluate import evaluate
from uqbench.stages.rebuild import load_run
from uqbench.stages.resolve import Resolved, dry_run, method_names, resolve
from uqbench.stages.write import config_document, metrics_document, write_run


def fit(config: RunConfig) -> list[tuple[Path, dict[str, Any]]]:
    """Train (or reuse), calibrate on dev, evaluate; write one run folder per method, atomically.

    ``config.method`` names one method or a group (``msp,energy,react``). A group shares one
    base classifier and one recorded pass per split; every member must score from a record.
    """
    if train.ddp_child():
        # Lightning's DDP launcher runs this command again for each other device: that process
        # trains, then stops (train.fit); it writes nothing where rank 0 writes its results.
        with tempfile.TemporaryDirectory(prefix="uqbench-rank-") as private:
            return _fit(dataclasses.replace(config, out=private, deploy=None, logger="none"))
    return _fit(config)


def _fit(config: RunConfig) -> list[tuple[Path, dict[str, Any]]]:
    from lightning.pytorch import seed_everything

    group = [resolve(dataclasses.replace(config, method=n)) for n in method_names(config.method)]
    _check_group(group)
    dry_run(group)
    check_writable_folder(Path(config.out), "out")
    boards = deploy_boards(config.deploy)
    if group[0].needs.base:
        base_model.check_cache()
    _check_ddp(group[0])
    if "wandb" in logger_names(config.logger):
        train.check_wandb_login()
    threads = train.set_threads(config.threads)
    clean_stale(Path(config.out))
    if config.resume:  # the interrupted run's name, and its checkpoints
        config = dataclasses.replace(config, name=config.resume)
    folders = _create_folders(config, group)
    try:
        # What the training depends on: the resolved options of every method of the group.
        record = group[0].to_dict() | {
            "method": config.method,
            "method_args": {r.config.method: r.method_args for r in group},
        }
        checkpoints = Checkpoints(
            Path(config.out), folders[0].final.name, record, resume=config.resume is not None
        )
    except BaseException:
        for folder in folders:
            folder.abort()
        raise
    try:
        started = time.perf_counter()
        datamodule = _isolated_setup(group[0].data_cls(**group[0].data_args))
        datamodule.setup("fit")
        seed_everything(config.seed, workers=True, verbose=False)
        logger = train.make_logger(group[0], folders[0].path, folders[0].final.name)
        device = train.run_device(group[0])
        steps = _check_training_length(datamodule, group[0])
        methods, training = _train(group, datamodule, logger, device, checkpoints)
        training["optimizer_steps"] = steps
        trained = time.perf_counter()
        data = DevData(datamodule, methods[0].backbone, TapRequest.of(methods), device)
        calibrations = {id(m): calibrate_method(m, data) for m in methods}
        predictions = evaluate(methods, datamodule, device)
        seconds = {
            "train": trained - started,
            "calibrate_and_evaluate": time.perf_counter() - trained,
        }
        run = {
            "accelerator": group[0].trainer_args.get("accelerator", "auto"),
            "device": str(device),
            "threads": threads,
            "data_files": datamodule.data_files(),
        }
        extra = {"calibrations": calibrations, "training": training, "seconds": seconds, "run": run}
        results = _write_all(config, group, methods, folders, predictions, logger, extra)
    except BaseException:
        for folder in folders:
            folder.abort()
        if any(checkpoints.folder.rglob("last.ckpt")):
            print(
                f"uqbench: the training's checkpoints are kept in {checkpoints.folder}; continue "
                f"with the same command and resume={folders[0].final.name}",
                file=sys.stderr,
            )
        else:  # nothing to resume from: leave nothing behind
            checkpoints.remove()
        raise
    _commit_all(folders)
    checkpoints.remove()
    if boards:  # the fit is complete and committed; each run is then deployed from its folder
        from uqbench.stages.deploy import deploy_run

        for folder, document in results:
            document["deploy"] = deploy_run(Path(folder), boards)
    return results


def _commit_all(folders: list[RunFolder]) -> None:
    """Commit every complete folder; one whose name was taken meanwhile keeps its results in
    place (never aborted: they are complete), and every such error is raised at the end."""
    errors = []
    for folder in folders:
        try:
            folder.commit()
        except RunDirError as exc:
            errors.append(exc)
    if errors:
        raise RunDirError("; ".join(str(e) for e in errors))


def deploy_boards(names: str | None) -> list[Any]:
    """The boards of ``deploy=`` (checked, and the toolchain with them, before any training)."""
    if not names:
        return []
    from uqbench.deploy.boards import select
    from uqbench.deploy.firmware import check_toolchain

    boards = select(names)
    check_toolchain()
    return boards


def _write_all(
    config: RunConfig,
    group: list[Resolved],
    methods: list[Any],
    folders: list[RunFolder],
    predictions: dict[int, Any],
    logger: Any,
    extra: dict[str, Any],
) -> list[tuple[Path, dict[str, Any]]]:
    """Assemble each method's documents and write its partial folder (committed by the caller)."""
    results = []
    for resolved, method, folder in zip(group, methods, folders, strict=True):
        document = metrics_document(
            resolved,
            method,
            predictions[id(method)],
            tuning=extra["calibrations"][id(method)].tuning,
            fitted_on=extra["calibrations"][id(method)].fitted_on,
            training=extra["training"],
            seconds=extra["seconds"],
            group=[r.config.method for r in group] if len(group) > 1 else None,
        )
        config_doc = config_document(resolved, extra["run"])
        write_run(folder, config_doc, method, predictions[id(method)], document)
        if logger:
            # The first method's logger saw the training; each other member of a group gets a
            # run of its own (its config and final metrics), so W&B shows every method. The
            # folder is written first: W&B keeps its files as an artifact.
            own = (
                logger
                if folder is folders[0]
                else train.make_logger(resolved, folder.path, folder.final.name)
            )
            _close_logger(own, config, document, folder)
        results.append((folder.final, document))
    return results


def _isolated_setup(datamodule: Any) -> Any:
    """Run every ``setup`` call (ours, and Lightning's inside ``fit``) with the global random
    generators saved and restored, so a datamodule that reseeds them cannot move training."""
    setup = datamodule.setup

    def isolated(*args: Any, **kwargs: Any) -> Any:
        with kept_random_state():
            return setup(*args, **kwargs)

    datamodule.setup = isolated
    return datamodule


def _check_training_length(datamodule: Any, resolved: Resolved) -> int | None:
    """The optimizer steps this run's training takes; a warning when they are under a tenth of
    what the datamodule's recipe was designed for. Measured on 3,600 real MNIST digits with
    the paper's recipe: 150 steps reach 77% accuracy and ECE 0.44, and a plain constant-lr run
    without augmentation 87% and 0.29: the logits have not grown yet, so the model is
    underconfident, whatever the method."""
    try:
        batches = math.ceil(len(datamodule.train_set) / datamodule.batch_size)
    except (AttributeError, TypeError):  # a plugin's datamodule without a sized train_set
        return None
    steps = batches * resolved.trainer_args["max_epochs"]
    designed = getattr(datamodule, "recipe_steps", None)
    if designed and steps < designed / 10:
        print(
            f"uqbench: warning: this training takes {steps:,} optimizer steps, under a tenth of "
            f"the {designed:,} data={resolved.config.data}'s recipe was designed for: expect an "
            f"undertrained, underconfident classifier (more trainer.max_epochs, a smaller "
            f"data.batch_size or more data)",
            file=sys.stderr,
        )
    return steps


def _check_group(group: list[Resolved]) -> None:
    if len(group) == 1:
        return
    for resolved in group:
        needs = resolved.needs
        if not needs.base or needs.trains or needs.scores_from != "record":
            raise ConfigError(
                f"method {resolved.config.method!r} does not score from the shared base model's "
                f"recorded pass, so it cannot join a group of post-hoc methods; run it alone"
            )


def _check_ddp(resolved: Resolved) -> None:
    """Under DDP each ``trainer.fit`` launches the processes anew, so a run trains one module:
    a method that trains on top of a base classifier which is not cached yet would need two."""
    if "ddp" not in str(resolved.trainer_args.get("strategy", "")):
        return
    needs = resolved.needs
    if (
        needs.base
        and needs.trains
        and not base_model.is_cached(resolved, train.run_device(resolved))
    ):
        raise ConfigError(
            f"{resolved.config.method} trains on a base classifier that is not cached, and under "
            f"trainer.strategy=ddp a run trains one module: train the base first with the same "
            f"options and a post-hoc method (e.g. method=msp, which caches it), then run this"
        )


def _create_folders(config: RunConfig, group: list[Resolved]) -> list[RunFolder]:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{secrets.token_hex(3)}"
    folders: list[RunFolder] = []
    try:
        for resolved in group:
            method = resolved.config.method
            if config.name:
                name = f"{config.name}-{method}" if len(group) > 1 else config.name
            else:
                name = f"{method}-{config.data}-s{config.seed}-{stamp}"
            folders.append(RunFolder.create(Path(config.out), name))
    except BaseException:
        for folder in folders:
            folder.abort()
        raise
    return folders


def _train(
    group: list[Resolved],
    datamodule: Any,
    logger: Any,
    device: torch.device,
    checkpoints: Checkpoints,
) -> tuple[list[Any], dict[str, Any]]:
    """Build the backbone, prepare the base classifier if the methods start from one, build
    the methods on it, and train the one method that trains (each from its checkpoint when
    resuming)."""
    from uqbench.method import BaseClassifier
    from uqbench.stages.resolve import build_backbone

    first = group[0]
    backbone = build_backbone(first)

    def fit_module(module: Any) -> None:
        role = "base" if isinstance(module, BaseClassifier) else "method"
        trainer = train.make_trainer(first, logger, checkpoints.callbacks(role))
        train.fit(trainer, module, datamodule, checkpoints.last(role))

    training: dict[str, Any] = {"trained": first.needs.trains}
    if first.needs.base:
        training.update(base_model.prepare_base(first, backbone, fit_module, device))
        checkpoints.discard("base")  # cached now: a resume loads it from the cache
    methods = [r.method_cls(backbone=backbone, **r.method_args) for r in group]
    if first.needs.trains:
        fit_module(methods[0])
    for method in methods:
        method.to(device)
    return methods, training


def _close_logger(
    logger: Any, config: RunConfig, document: dict[str, Any], folder: RunFolder
) -> None:
    """Log the final metrics and close the logger; a logger that fails here (a server gone
    mid-run) costs its own record, never the finished run, which is written regardless."""
    try:
        _finish_logger(logger, config, document, folder)
    except Exception as exc:  # noqa: BLE001 - any logger failure gets the same treatment
        print(
            f"uqbench: warning: the {config.logger} logger failed while closing "
            f"({type(exc).__name__}: {exc}); the run's results are written regardless",
            file=sys.stderr,
        )


def _finish_logger(
    logger: Any, config: RunConfig, document: dict[str, Any], folder: RunFolder
) -> None:
    # Test metrics under final/, the calibrated method's dev metrics under dev/ (a sweep's
    # target); the provisional dev AUROC logged while training is provisional/dev/...
    metrics = flat_metrics({"final": document["metrics"], "dev": document["dev_metrics"]})
    for one in logger:
        one.log_metrics(metrics)
        one.finalize("success")
    # Each logger's files live in the partial folder, and the paths they print or record must
    # name the folder the run will have.
    if "wandb" in logger_names(config.logger):
        import wandb

        run = wandb.run
        from uqbench.stages.wandb_run import finish_written, log_run

        if run is not None:
            log_run(run, folder.path, folder.final.name, document)
        where = Path(run.dir).parent if run is not None else None
        url = run.url if run is not None and not run.offline else None
        finish_written()
        # W&B's "latest-run" link points into the partial folder: make it relative.
        link = folder.path / "wandb" / "latest-run"
        if link.is_symlink():
            target = os.readlink(link)
            link.unlink()
            link.symlink_to(Path(target).name)
        if where is not None and where.is_relative_to(folder.path):
            final = folder.final / where.relative_to(folder.path)
            upload = f"; upload it with `wandb sync {final}`" if url is None else f": {url}"
            print(f"uqbench: W&B logged {folder.final.name} in {final}{upload}", file=sys.stderr)
    for meta in (folder.path / "mlruns").rglob("meta.yaml"):
        partial, final = folder.path.as_uri() + "/", folder.final.as_uri() + "/"
        meta.write_text(meta.read_text().replace(partial, final))


AGREEMENT = 1e-9  # absolute: the same checkpoint and data give the same numbers


def compare_with_fit(fitted: dict[str, Any], tested: dict[str, Any]) -> dict[str, Any]:
    """Every metric of a re-evaluation against the fit's: how many, the largest absolute
    difference, and the ones that differ by more than ``AGREEMENT`` (or exist in one only)."""
    before, after = flat_metrics(fitted), flat_metrics(tested)
    shared = sorted(set(before) & set(after))
    differences = {k: abs(before[k] - after[k]) for k in shared}
    differing = sorted(k for k, d in differences.items() if d > AGREEMENT)
    differing += sorted(set(before) ^ set(after))
    return {
        "metrics": len(shared),
        "max_abs_difference": max(differences.values(), default=0.0),
        "agree": not differing,
        "differing": differing,
    }


def test(run: Path) -> dict[str, Any]:
    """Rebuild a finished run from its checked record, load its checkpoint safely, evaluate it
    again and write the results beside the fit's record (``test-<time>.json``)."""
    resolved, method, datamodule, fitted = load_run(run)
    device = train.run_device(resolved)
    method.to(device)
    started = time.perf_counter()
    predictions = evaluate([method], datamodule, device)[id(method)]
    document = metrics_document(resolved, method, predictions)
    document |= {k: fitted[k] for k in ("tuning", "fitted_on", "training") if k in fitted}
    document["seconds"] = {"test_evaluate": time.perf_counter() - started}
    document["uqbench_command"] = "test"
    document["compared_with_fit"] = compare_with_fit(fitted["metrics"], document["metrics"])
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{secrets.token_hex(3)}"
    atomic_write_json(run / f"test-{stamp}.json", document)
    return document
