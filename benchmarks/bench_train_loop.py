"""Training throughput of uqbench's loop against a plain PyTorch loop, side by side.

    python benchmarks/bench_train_loop.py [--images 4096] [--epochs 2] [--rounds 3] [--threads 1]
                                          [--device cpu|cuda]

Both train ResNet-8 on the same CIFAR-10-shaped synthetic tensors (normalized 3x32x32, random
labels) with the cifar10c recipe: SGD momentum 0.9, lr 0.2, weight decay 5e-4, label smoothing
0.1, gradient clipping at norm 1.0, batch 128, and the same augmentation on the batch (random
crop with 4-pixel padding, flip, colour jitter; ``uqbench.datamodules.augment``). uqbench's side
is a ``BaseClassifier`` under Lightning's Trainer with the datamodule's ``on_after_batch_transfer``
augmentation (what ``uqbench fit method=msp data=cifar10c`` trains); the plain side is a
hand-written loop. Rounds alternate (uqbench, plain, uqbench, ...) so machine noise hits both;
reported: images per second of each side's fastest round and the time ratio. Target <= 1.10x.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, TensorDataset
from uqbench.datamodules.cifar10c import CIFAR10C

from uqbench.backbones.resnet8 import resnet8
from uqbench.datamodule import UQDataModule
from uqbench.method import BaseClassifier

RECIPE = CIFAR10C.recipe


class Synthetic(UQDataModule):
    """CIFAR-shaped tensors with the cifar10c datamodule's own augmentation."""

    num_classes, input_shape, default_backbone = 10, (3, 32, 32), "resnet8"
    augment = CIFAR10C.augment

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        super().__init__(batch_size=128)
        self.augmentation = True
        self.train_set = self.dev_set = self.test_set = TensorDataset(x, y)


def uqbench_epochs(x: torch.Tensor, y: torch.Tensor, epochs: int, device: str = "cpu") -> float:
    torch.manual_seed(0)
    module = BaseClassifier(resnet8(10, (3, 32, 32)), **RECIPE)
    trainer = Trainer(
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        max_epochs=epochs,
        limit_val_batches=0,
        gradient_clip_val=1.0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=Synthetic(x, y))
    return time.perf_counter() - start


def plain_epochs(x: torch.Tensor, y: torch.Tensor, epochs: int, device: str = "cpu") -> float:
    torch.manual_seed(0)
    model = resnet8(10, (3, 32, 32)).to(device)
    opt = torch.optim.SGD(
        model.parameters(), lr=RECIPE["lr"], momentum=0.9, weight_decay=RECIPE["weight_decay"]
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs, eta_min=RECIPE["min_lr"])
    loader = DataLoader(TensorDataset(x, y), batch_size=128, shuffle=True)
    augmenter = Synthetic(x, y)
    _sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for xb, yb in loader:
            xb, yb = augmenter.augment(xb.to(device), yb.to(device))
            loss = F.cross_entropy(model(xb).logits, yb, label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        sched.step()
    _sync(device)
    return time.perf_counter() - start


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.images, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (args.images,), generator=gen)
    ours, plain = [], []
    for _ in range(args.rounds):
        ours.append(uqbench_epochs(x, y, args.epochs, args.device))
        plain.append(plain_epochs(x, y, args.epochs, args.device))
    seen = args.images * args.epochs
    print(
        f"{args.images} images x {args.epochs} epochs, batch 128, device {args.device}, "
        f"torch threads {args.threads}"
    )
    print(f"uqbench (Lightning + datamodule augmentation): {seen / min(ours):8.0f} images/s")
    print(f"plain PyTorch loop, same augmentation:         {seen / min(plain):8.0f} images/s")
    print(f"time ratio uqbench / plain (fastest rounds):   {min(ours) / min(plain):.3f}x")


if __name__ == "__main__":
    main()
