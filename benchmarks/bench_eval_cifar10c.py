"""Evaluation over CIFAR-10-C-shaped files: uqbench's recorded pass against a plain loop.

    python benchmarks/bench_eval_cifar10c.py [--corruptions 19] [--threads 1] [--dir DIR]
                                             [--images 10000] [--device cpu|cuda]

Writes (once, reused, under ``DIR/n<images>``) a synthetic data root in the official formats
and sizes: 50,000 training and 10,000 test images, and ``--corruptions`` CIFAR-10-C ``.npy``
files of 50,000 images each (19: the full 950,000, 2.9 GB). ``--images 64`` writes 64 per batch
and severity instead: the GPU check's dry run reads such a root through both sides.
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


def make_root(root: Path, corruptions: list[str], n_test: int = N_TEST) -> None:
    """The data root, in the official formats: 5 training batches and the test batch of
    ``n_test`` images each (officially 10,000), each CIFAR-10-C file 5 severities of
    ``n_test``; SVHN and CIFAR-100 test files of 100 images (the OOD sets)."""
    rng = np.random.default_rng(0)
    batches = root / "cifar-10-batches-py"
    batches.mkdir(parents=True, exist_ok=True)
    # The official sizes (50,000 training images), so the data module holds what it really does.
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        if not (batches / name).exists():
            data = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
            labels = rng.integers(0, 10, n_test).tolist()  # Python ints, as the official files
            with open(batches / name, "wb") as f:
                pickle.dump({b"data": data, b"labels": labels}, f)
    c = root / "CIFAR-10-C"
    c.mkdir(exist_ok=True)
    if not (c / "labels.npy").exists():
        np.save(c / "labels.npy", rng.integers(0, 10, 5 * n_test).astype(np.uint8))
    shape = (5 * n_test, 32, 32, 3)
    for name in corruptions:
        if not (c / f"{name}.npy").exists():
            out = np.lib.format.open_memmap(c / f"{name}.npy", "w+", np.uint8, shape)
            for s in range(5):
                block = rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8)
                out[s * n_test : (s + 1) * n_test] = block
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


def run_plain(
    root: Path, corruptions: list[str], device: str = "cpu", n_test: int = N_TEST
) -> dict:
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
                yield array[s * n_test : (s + 1) * n_test].transpose(0, 3, 1, 2)

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
    parser.add_argument(
        "--images", type=int, default=N_TEST, help="per batch and severity (official: 10,000)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dir", default="/tmp/uqbench-cifar10c-bench")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--side", choices=["uqbench", "plain"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    from uqbench.datamodules.cifar10c import CIFAR10C_CORRUPTIONS

    names = list(CIFAR10C_CORRUPTIONS[: args.corruptions])
    root = Path(args.dir) / f"n{args.images}"
    if args.side:  # a child process: measure one side
        import torch

        torch.set_num_threads(args.threads)
        if args.side == "uqbench":
            result = run_uqbench(root, names, args.device)
        else:
            result = run_plain(root, names, args.device, args.images)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    make_root(root, names, args.images)
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
                args.dir,
                "--device",
                args.device,
                "--images",
                str(args.images),
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"the {side} side failed:\n{done.stderr[-3000:]}")
        results[side] = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"{len(names)} CIFAR-10-C files ({len(names) * 5 * args.images:,} images) + "
        f"{args.images:,} ID, "
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
