"""Defects found by trying the suite as a new user, a plugin author and an adversary would."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from uqbench import metrics as M
from uqbench.cli import main
from uqbench.errors import RunDirError
from uqbench.run_folder import OWNER, RunFolder, clean_stale

FAST = ["method=msp", "trainer.max_epochs=1"]


@pytest.fixture
def no_data(monkeypatch):
    """Loading data is an error: a check that passes ran before any data was loaded."""
    from uqbench.datamodules.digits import Digits

    def refuse(self, stage=None):
        raise AssertionError("data loaded before the options were checked")

    monkeypatch.setattr(Digits, "setup", refuse)


@pytest.mark.parametrize(
    "args,message",
    [
        (["name=../../escape"], "is not a folder name"),
        (["name=/abs/path"], "is not a folder name"),
        (["name=."], "is not a folder name"),
        (["name=.."], "is not a folder name"),
        (["name=a\nb"], "is not a folder name"),
        (["name=a/b"], "name="),
        (["name=" + "x" * 300], "name= must be at most"),
        (["trainer.max_epochs=0"], "trainer.max_epochs must be a whole number in 1..1,000,000"),
        (["trainer.max_epochs=-1"], "trainer.max_epochs must be a whole number in 1..1,000,000"),
        (["seed=-1"], "seed must be in 0..4294967295"),
        (["seed=99999999999999999999"], "seed must be in 0..4294967295"),
        (["data.batch_size=0"], "data.batch_size must be in 1..1,048,576"),
        (["data.batch_size=99999999999999999999"], "data.batch_size must be in 1..1,048,576"),
        (["data.split_seed=99999999999999999999"], "data.split_seed must be in 0..4294967295"),
        (["threads=999999999999"], "threads must be in 1..1024"),
        (["trainer.max_epochs=99999999999999999999"], "trainer.max_epochs must be a whole number"),
        (["data.batch_size=1"], "batch norm"),
        (["data.num_workers=-1"], "data.num_workers must be >= 0"),
        (["backbone.width=100000"], "Choose smaller backbone.* options"),
        (["backbone.width=99999999999999999999"], "Choose smaller backbone.* options"),
        (["backbone.width=-1"], "backbone.width=-1 must be at least 1"),
        (["backbone.width=0"], "backbone.width=0 must be at least 1"),
        (["backbone=resnet8", "backbone.width=0"], "backbone.width=0 must be at least 1"),
        (["backbone=ds-cnn", "backbone.filters=-3"], "backbone.filters=-3 must be at least 1"),
        (["backbone=mobilenetv2", "backbone.width=0.0"], "backbone.width=0.0 must be at least"),
        (["backbone=mobilenetv2", "backbone.width=inf"], "expected a finite float"),
        (["trainer.max_time=x"], "trainer.max_time"),
        (["trainer.val_check_interval=..."], "trainer.val_check_interval"),
        (["trainer.devices=[]"], "trainer.devices"),
        (["method.lr=-1"], "method.lr must be > 0"),
        (["method=snapuq", "method.rank=0"], "method.rank=0 is invalid"),
        (["method=snapuq", "method.taps=[mid,nope]"], "tap 'nope' does not exist"),
        (["method=msp,snapuq"], "cannot join a group"),
        (["method=MSP"], "Did you mean 'msp'?"),
        (["run=runs/x"], "run= belongs to `uqbench test"),
        (["method.lr=" + "9" * 100_000], "expected a finite float"),
        (["method.lr=" + "x" * 100_000], "characters)"),
    ],
)
def test_every_option_is_checked_before_data_or_folders(capsys, tmp_path, no_data, args, message):
    out = tmp_path / "runs"
    code = main(["fit", f"out={out}", *FAST, *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err
    assert len(err) < 2000  # a huge value is not echoed whole
    assert not out.exists()  # nothing written, not even an empty runs/


def test_a_live_partial_folder_is_never_taken_and_a_dead_one_is_cleaned(tmp_path):
    live = RunFolder.create(tmp_path, "run")
    with pytest.raises(RunDirError, match="being written by another live run"):
        RunFolder.create(tmp_path, "run")
    assert live.path.is_dir()
    # A killed run: its owner process is gone.
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    owner = json.loads((live.path / OWNER).read_text()) | {"pid": int(dead.stdout)}
    (live.path / OWNER).write_text(json.dumps(owner))
    again = RunFolder.create(tmp_path, "run")  # the stale folder is replaced
    assert (
        again.path.is_dir() and json.loads((again.path / OWNER).read_text())["pid"] == os.getpid()
    )
    (again.path / OWNER).write_text(json.dumps(owner))
    (tmp_path / "other.partial").mkdir()
    (tmp_path / "other.partial" / OWNER).write_text(json.dumps(owner))
    assert {p.name for p in clean_stale(tmp_path)} == {"run.partial", "other.partial"}
    assert list(tmp_path.iterdir()) == []


def test_default_names_are_unique_within_a_second(capsys, tmp_path, monkeypatch):
    from uqbench.config import RunConfig
    from uqbench.runner import _create_folders
    from uqbench.stages.resolve import resolve

    config = RunConfig(method="msp", out=str(tmp_path))
    group = [resolve(config)]
    first, second = _create_folders(config, group), _create_folders(config, group)
    assert first[0].path != second[0].path


def _fit(capsys, tmp_path, *args):
    code = main(["fit", f"out={tmp_path}", "name=r", *FAST, *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return tmp_path / "r"


@pytest.mark.slow
def test_a_corrupt_base_model_is_set_aside_and_retrained(capsys, tmp_path):
    from uqbench.stages.base_model import cache_root

    folder = _fit(capsys, tmp_path / "a")
    key = json.loads((folder / "metrics.json").read_text())["training"]["base_key"]
    cached = cache_root() / "base" / f"{key}.pt"
    cached.write_bytes(cached.read_bytes()[:100])  # truncated
    code = main(["fit", f"out={tmp_path / 'b'}", "train_base=false", *FAST])
    err = capsys.readouterr().err
    assert code == 2 and str(cached) in err and "train_base=true" in err
    cached.write_bytes(b"")
    folder = _fit(capsys, tmp_path / "c")
    assert json.loads((folder / "metrics.json").read_text())["training"]["base_reused"] is False
    assert list(cached.parent.glob(f"{key}.pt.corrupt-*"))


def test_wandb_without_a_login_is_refused_before_training(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    code = main(["fit", f"out={tmp_path / 'runs'}", "logger=wandb", *FAST])
    err = capsys.readouterr().err
    assert code == 2 and "wandb login" in err and "WANDB_MODE=offline" in err
    assert not (tmp_path / "runs").exists()


def test_uqbench_test_refuses_damaged_and_edited_records(capsys, tmp_path):
    folder = _fit(capsys, tmp_path)
    config = (folder / "config.json").read_text()
    metrics = (folder / "metrics.json").read_text()
    (folder / "config.json").write_text(config[: len(config) // 2])
    assert main(["test", f"run={folder}"]) == 2
    assert "config.json is damaged" in capsys.readouterr().err
    (folder / "config.json").write_text(config.replace('"split_seed": 0', '"split_seed": 5'))
    assert main(["test", f"run={folder}"]) == 2
    assert "it was edited" in capsys.readouterr().err
    (folder / "config.json").write_text(config)
    (folder / "metrics.json").write_text(metrics[:50])
    assert main(["test", f"run={folder}"]) == 2
    assert "metrics.json is damaged" in capsys.readouterr().err
    (folder / "metrics.json").write_text(metrics)
    assert main(["test", f"run={folder}"]) == 0
    assert (folder / "metrics.json").read_text() == metrics  # the fit's record is untouched
    assert len(list(folder.glob("test-*.json"))) == 1


def test_nan_or_unnormalized_probabilities_are_rejected():
    labels = np.array([0, 1])
    for probs in (np.array([[np.nan, 0.5], [0.5, 0.5]]), np.array([[0.9, 0.9], [0.5, 0.5]])):
        for metric in (M.nll, M.brier, M.adaptive_ece, M.accuracy):
            with pytest.raises(ValueError, match="probabilit"):
                metric(probs, labels)


@pytest.mark.slow
def test_a_datamodule_that_reseeds_cannot_move_the_training_seed(capsys, tmp_path, monkeypatch):
    from uqbench.datamodules.digits import Digits

    plain = json.loads((_fit(capsys, tmp_path / "a") / "metrics.json").read_text())["metrics"]
    setup = Digits.setup

    def reseeding(self, stage=None):
        setup(self, stage)
        torch.manual_seed(12345)

    monkeypatch.setattr(Digits, "setup", reseeding)
    monkeypatch.setenv("UQBENCH_CACHE", str(tmp_path / "other-cache"))
    again = json.loads((_fit(capsys, tmp_path / "b") / "metrics.json").read_text())["metrics"]
    assert again == plain


def test_ctrl_c_during_training_exits_130_and_writes_nothing(capsys, tmp_path, monkeypatch):
    from uqbench.method import UQMethod

    def interrupted(self, batch, batch_idx):
        raise KeyboardInterrupt  # Lightning catches it and returns from fit; we must not go on

    monkeypatch.setattr(UQMethod, "training_step", interrupted)
    assert main(["fit", f"out={tmp_path}", *FAST]) == 130
    assert "interrupted; nothing was written" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_stored_predictions_stay_under_1kb_per_example_at_200_classes(tmp_path):
    from uqbench.predictions import Predictions

    n, c = 1000, 200
    probs = np.full((n, c), 1.0 / c, dtype=np.float32)
    p = Predictions(probs, np.zeros(n), np.zeros(n, np.int32), np.zeros(n, np.int32), ["id"])
    p.save(tmp_path / "scores.npz")
    with np.load(tmp_path / "scores.npz") as data:
        per_example = sum(data[k].nbytes for k in ("probs", "score", "label", "group")) / n
    assert per_example == 4 * c + 16 == 816
