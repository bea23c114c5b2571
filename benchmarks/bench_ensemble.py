"""Training time of `deep_ensemble` with M = 5 versus one member, side by side.

    python benchmarks/bench_ensemble.py [--epochs 3] [--rounds 3]

Both train digits-cnn on digits for the same epochs through Lightning (validation off); rounds
alternate. The ensemble's own training is its members 1..M-1 (member 0 is the base classifier,
trained once by the base stage). Reported: the fastest round of each and the ratio. Target: at
most 1.1 x (M - 1), 4.4x for M = 5.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import torch
from lightning.pytorch import Trainer
from uqbench.datamodules.digits import Digits
from uqbench.methods.deep_ensemble import DeepEnsemble

from uqbench.backbones.digits_cnn import digits_cnn
from uqbench.method import BaseClassifier


def train_seconds(module: torch.nn.Module, datamodule: Digits, epochs: int) -> float:
    trainer = Trainer(
        max_epochs=epochs,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--members", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    datamodule = Digits()
    datamodule.setup()
    timings: dict[str, list[float]] = {"one member": [], f"deep_ensemble M={args.members}": []}
    for _ in range(args.rounds):
        torch.manual_seed(0)
        timings["one member"].append(
            train_seconds(BaseClassifier(digits_cnn(10, (1, 28, 28))), datamodule, args.epochs)
        )
        torch.manual_seed(0)
        ensemble = DeepEnsemble(digits_cnn(10, (1, 28, 28)), members=args.members)
        timings[f"deep_ensemble M={args.members}"].append(
            train_seconds(ensemble, datamodule, args.epochs)
        )
    base = min(timings["one member"])
    for label, values in timings.items():
        print(f"{label:<20} {min(values):6.2f} s   ratio {min(values) / base:5.2f}x")


if __name__ == "__main__":
    main()
