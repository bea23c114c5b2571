"""End to end: `uqbench fit` on digits writes a complete run folder, atomically."""

import json

import numpy as np
import pytest
import torch

from uqbench.cli import main
from uqbench.metric_table import compute_metrics
from uqbench.predictions import Predictions
from uqbench.run_folder import json_safe

FAST = ["method=msp", "trainer.max_epochs=3", "seed=13"]


def _fit(capsys, tmp_path, *args, name="run"):
    code = main(["fit", f"out={tmp_path}", f"name={name}", *FAST, *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return tmp_path / name, out


def test_fit_writes_a_complete_run_folder_and_prints_the_report(capsys, tmp_path):
    folder, out = _fit(capsys, tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == [
        "checkpoint.pt",
        "config.json",
        "logs",
        "metrics.json",
        "scores.npz",
    ]
    assert not (tmp_path / "run.partial").exists()
    for heading in ("Accuracy", "id_vs_error", "id_vs_ood/photos", "aurc", "ece", "s5"):
        assert heading in out

    document = json.loads((folder / "metrics.json").read_text())
    assert document["schema_version"] == 2
    m = document["metrics"]
    assert m["counts"] == {**m["counts"], "id": 360, "cid": 40 * 360, "ood": {"photos": 360}}
    assert 0.5 < m["accuracy"]["id"] <= 1.0
    for task in (m["id_vs_error"], m["id_vs_error_cid_mean"], m["id_vs_ood"]["photos"]):
        assert 0.0 <= task["auroc"] <= 1.0 and 0.0 <= task["auprc"] <= 1.0
    assert m["id_vs_ood"]["mean"] == m["id_vs_ood"]["photos"]  # one OOD set: its own mean
    assert 0 <= m["selective"]["id"]["aurc"] <= 1 and 0 <= m["calibration"]["ece"] <= 1
    assert m["accuracy"]["cid"]["5"] < m["accuracy"]["id"]
    assert document["cost"]["forward_passes"] == 1

    # The per-example record recomputes every metric exactly.
    record = Predictions.load(folder / "scores.npz")
    assert json_safe(compute_metrics(record)) == m
    assert record.probs.shape == (144 + 360 * 42, 10)  # dev, ID, 40 CID sets, OOD
    np.testing.assert_allclose(record.probs.sum(1), 1, atol=1e-5)

    config = json.loads((folder / "config.json").read_text())
    assert config["method_args"]["lr"] == 3e-3 and config["trainer_args"]["max_epochs"] == 3
    from uqbench.stages.resolve import default_threads

    assert config["run"] == {
        "accelerator": "auto",
        "device": "cpu",
        "threads": default_threads(),
        "data_files": {},
    }  # digits ships with scikit-learn: no data files to vouch for
    state = torch.load(folder / "checkpoint.pt", weights_only=True)["state_dict"]
    assert any(k.startswith("backbone.") for k in state)
    assert (folder / "logs" / "metrics.csv").is_file()


def test_posthoc_reuses_the_cached_base_and_test_reproduces_metrics(capsys, tmp_path):
    first, _ = _fit(capsys, tmp_path, name="a")
    second, out = _fit(capsys, tmp_path, name="b")
    a = json.loads((first / "metrics.json").read_text())
    b = json.loads((second / "metrics.json").read_text())
    assert a["training"]["base_reused"] is False and b["training"]["base_reused"] is True
    assert "reused from cache" in out
    assert a["metrics"] == b["metrics"]
    # A different training seed is a different base model.
    third, _ = _fit(capsys, tmp_path, "seed=17", name="c")
    assert json.loads((third / "metrics.json").read_text())["training"]["base_reused"] is False

    assert main(["test", f"run={first}"]) == 0
    out = capsys.readouterr().out
    assert "id_vs_error" in out
    assert "trained and cached" not in out and "loaded from the run's checkpoint.pt" in out
    assert "compared with the fit's metrics.json: all" in out and "metrics agree" in out
    # The fit's record stays as it was; the test's results lie beside it.
    assert json.loads((first / "metrics.json").read_text()) == a
    (tested,) = first.glob("test-*.json")
    assert json.loads(tested.read_text())["metrics"] == a["metrics"]


def test_a_run_that_fails_midway_leaves_no_result(capsys, tmp_path, monkeypatch):
    import uqbench.runner

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(uqbench.runner, "evaluate", boom)
    assert main(["fit", f"out={tmp_path}", "name=x", *FAST]) == 130  # Ctrl-C: said, exit 130
    assert "interrupted; nothing was written" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_wandb_logger_offline(capsys, tmp_path, monkeypatch):
    """The run folder's files as a versioned artifact, the per-set metrics as a table, the
    method, data and seed as tags, a bench's group."""
    monkeypatch.setenv("WANDB_RUN_GROUP", "bench-x")
    folder, _ = _fit(capsys, tmp_path, "logger=wandb", name="w")
    assert (folder / "wandb").is_dir()
    (offline,) = (folder / "wandb").glob("offline-run-*")
    (table,) = (offline / "files" / "media" / "table" / "final").glob("per_set_*.table.json")
    rows = json.loads(table.read_text())
    metrics = json.loads((folder / "metrics.json").read_text())["metrics"]
    assert rows["columns"] == ["set", "accuracy", "auroc_id_vs_error", "auroc_id_vs_ood"]
    assert rows["data"][0] == [
        "id",
        metrics["accuracy"]["id"],
        metrics["id_vs_error"]["auroc"],
        None,
    ]
    assert rows["data"][-1][0] == "ood photos"
    record = next(offline.glob("run-*.wandb")).read_bytes()
    assert b"uqbench-run" in record and b"run-w" in record  # the artifact, by its name
    for name in (b"metrics.json", b"scores.npz", b"config.json", b"checkpoint.pt"):
        assert name in record
    assert b"seed-13" in record and b"bench-x" in record
    assert (folder / "metrics.json").is_file()
    assert not list(tmp_path.glob("*.partial"))
    link = folder / "wandb" / "latest-run"
    assert not link.is_symlink() or link.resolve().is_dir()  # still valid after the rename


def test_several_loggers_at_once_write_inside_the_final_run_folder(capsys, tmp_path):
    """csv, TensorBoard, W&B (offline) and MLflow's file store together: each writes in the run
    folder, and what they record or print names the final folder, not the partial one."""
    code = main(
        ["fit", f"out={tmp_path}", "name=l", *FAST, "logger=[csv,tensorboard,wandb,mlflow]"]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    folder = tmp_path / "l"
    assert (folder / "logs" / "metrics.csv").is_file()
    assert list((folder / "tensorboard").glob("events.out.tfevents.*"))
    (offline,) = (folder / "wandb").glob("offline-run-*")
    assert f"upload it with `wandb sync {offline}`" in err and ".partial" not in err
    metas = list((folder / "mlruns").rglob("meta.yaml"))
    assert metas and all(".partial" not in m.read_text() for m in metas)
    (auroc,) = (folder / "mlruns").rglob("metrics/final/id_vs_error/auroc")
    logged = float(auroc.read_text().split()[1])
    document = json.loads((folder / "metrics.json").read_text())
    assert logged == pytest.approx(document["metrics"]["id_vs_error"]["auroc"])


@pytest.mark.slow
def test_a_group_logs_every_method_as_its_own_wandb_run(capsys, tmp_path):
    from test_sweeps import _logged_keys

    code = main(
        ["fit", f"out={tmp_path}", "method=msp,energy", "trainer.max_epochs=1", "logger=wandb"]
    )
    assert code == 0, capsys.readouterr().err
    folders = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert [f.name.split("-")[0] for f in folders] == ["energy", "msp"]
    for folder in folders:
        (run_file,) = (folder / "wandb").glob("offline-run-*/run-*.wandb")
        assert "final/id_vs_error/auroc" in _logged_keys(run_file)


def test_trainer_callbacks_by_import_path_with_arguments(capsys, tmp_path):
    """EarlyStopping (by bare name, with arguments) stops training after the first epoch; a
    LearningRateMonitor (by full path) logs the learning rates into the CSV log."""
    import csv

    stop = {
        "class_path": "EarlyStopping",
        "init_args": {
            "monitor": "provisional/dev/accuracy",
            "mode": "max",
            "stopping_threshold": 0,
        },
    }
    spec = json.dumps([stop, "lightning.pytorch.callbacks.LearningRateMonitor"])
    code = main(
        [
            "fit",
            f"out={tmp_path}",
            "name=c",
            "method=snapuq",
            "trainer.max_epochs=6",
            f"trainer.callbacks={spec}",
        ]
    )
    assert code == 0, capsys.readouterr().err
    rows = list(csv.DictReader((tmp_path / "c" / "logs" / "metrics.csv").open()))
    assert {r["epoch"] for r in rows} - {""} == {"0"}  # stopped after one of six epochs
    assert any(key.startswith("lr-Adam") for key in rows[0])
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    assert config["trainer_args"]["callbacks"][0] == stop  # the specs, recorded as given


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[nope.Nothing]", "cannot import 'nope.Nothing'"),
        ("[EarlyStopping]", "EarlyStopping({}) failed: TypeError"),
        ("[torch.nn.Linear]", "is not a Lightning Callback"),
        ('[{"class_path": "EarlyStopping", "args": {}}]', "class_path and init_args"),
        ('[{"class_path": ', "not valid JSON"),
    ],
)
def test_bad_callbacks_are_refused_before_training(tmp_path, capsys, value, message):
    assert main(["fit", f"out={tmp_path}", f"trainer.callbacks={value}"]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_comparing_a_test_with_its_fit_names_what_differs():
    from uqbench.runner import compare_with_fit

    fitted = {"id_vs_error": {"auroc": 0.9, "auprc": 0.5}, "ece": 0.1}
    same = compare_with_fit(fitted, json.loads(json.dumps(fitted)))
    assert same == {"metrics": 3, "max_abs_difference": 0.0, "agree": True, "differing": []}
    moved = compare_with_fit(fitted, {"id_vs_error": {"auroc": 0.8, "auprc": 0.5}, "nll": 1.0})
    assert not moved["agree"] and moved["max_abs_difference"] == pytest.approx(0.1)
    assert moved["differing"] == ["id_vs_error/auroc", "ece", "nll"]
