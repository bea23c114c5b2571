"""Training-step time of SNAP-UQ over plain cross-entropy training, side by side.

    python benchmarks/bench_train_step.py [--steps 60] [--rounds 3]

Both methods train the same backbone on the same random batches through Lightning; rounds
alternate (CE, SNAP-UQ, CE, ...) so machine noise hits both alike. Steps are timed in process
CPU time on one thread by default (``--clock wall`` for wall time): this VM's wall clock swings
by tens of percent between identical runs, CPU time far less. Reported per backbone: the
fastest round's median step time of each variant and its ratio to cross-entropy.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import torch
from lightning.pytorch import Callback, Trainer
from torch.utils.data import DataLoader, TensorDataset
from uqbench.methods.snapuq import SNAPUQ

from uqbench.backbones.digits_cnn import digits_cnn
from uqbench.backbones.resnet8 import resnet8
from uqbench.method import BaseClassifier

BACKBONES = {"digits-cnn": (digits_cnn, (1, 28, 28), 10), "resnet8": (resnet8, (3, 32, 32), 10)}


class StepTimer(Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    clock = staticmethod(time.process_time)

    def on_train_batch_start(self, *args: object) -> None:
        self._start = self.clock()

    def on_train_batch_end(self, *args: object) -> None:
        self.times.append(self.clock() - self._start)


def time_steps(module: torch.nn.Module, loader: DataLoader, steps: int) -> float:
    timer = StepTimer()
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(module, train_dataloaders=loader)
    return statistics.median(timer.times[5:])  # skip warm-up steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    if args.clock == "wall":
        StepTimer.clock = staticmethod(time.perf_counter)
    warnings.filterwarnings("ignore")
    print(
        f"torch threads: {torch.get_num_threads()}, {args.clock} clock, batch {args.batch_size}, "
        f"{args.steps} steps x {args.rounds} rounds"
    )
    for name in args.backbones:
        factory, shape, classes = BACKBONES[name]
        x = torch.randn(args.batch_size * args.steps, *shape)
        y = torch.randint(classes, (len(x),))
        loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=True)
        variants = {
            "cross-entropy": lambda f=factory, s=shape, c=classes: BaseClassifier(f(c, s)),
            "snapuq": lambda f=factory, s=shape, c=classes: SNAPUQ(
                f(c, s), rank=64, qat_fraction=0.0
            ),
            "snapuq+qat": lambda f=factory, s=shape, c=classes: SNAPUQ(
                f(c, s), rank=64, qat_fraction=1.0
            ),
            "snapuq+clip1": lambda f=factory, s=shape, c=classes: SNAPUQ(
                f(c, s), rank=64, qat_fraction=0.0, grad_clip=1.0
            ),
        }
        medians: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.rounds):
            for key, build in variants.items():
                torch.manual_seed(0)
                medians[key].append(time_steps(build(), loader, args.steps))
        # The least-disturbed round of each: noise on a shared machine only ever adds time.
        base = min(medians["cross-entropy"])
        print(f"\n{name}")
        for key, values in medians.items():
            step = min(values)
            print(f"  {key:<14} {step * 1e3:7.2f} ms/step   ratio {step / base:5.3f}x")


if __name__ == "__main__":
    main()
