"""Evaluation over CIFAR-10-C-shaped files: uqbench's recorded pass against a plain loop.

    python benchmarks/bench_eval_cifar10c.py [--corruptions 19] [--threads 1] [--dir DIR]

Writes (once, reused) a synthetic data root in the official formats and sizes: 50,000 training
and 10,000 test images, and
``--corruptions`` CIFAR-10-C ``.npy`` files of 50,000 images each (19: the full 950,000, 2.9 GB).
Then, each in a fresh process so that peak memory is its own:

- **uqbench**: the evaluate stage of ``uqbench fit data=cifar10c`` (ID test, every CID set
  memory-mapped one severity at a time, both OOD sets) with ``msp`` on an untrained ResNet-8;
- **plain**: ``model(x)`` over the same ID and CID images, each severity sliced from the
  memory-mapped file and normalized in batches of 512.

Reported: images per second of each, their ratio (target <= 1.10x), and each process's peak
resident memory (target: uqbench under 2 GB on the full 950,000).
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

N_TEST = 10_000


def make_root(root: Path, corruptions: list[str]) -> None:
    rng = np.random.default_rng(0)
    batches = root / "cifar-10-batches-py"
    batches.mkdir(parents=True, exist_ok=True)
    # The official sizes (50,000 training images), so the data module holds what it really does.
    for name, n in [(f"data_batch_{i}", 10_000) for i in range(1, 6)] + [("test_batch", N_TEST)]:
        if not (batches / name).exists():
            data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
            with open(batches / name, "wb") as f:
                pickle.dump({b"data": data, b"labels": list(rng.integers(0, 10, n))}, f)
    c = root / "CIFAR-10-C"
    c.mkdir(exist_ok=True)
    if not (c / "labels.npy").exists():
        np.save(c / "labels.npy", rng.integers(0, 10, 5 * N_TEST).astype(np.uint8))
    shape = (5 * N_TEST, 32, 32, 3)
    for name in corruptions:
        if not (c / f"{name}.npy").exists():
            out = np.lib.format.open_memmap(c / f"{name}.npy", "w+", np.uint8, shape)
            for s in range(5):
                block = rng.integers(0, 256, (N_TEST, 32, 32, 3), dtype=np.uint8)
                out[s * N_TEST : (s + 1) * N_TEST] = block
            out.flush()
            del out
    if not (root / "test_32x32.mat").exists():
        from scipy.io import savemat

        svhn = rng.integers(0, 256, (32, 32, 3, 100), dtype=np.uint8)
        savemat(root / "test_32x32.mat", {"X": svhn, "y": (np.arange(100) % 10 + 1)[:, None]})
    hundred = root / "cifar-100-python"
    hundred.mkdir(exist_ok=True)
    if not (hundred / "test").exists():
        with open(hundred / "test", "wb") as f:
            pickle.dump(
                {
                    b"data": rng.integers(0, 256, (100, 3072), dtype=np.uint8),
                    b"fine_labels": list(range(100)),
                },
                f,
            )


def run_uqbench(root: Path, corruptions: list[str], device: str = "cpu") -> dict:
    import torch
    from uqbench.datamodules.cifar10c import CIFAR10C
    from uqbench.methods.msp import MSP

    from uqbench.backbones.resnet8 import resnet8
    from uqbench.stages.evaluate import evaluate

    data = CIFAR10C(root=str(root), corruptions=tuple(corruptions))
    data.setup()
    method = MSP(resnet8(10, (3, 32, 32))).to(device)
    start = time.perf_counter()
    predictions = evaluate([method], data, torch.device(device))[id(method)]
    seconds = time.perf_counter() - start
    return {"images": int(len(predictions.label)), "seconds": seconds}


def run_plain(root: Path, corruptions: list[str], device: str = "cpu") -> dict:
    import torch
    from uqbench.datamodules.cifar10c import MEAN, STD

    from uqbench.backbones.resnet8 import resnet8

    model = resnet8(10, (3, 32, 32)).eval().to(device)
    mean, std = MEAN.numpy()[None], STD.numpy()[None]

    def images():
        with open(root / "cifar-10-batches-py/test_batch", "rb") as f:
            yield pickle.load(f, encoding="bytes")[b"data"].reshape(-1, 3, 32, 32)
        for name in corruptions:
            array = np.load(root / "CIFAR-10-C" / f"{name}.npy", mmap_mode="r")
            for s in range(5):
                yield array[s * N_TEST : (s + 1) * N_TEST].transpose(0, 3, 1, 2)

    count, start = 0, time.perf_counter()
    with torch.no_grad():
        for block in images():
            for i in range(0, len(block), 512):
                x = (block[i : i + 512].astype(np.float32) / 255 - mean) / std
                model(torch.from_numpy(x).to(device)).logits.softmax(-1).cpu()
                count += len(x)
    return {"images": count, "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corruptions", type=int, default=19)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dir", default="/tmp/uqbench-cifar10c-bench")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--side", choices=["uqbench", "plain"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    from uqbench.datamodules.cifar10c import CIFAR10C_CORRUPTIONS

    names = list(CIFAR10C_CORRUPTIONS[: args.corruptions])
    root = Path(args.dir)
    if args.side:  # a child process: measure one side
        import torch

        torch.set_num_threads(args.threads)
        result = (run_uqbench if args.side == "uqbench" else run_plain)(root, names, args.device)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    make_root(root, names)
    results = {}
    for side in ("uqbench", "plain"):
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--side",
                side,
                "--corruptions",
                str(args.corruptions),
                "--threads",
                str(args.threads),
                "--dir",
                str(root),
                "--device",
                args.device,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        results[side] = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"{len(names)} CIFAR-10-C files ({len(names) * 5 * N_TEST:,} images) + 10,000 ID, "
        f"ResNet-8, torch threads {args.threads}"
    )
    for side, r in results.items():
        print(
            f"{side:8s} {r['images']:>9,} images {r['seconds']:8.1f} s "
            f"{r['images'] / r['seconds']:8.0f} images/s   peak RSS {r['peak_rss_mb']:7.0f} MB"
        )
    ratio = (results["uqbench"]["seconds"] / results["uqbench"]["images"]) / (
        results["plain"]["seconds"] / results["plain"]["images"]
    )
    print(f"time per image, uqbench / plain: {ratio:.3f}x")


if __name__ == "__main__":
    main()
