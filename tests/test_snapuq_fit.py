"""SNAP-UQ end to end on digits: every variant, mapping and mode, and its bad inputs."""

import json

import numpy as np
import pytest
import torch
from uqbench.deploy.int8 import fake_quantize_weights

from uqbench.cli import main
from uqbench.predictions import Predictions

FAST = ["method=snapuq", "trainer.max_epochs=2"]


def _fit(capsys, tmp_path, *args, name="run"):
    code = main(["fit", f"out={tmp_path}", f"name={name}", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return tmp_path / name, json.loads((tmp_path / name / "metrics.json").read_text()), out


def test_default_snapuq_fit_meets_the_diagnostic_targets(capsys, tmp_path):
    folder, doc, out = _fit(capsys, tmp_path, "method=snapuq")
    assert doc["method"] == "snapuq"
    diagnostics = doc["tuned"]["diagnostics"]
    for tap in ("mid", "penultimate"):
        assert 0.7 <= diagnostics[tap]["ebar_mean"] <= 1.3  # H.5: e_bar ~ 1 on clean ID
    assert "Dev diagnostics   mid: mean e_bar" in out
    cost = doc["cost"]
    assert cost["forward_passes"] == 1 and cost["extra_macs"] > 0
    assert cost["details"]["fraction_of_backbone_macs"] < 0.02
    m = doc["metrics"]
    assert 0.5 < m["id_vs_error"]["auroc"] <= 1 and 0.5 < m["id_vs_ood"]["mean"]["auroc"] <= 1
    b0, b1, b2 = doc["tuned"]["map_coef"]
    assert all(isinstance(v, float) for v in (b0, b1, b2))
    # The score is U's logit in float64: no saturation, every example keeps its rank.
    from uqbench.predictions import Predictions

    scores = Predictions.load(folder / "scores.npz").score
    saturated = (torch.sigmoid(torch.from_numpy(scores).float()) == 1.0).numpy()
    assert saturated.sum() > 10  # U in float32 would tie all of these at exactly 1.0 ...
    assert len(set(scores[saturated].tolist())) == saturated.sum()  # ... their logits do not
    # `uqbench test` reloads the checkpoint and agrees; the fit's record stays.
    assert main(["test", f"run={folder}"]) == 0
    capsys.readouterr()
    (tested_file,) = folder.glob("test-*.json")
    tested = json.loads(tested_file.read_text())
    assert tested["metrics"] == m
    assert json.loads((folder / "metrics.json").read_text()) == doc


@pytest.mark.slow
@pytest.mark.parametrize(
    "variant_args",
    [
        ["method.variant=gaussian"],
        ["method.variant=student_t", "method.nu=3"],
        ["method.variant=huber", "method.delta=0.5"],
        ["method.variant=lowrank", "method.lowrank_k=4"],
        ["method.variant=mixture", "method.mixture_k=3"],
    ],
)
def test_every_variant_fits_end_to_end(capsys, tmp_path, variant_args):
    _, doc, _ = _fit(capsys, tmp_path, *FAST, *variant_args)
    assert 0 <= doc["metrics"]["id_vs_error"]["auroc"] <= 1
    assert doc["cost"]["extra_params"] > 0


def test_isotonic_mapping_survives_a_checkpoint_round_trip(capsys, tmp_path):
    folder, doc, _ = _fit(capsys, tmp_path, *FAST, "method.mapping=isotonic")
    assert doc["tuned"]["gamma"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert doc["tuned"]["isotonic_steps"] >= 1
    assert main(["test", f"run={folder}"]) == 0
    capsys.readouterr()
    assert json.loads((folder / "metrics.json").read_text())["metrics"] == doc["metrics"]


def test_label_free_and_unmapped_scores(capsys, tmp_path):
    folder, doc, _ = _fit(capsys, tmp_path, *FAST, "method.label_free=true", name="a")
    assert doc["tuned"]["map_coef"][2] == 0.0
    # The recorded variant scores: each part through its own map on the same dev mix. The
    # label-free score is the surprisal's map, so it equals the `surprisal` variant.
    p = Predictions.load(folder / "scores.npz")
    assert list(p.variants) == ["surprisal", "confidence", "tap_mid", "tap_penultimate"]
    np.testing.assert_allclose(p.score, p.variants["surprisal"], rtol=1e-12)
    assert not np.allclose(p.variants["confidence"], p.variants["surprisal"])
    folder, doc, _ = _fit(capsys, tmp_path, *FAST, "method.mapping=none", name="b")
    assert "map_coef" not in doc["tuned"]
    assert Predictions.load(folder / "scores.npz").variants == {}  # nothing fitted, no variant


def test_posthoc_mode_trains_heads_on_the_frozen_cached_base(capsys, tmp_path):
    import uqbench.stages.base_model as cache

    _, doc, out = _fit(capsys, tmp_path, *FAST, "method.posthoc=true", name="a")
    key = doc["training"]["base_key"]
    state = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["state_dict"]
    expected = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    base = cache.load_base(key, expected)
    for name, value in base.items():
        torch.testing.assert_close(state[f"backbone.{name}"], value)  # untouched by head training
    assert "base model: trained and cached" in out
    # msp with the same training config reuses that very base model.
    _, msp, _ = _fit(capsys, tmp_path, "method=msp", "trainer.max_epochs=2", name="b")
    assert msp["training"]["base_key"] == key and msp["training"]["base_reused"]


def test_qat_rounds_heads_to_int8_and_inverse_variance_weights(capsys, tmp_path):
    folder, doc, _ = _fit(
        capsys,
        tmp_path,
        "method=snapuq",
        "trainer.max_epochs=3",
        "method.qat_fraction=0.5",
        "method.tap_weighting=inverse_variance",
        "method.adaptive_lambda=true",
    )
    state = torch.load(folder / "checkpoint.pt", weights_only=True)["state_dict"]
    assert state["heads.mid.fake_quant"].item() is True
    # What QAT trained through is what the deploy stage exports: the same int8 weights.
    from uqbench.stages.rebuild import load_run

    _, method, _, _ = load_run(folder)
    export = method.device_export()
    head = method.heads["mid"]
    trained = fake_quantize_weights(head.project.weight).detach().numpy()
    exported = export.fitted["project_q_0"] * export.fitted["project_scale_0"][:, None]
    np.testing.assert_array_equal(trained, exported.astype(np.float32))
    weights = doc["tuned"]["tap_weights"]
    assert sum(weights.values()) == pytest.approx(1.0) and weights["mid"] != 0.5
    assert 1e-4 <= doc["tuned"]["lambda_ss_final"] <= 1e-2


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["method.taps=[mid,nope]"],
            "tap 'nope' does not exist on DigitsCNN; its taps are stem, mid, penultimate",
        ),
        (["method.taps=[stem]"], "tap 'stem' is the first tap"),
        (["method.rank=5000"], "method.rank=5000 is invalid for tap 'mid'"),
        (["method.variant=student_t", "method.nu=0"], "method.nu must be > 0"),
        (["method.variant=huber", "method.delta=-1"], "method.delta must be > 0"),
        (["method.mapping=platt"], "method.mapping: expected one of logistic, isotonic, none"),
    ],
)
def test_bad_snapuq_options(capsys, tmp_path, args, message):
    assert main(["fit", f"out={tmp_path}", *FAST, *args]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_single_class_dev_mix_is_a_clear_error(capsys, tmp_path, monkeypatch):
    from uqbench.methods.snapuq import SNAPUQ

    original = SNAPUQ._collect

    def all_correct(self, loader):
        parts = original(self, loader)
        return parts | {"errors": torch.zeros_like(parts["errors"])}

    monkeypatch.setattr(SNAPUQ, "_collect", all_correct)
    assert main(["fit", f"out={tmp_path}", *FAST]) == 2
    err = capsys.readouterr().err
    assert "single class" in err and "method.mapping=none" in err


def test_nan_surprisal_stops_with_the_tap_and_step_named(capsys, tmp_path, monkeypatch):
    from uqbench.methods.snap_heads import Surprisal, SurprisalHead

    original = SurprisalHead.forward

    def nan_head(self, previous, target):
        out = original(self, previous, target)
        return Surprisal(out.nll * float("nan"), out.e, out.logvar)

    monkeypatch.setattr(SurprisalHead, "forward", nan_head)
    assert main(["fit", f"out={tmp_path}", *FAST]) == 2
    assert "non-finite surprisal at tap 'mid', epoch 0, step 0" in capsys.readouterr().err
