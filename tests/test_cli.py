"""The command line: every bad input gets a clear message, exit status 2, and writes nothing."""

import subprocess
import sys

import pytest

from uqbench.cli import main

FAST = ["method=msp", "trainer.max_epochs=1", "trainer.limit_train_batches=2"]


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["method=mps"],
            "unknown method 'mps'. Did you mean 'msp'? Valid method names: ash, deep_ensemble,",
        ),
        (["data=digts"], "unknown data 'digts'. Did you mean 'digits'?"),
        (["backbone=resnet9"], "unknown backbone 'resnet9'. Did you mean 'resnet8'?"),
        (["method.lr"], "malformed override 'method.lr': expected key=value"),
        (["epochs=3"], "unknown key 'epochs'"),
        (
            ["method=msp", "method.lrr=0.1"],
            "unknown key method.lrr for MSP. Did you mean method.lr?",
        ),
        (["method.lr=fast"], "method.lr: expected float, got 'fast'"),
        (
            ["trainer.max_epoch=3"],
            "unknown key trainer.max_epoch for Trainer. Did you mean trainer.max_epochs?",
        ),
        (["trainer.max_epochs=ten"], "trainer.max_epochs: expected Optional[int], got 'ten'"),
        (["data.batch_size=1.5"], "data.batch_size: expected int, got '1.5'"),
        (["method.lr=-1"], "method.lr must be > 0"),
        (["trainer.logger=false"], "trainer.logger is set by uqbench itself"),
    ],
)
def test_bad_fit_input_exits_2_with_a_clear_message(capsys, tmp_path, args, message):
    code, out, err = run(capsys, "fit", f"out={tmp_path}", *args)
    assert code == 2
    assert message in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_non_writable_output_folder(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, err = run(capsys, "fit", f"out={blocker}/runs", *FAST)
    assert code == 2 and f"{blocker} is a file, not a folder; choose a folder" in err


def test_missing_run_and_missing_checkpoint(capsys, tmp_path):
    code, _, err = run(capsys, "test", f"run={tmp_path / 'nope'}")
    assert code == 2 and "is not a run folder" in err
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.json").write_text("{}")
    code, _, err = run(capsys, "test", f"run={tmp_path / 'r'}")
    assert code == 2 and "checkpoint missing" in err
    code, _, err = run(capsys, "test")
    assert code == 2 and "uqbench test run=runs/<name>" in err


def test_nan_loss_stops_with_epoch_and_step_and_writes_nothing(capsys, tmp_path, monkeypatch):
    import torch

    from uqbench.method import UQMethod

    monkeypatch.setattr(UQMethod, "classification_loss", lambda self, z, y: z.sum() * torch.nan)
    code, _, err = run(capsys, "fit", f"out={tmp_path}", *FAST)
    assert code == 2
    assert "non-finite training loss (nan) at epoch 0, step 0" in err
    assert list(tmp_path.iterdir()) == []


def test_help_and_list_run_as_commands():
    for args in (["--help"], ["fit", "--help"]):
        done = subprocess.run(
            [sys.executable, "-m", "uqbench", *args], capture_output=True, text=True, check=True
        )
        assert "uqbench" in done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "uqbench", "fit", "--help"], capture_output=True, text=True
    )
    assert "method.KEY=VALUE" in done.stdout and "trainer.max_epochs=30" in done.stdout
    done = subprocess.run([sys.executable, "-m", "uqbench", "list"], capture_output=True, text=True)
    assert done.returncode == 0
    assert "msp" in done.stdout and "digits" in done.stdout and "resnet8" in done.stdout


def test_print_config_round_trips_through_config_and_the_command_line_wins(tmp_path, capsys):
    assert main(["fit", "--print-config", "method=msp", "trainer.max_epochs=2"]) == 0
    first = capsys.readouterr().out
    assert "method_args:\n  lr: 0.003\n" in first  # defaults filled in (the digits recipe)
    assert "trainer_args:\n  max_epochs: 2\n" in first
    (tmp_path / "run.yaml").write_text(first)
    assert main(["fit", "--config", str(tmp_path / "run.yaml"), "--print-config"]) == 0
    assert capsys.readouterr().out == first  # read back unchanged
    assert main(["fit", f"--config={tmp_path / 'run.yaml'}", "seed=7", "--print-config"]) == 0
    assert "\nseed: 7\n" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("method: [msp\n", "not valid YAML or JSON"),
        ("- msp\n", "a config file is a mapping of keys"),
        ("method_args:\n  nope: 1\n", "unknown key method.nope for SNAPUQ"),
        ("trainer_args:\n  max_epochs: .inf\n", "not a finite number"),
    ],
)
def test_a_bad_config_file_is_refused_with_exit_2(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["fit", "--config", str(path), "--print-config"]) == 2
    assert message in capsys.readouterr().err
    assert main(["fit", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read it" in capsys.readouterr().err


def test_config_files_serve_other_subcommands(tmp_path, capsys):
    path = tmp_path / "deploy.yaml"
    path.write_text(f"run: {tmp_path / 'missing'}\nboard: small-mcu\nboard_args:\n  ram_kb: x\n")
    assert main(["deploy", "--config", str(path)]) == 2
    assert "board.ram_kb: expected int, got 'x'" in capsys.readouterr().err
    assert main(["deploy", "--config", str(path), "--print-config"]) == 2
    assert "--print-config prints fit's resolved configuration" in capsys.readouterr().err


def test_a_plugins_help_lists_its_keys_with_types_defaults_and_docs(capsys):
    assert main(["fit", "method=snapuq", "--help"]) == 0
    out = capsys.readouterr().out
    assert "method.rank  (int, default 64)" in out
    assert "method.mapping  (one of logistic|isotonic|none, default 'logistic')" in out
    assert "ramp_epochs" in out.split("method.ramp_epochs")[1].splitlines()[1]  # its doc line
    assert main(["fit", "method=[msp,ash]", "backbone=digits-cnn", "--help"]) == 0
    out = capsys.readouterr().out
    assert "method.percentile  (float, default 90.0)" in out
    assert "backbone.width  (int, default 16)" in out and "method=msp:" in out
    assert main(["deploy", "board=small-mcu", "--help"]) == 0
    assert "board.ram_kb  (int, default 64)" in capsys.readouterr().out
    assert main(["fit", "method=nope", "--help"]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err


def test_print_config_round_trips_callbacks_with_arguments(tmp_path, capsys):
    spec = '[{"class_path": "EarlyStopping", "init_args": {"monitor": "train/loss"}}]'
    assert main(["fit", "--print-config", "method=msp", f"trainer.callbacks={spec}"]) == 0
    first = capsys.readouterr().out
    assert "class_path: EarlyStopping" in first and "monitor: train/loss" in first
    (tmp_path / "run.yaml").write_text(first)
    assert main(["fit", "--config", str(tmp_path / "run.yaml"), "--print-config"]) == 0
    assert capsys.readouterr().out == first
