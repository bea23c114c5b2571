"""Baselines end to end on digits: the post-hoc group shares one base, each trained method fits."""

import json

import pytest
import torch

from uqbench.cli import main
from uqbench.metric_table import lookup
from uqbench.stages.base_model import cache_root

FAST = ["trainer.max_epochs=2"]
POSTHOC = ["msp", "entropy", "temperature", "energy", "mahalanobis", "react", "ash"]


def test_posthoc_group_shares_one_base_and_tests_back_identically(capsys, tmp_path):
    code = main(["fit", f"method=[{','.join(POSTHOC)}]", f"out={tmp_path}", "name=g", *FAST])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "one recorded pass per split" in out
    keys = set()
    for method in POSTHOC:
        folder = tmp_path / f"g-{method}"
        doc = json.loads((folder / "metrics.json").read_text())
        assert doc["method"] == method and doc["group"] == POSTHOC
        keys.add(doc["training"]["base_key"])
        assert 0 <= doc["metrics"]["id_vs_error"]["auroc"] <= 1
        # `uqbench test` scores with the method's own forward passes: same metrics as the record.
        assert main(["test", f"run={folder}"]) == 0
        capsys.readouterr()
        (tested,) = folder.glob("test-*.json")
        again = json.loads(tested.read_text())["metrics"]
        for task in ("id_vs_error", "id_vs_ood/photos", "id_vs_ood/mean"):
            assert lookup(again, f"{task}/auroc") == pytest.approx(
                lookup(doc["metrics"], f"{task}/auroc"), abs=1e-6
            )
    assert len(keys) == 1
    temperature = json.loads((tmp_path / "g-temperature" / "metrics.json").read_text())
    assert temperature["tuned"]["temperature"] > 0
    energy = json.loads((tmp_path / "g-energy" / "metrics.json").read_text())
    assert energy["tuned"]["temperature"] in (0.5, 1.0, 1.5, 2.0)
    # Every candidate of the grid is recorded with its dev objective, not only the winner.
    tuning = energy["tuning"]
    assert [c["params"]["temperature"] for c in tuning["candidates"]] == [0.5, 1.0, 1.5, 2.0]
    best = max(c["value"] for c in tuning["candidates"])
    assert tuning["chosen"]["temperature"] == energy["tuned"]["temperature"]
    chosen = next(c for c in tuning["candidates"] if c["params"] == tuning["chosen"])
    assert chosen["value"] == best and tuning["searched"] == ["temperature"]
    # Which splits each method read: the leaderboards say who saw shifted (dev_mix) data.
    assert json.loads((tmp_path / "g-msp" / "metrics.json").read_text())["fitted_on"] == []
    assert temperature["fitted_on"] == ["dev"]
    assert energy["fitted_on"] == ["dev_mix"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["method=odin", "method.temperatures=[1,1000]", "method.epsilons=[0,0.0014]"],
        ["method=evidential"],
        ["method=mc_dropout", "method.samples=5"],
        ["method=deep_ensemble", "method.members=3"],
        ["method=early_exit"],
    ],
)
def test_each_other_baseline_fits(capsys, tmp_path, args):
    assert main(["fit", f"out={tmp_path}", "name=r", *FAST, *args]) == 0, capsys.readouterr().err
    doc = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert 0 <= doc["metrics"]["id_vs_error"]["auroc"] <= 1
    assert doc["cost"]["forward_passes"] >= 1


@pytest.mark.slow
@pytest.mark.parametrize(
    "method",
    [["method=deep_ensemble", "method.members=2"], ["method=snapuq", "method.posthoc=true"]],
    ids=["deep_ensemble", "snapuq-posthoc"],
)
def test_a_method_on_the_base_gives_the_same_numbers_with_it_cached_or_not(
    capsys, tmp_path, method
):
    """Training the base in the run leaves the random generators as loading it does, so what
    the method then draws (its data order, its initial weights) does not depend on the cache."""
    for name in ("trained_here", "loaded"):
        code = main(["fit", f"out={tmp_path}", f"name={name}", *FAST, *method])
        assert code == 0, capsys.readouterr().err
    first, second = (
        json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("trained_here", "loaded")
    )
    assert not first["training"]["base_reused"] and second["training"]["base_reused"]
    assert first["metrics"] == second["metrics"]
    if "method=deep_ensemble" in method:  # member 0 is the cached base itself
        (cached,) = (cache_root() / "base").glob("*.pt")
        base = torch.load(cached, weights_only=True)
        run = torch.load(tmp_path / "loaded" / "checkpoint.pt", weights_only=True)["state_dict"]
        assert all(torch.equal(run[f"members.0.{k}"], v) for k, v in base.items())


def test_group_with_a_training_method_and_missing_base_are_clear_errors(capsys, tmp_path):
    assert main(["fit", "method=[msp,snapuq]", f"out={tmp_path}", *FAST]) == 2
    assert "cannot join a group of post-hoc methods" in capsys.readouterr().err
    assert main(["fit", "method=[msp,odin]", f"out={tmp_path}", *FAST]) == 2
    assert "does not score from the shared base model" in capsys.readouterr().err
    assert main(["fit", "method=[msp,msp]", f"out={tmp_path}", *FAST]) == 2
    assert "lists a method twice" in capsys.readouterr().err
    assert main(["fit", "method=energy", "train_base=false", f"out={tmp_path}", *FAST]) == 2
    assert "no usable cached base model" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "methods",
    [
        POSTHOC,
        ["odin"],
        ["mc_dropout"],
        ["deep_ensemble", "method.trained=2"],
        ["early_exit"],
        ["evidential"],
        ["snapuq"],
    ],
    ids=lambda methods: methods[0] if len(methods) <= 2 else "posthoc",
)
def test_no_number_depends_on_the_cpu_slices(capsys, tmp_path, monkeypatch, methods):
    """An evaluation batch runs through the backbone in slices on the CPU, for speed: every
    score, metric and tuned value equals the one computed on whole batches, as before slices
    existed, and with slices of 7 (each split cut differently, a last slice shorter)."""
    import numpy as np

    from uqbench.backbones.digits_cnn import DigitsCNN

    method, *options = methods
    names = methods if len(methods) > 2 else [method]
    selector = f"method=[{','.join(names)}]" if len(names) > 1 else f"method={method}"
    documents = {}
    for size in (None, 64, 7):
        monkeypatch.setattr(DigitsCNN, "cpu_eval_slice", size)
        args = [selector, *(options if len(names) == 1 else []), f"out={tmp_path}"]
        assert main(["fit", *args, f"name=s{size}", *FAST]) == 0, capsys.readouterr().err
        capsys.readouterr()
        for name in names:
            folder = tmp_path / (f"s{size}-{name}" if len(names) > 1 else f"s{size}")
            scores = dict(np.load(folder / "scores.npz"))
            metrics = json.loads((folder / "metrics.json").read_text())
            documents.setdefault(name, []).append((scores, metrics["metrics"], metrics["tuned"]))
    for name, (whole, *sliced) in documents.items():
        for other in sliced:
            assert whole[0].keys() == other[0].keys()
            for key in whole[0]:
                np.testing.assert_array_equal(whole[0][key], other[0][key], err_msg=f"{name} {key}")
            assert whole[1] == other[1] and whole[2] == other[2], name
