"""An interrupted training resumes from its checkpoints and reaches the result of an
uninterrupted run with the same seed; what it keeps looks like no result."""

from __future__ import annotations

import json

import pytest
import torch

from uqbench.cli import main

OPTIONS = ["method=snapuq", "trainer.max_epochs=3", "seed=13"]


def _interrupt_at(monkeypatch, epoch: int) -> None:
    """Ctrl-C at the start of ``epoch`` (the checkpoints of the epochs before are saved)."""
    from uqbench.methods.snapuq import SNAPUQ

    real = SNAPUQ.on_train_epoch_start

    def interrupted(self):
        if self.current_epoch == epoch:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(SNAPUQ, "on_train_epoch_start", interrupted)


def test_an_interrupted_training_resumes_to_the_uninterrupted_result(tmp_path, capsys, monkeypatch):
    assert main(["fit", *OPTIONS, f"out={tmp_path}", "name=whole"]) == 0
    capsys.readouterr()
    with monkeypatch.context() as patch:
        _interrupt_at(patch, 2)
        assert main(["fit", *OPTIONS, f"out={tmp_path}", "name=cut"]) == 130
    err = capsys.readouterr().err
    assert "continue with the same command and resume=cut" in err
    assert not (tmp_path / "cut").exists() and not list(tmp_path.glob("cut*"))  # no result
    assert (tmp_path / ".resume" / "cut" / "method" / "last.ckpt").is_file()
    # Another configuration is refused; the same one continues from epoch 2.
    assert main(["fit", *OPTIONS, "method.rank=16", f"out={tmp_path}", "resume=cut"]) == 2
    assert "differs from the interrupted run's in method_args" in capsys.readouterr().err
    assert main(["fit", *OPTIONS, f"out={tmp_path}", "resume=cut"]) == 0
    capsys.readouterr()
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    resumed = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert resumed["metrics"] == whole["metrics"]
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for key in a:  # bit for bit (NaN where both have NaN: an unset running ratio)
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, equal_nan=True, msg=key)
    assert not (tmp_path / ".resume").exists()  # removed once the run completed


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["resume=nothing"], "resume=nothing: no interrupted run of that name"),
        (["resume=a", "name=b"], "a resumed run keeps the interrupted run's name"),
        (["resume=../x"], "is not a folder name"),
    ],
)
def test_a_resume_without_its_checkpoints_is_refused(tmp_path, capsys, options, message):
    assert main(["fit", *OPTIONS, f"out={tmp_path}", *options]) == 2
    assert message in capsys.readouterr().err
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
