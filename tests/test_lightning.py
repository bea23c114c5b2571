"""A uqbench method is a complete LightningModule: a user's own script trains it, tests it and
predicts with Lightning's Trainer, and gets what `uqbench fit` computes."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from uqbench.datamodules.digits import Digits
from uqbench.methods.mahalanobis import Mahalanobis

from uqbench import BaseClassifier, DevData, calibrate_method
from uqbench.backbones.digits_cnn import digits_cnn
from uqbench.errors import CalibrationError
from uqbench.stages.evaluate import evaluate

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lightning_script.py"


def _trainer(**options):
    return Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **options,
    )


@pytest.fixture(scope="module")
def fitted():
    seed_everything(13, workers=True, verbose=False)
    data = Digits(batch_size=64)
    data.setup("fit")
    base = BaseClassifier(digits_cnn(num_classes=10, input_shape=(1, 28, 28)), lr=3e-3)
    _trainer(max_epochs=1).fit(base, datamodule=data)
    method = Mahalanobis(base.backbone)
    return method, data


def test_trainer_test_before_calibration_is_refused(fitted):
    method, data = fitted
    uncalibrated = Mahalanobis(method.backbone)  # its class means are not fitted yet
    with pytest.raises(CalibrationError):
        _trainer().test(uncalibrated, datamodule=data, verbose=False)


def test_trainer_test_and_predict_give_the_runners_numbers(fitted):
    method, data = fitted
    calibrate_method(method, DevData(data, method.backbone, method.record_request()))
    results = _trainer().test(method, datamodule=data, verbose=False)
    assert len(results) == len(data.evaluation_names())  # one dict per set, as Lightning gives
    assert results[0]["test/id_vs_error/auroc"] == pytest.approx(
        method.test_metrics["id_vs_error"]["auroc"]
    )
    expected = evaluate([method], data, torch.device("cpu"))[id(method)]
    np.testing.assert_array_equal(method.test_predictions.group, expected.group)
    np.testing.assert_allclose(method.test_predictions.score, expected.score, rtol=1e-6)
    from uqbench.metric_table import compute_metrics, flat_metrics

    assert flat_metrics(method.test_metrics) == pytest.approx(
        flat_metrics(compute_metrics(expected))
    )
    per_set = _trainer().predict(method, datamodule=data)
    assert len(per_set) == len(data.evaluation_names())
    scores = torch.cat([batch["score"] for batch in per_set[1]]).double().numpy()
    id_scores = expected.score[expected.group == expected.group_names.index("id")]
    np.testing.assert_allclose(scores, id_scores, rtol=1e-6)
    assert per_set[1][0]["probs"].shape[1] == 10


@pytest.mark.slow
def test_the_documented_lightning_script_runs(capsys):
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    assert "ID test: 360 scores; AUROC ID ok vs err" in capsys.readouterr().out
