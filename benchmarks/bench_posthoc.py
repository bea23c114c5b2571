"""Seven post-hoc methods from one recorded pass versus `msp` alone, side by side.

    python benchmarks/bench_posthoc.py [--rounds 5]

One base classifier (digits-cnn, trained briefly on digits) is shared. Each round times the full
post-hoc evaluation (records of train/dev/dev-mix as needed, fitting, and every evaluation set)
for `msp` alone and for the group msp, entropy, temperature, energy, mahalanobis, react, ash.
Reported: the fastest round of each and the ratio. Target: at most 1.5x.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import torch
from lightning.pytorch import Trainer
from uqbench.datamodules.digits import Digits
from uqbench.methods.ash import ASH
from uqbench.methods.energy import Energy
from uqbench.methods.entropy import Entropy
from uqbench.methods.mahalanobis import Mahalanobis
from uqbench.methods.msp import MSP
from uqbench.methods.react import ReAct
from uqbench.methods.temperature import Temperature

from uqbench.backbones.digits_cnn import digits_cnn
from uqbench.dev_data import DevData
from uqbench.method import BaseClassifier
from uqbench.recorded_pass import TapRequest
from uqbench.stages.calibrate import calibrate_method
from uqbench.stages.evaluate import evaluate

GROUP = (MSP, Entropy, Temperature, Energy, Mahalanobis, ReAct, ASH)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.manual_seed(13)
    datamodule = Digits()
    datamodule.setup()
    backbone = digits_cnn(10, (1, 28, 28))
    Trainer(
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(BaseClassifier(backbone), datamodule=datamodule)
    timings: dict[str, list[float]] = {"msp alone": [], "seven post-hoc methods": []}
    for _ in range(args.rounds):
        for label, classes in (("msp alone", (MSP,)), ("seven post-hoc methods", GROUP)):
            methods = [cls(backbone) for cls in classes]
            start = time.perf_counter()
            data = DevData(datamodule, backbone, TapRequest.of(methods))
            for method in methods:
                calibrate_method(method, data)
            evaluate(methods, datamodule, torch.device("cpu"))
            timings[label].append(time.perf_counter() - start)
    base = min(timings["msp alone"])
    for label, values in timings.items():
        print(f"{label:<24} {min(values):6.2f} s   ratio {min(values) / base:5.2f}x")


if __name__ == "__main__":
    main()
