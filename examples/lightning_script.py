"""A uqbench method in a user's own Lightning script: train, calibrate, test, predict.

    python examples/lightning_script.py

``trainer.fit`` trains (here the base classifier a post-hoc method scores);
``calibrate_method`` runs the method's one post-training hook (``UQMethod.calibrate``) and
tunes its hyperparameters on dev, reading the splits through ``DevData``; ``trainer.test`` then
evaluates every set of the datamodule (dev, ID, each corruption and severity, each OOD set),
logs the metrics of ``uqbench fit``'s table as ``test/<metric>`` and keeps them nested in
``method.test_metrics``; ``trainer.predict`` gives per-example logits, probabilities and
scores, one list of batches per set.
"""

from __future__ import annotations

import torch
from lightning.pytorch import Trainer, seed_everything
from uqbench.datamodules.digits import Digits
from uqbench.methods.energy import Energy

from uqbench import BaseClassifier, DevData, calibrate_method
from uqbench.backbones.digits_cnn import digits_cnn


def main() -> dict:
    seed_everything(13, workers=True, verbose=False)
    data = Digits(batch_size=64)
    data.setup("fit")
    trainer = Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    # Energy is post-hoc: it scores a trained classifier and never trains. Train the plain
    # classifier first (what uqbench fit caches as the base model), then build Energy on it.
    base = BaseClassifier(digits_cnn(num_classes=10, input_shape=(1, 28, 28)), lr=3e-3)
    trainer.fit(base, datamodule=data)
    method = Energy(base.backbone)
    calibrate_method(method, DevData(data, method.backbone, method.record_request()))
    trainer.test(method, datamodule=data, verbose=False)
    metrics = method.test_metrics  # as in a run folder's metrics.json
    per_set = trainer.predict(method, datamodule=data)  # one list of batches per set
    scores = torch.cat([batch["score"] for batch in per_set[1]])  # the ID test set
    print(
        f"ID test: {len(scores)} scores; AUROC ID ok vs err {metrics['id_vs_error']['auroc']:.3f}"
    )
    return metrics


if __name__ == "__main__":
    main()
