"""What each method's uncertainty costs on the device, on ResNet-8 and DS-CNN, against the paper.

For each backbone, every method is fitted briefly (accuracy is not the point: sizes, MACs and
instruction mixes do not depend on the weights' values) on small files written in the official
formats (``cifar10``: CIFAR-10 pickle batches, SVHN ``.mat``, CIFAR-100; ``speechcommands``:
16 kHz WAV folders with the list files), then deployed to each board. One table per backbone:
flash, peak RAM and estimated latency, each as the extras over BASE (the backbone alone), the
extra MACs in percent, or OOM with the bytes over, or not deployable with the reason.

The paper's claims checked here: SNAP-UQ adds a few tens of KB of flash and at most about 2%
MACs; ensembles and MC dropout do not fit the small MCU.

    python benchmarks/bench_deploy_costs.py [--backbones resnet8 ds-cnn]
        [--boards small-mcu,big-mcu] [--methods ...] [--out runs/deploy-costs]

``mc_dropout`` runs at its default placement, the taps: N whole passes on the device.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from uqbench import registry
from uqbench.cli import main as uqbench
from uqbench.runner import deploy_boards

ROOT = Path(__file__).resolve().parents[1]
METHODS = registry.own_names("method")  # SNAP-UQ and every baseline, not plugins
DATA = {"resnet8": "cifar10", "ds-cnn": "speechcommands"}


def _write_data(backbone: str, root: Path) -> None:
    """Small files in the official formats (the test suite's writers)."""
    sys.path.insert(0, str(ROOT / "tests"))
    if backbone == "resnet8":
        import shutil

        from test_cifar10c import make_root

        make_root(root)
        shutil.rmtree(root / "CIFAR-10-C")  # cifar10 generates its corruptions
    else:
        from test_speechcommands import make_root

        make_root(root)


def _fit(backbone: str, method: str, root: Path, out: Path) -> Path:
    folder = out / f"{backbone}-{method}"
    if (folder / "metrics.json").is_file():
        return folder
    extra = ["data.corruptions=[fog,contrast]"] if backbone == "resnet8" else []
    code = uqbench(
        [
            "fit",
            f"method={method}",
            f"data={DATA[backbone]}",
            f"data.root={root}",
            f"backbone={backbone}",
            "trainer.max_epochs=1",
            f"out={out}",
            f"name={folder.name}",
            *extra,
        ]
    )
    if code != 0:
        raise SystemExit(f"fit {method} on {backbone} failed with status {code}")
    return folder


def _cell(doc: dict, base_macs: int) -> str:
    if not doc["deployable"]:
        return f"not deployable ({doc['reason'][:60]})"
    if not doc["fits"]:
        return "OOM (" + ", ".join(f"{r} +{b:,} B" for r, b in doc["oom"].items()) + ")"
    flash, ram, latency = doc["flash_bytes"], doc["ram_bytes"], doc["latency"]
    extra_macs = 100 * doc["uncertainty_extras_macs"] / base_macs
    return (
        f"{flash['uncertainty_extras'] / 1024:+.1f} KiB / {ram['uncertainty_extras'] / 1024:+.1f} "
        f"KiB / {latency['uncertainty_extras_ms']:+.2f} ms ({latency['estimated_ms']:.0f} ms) / "
        f"{extra_macs:+.2f}% MACs"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbones", nargs="+", default=list(DATA))
    parser.add_argument("--boards", default="small-mcu,big-mcu")
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--out", default="runs/deploy-costs")
    args = parser.parse_args()
    out = Path(args.out)
    boards = [b.name for b in deploy_boards(args.boards)]
    for backbone in args.backbones:
        root = out / f"data-{backbone}"
        if not root.exists():
            _write_data(backbone, root)
        rows = []
        for method in ["msp"] + [m for m in args.methods if m != "msp"]:  # msp: BASE's MACs
            folder = _fit(backbone, method, root, out)
            if not all((folder / "deploy" / b / "deploy.json").is_file() for b in boards):
                uqbench(["deploy", f"run={folder}", f"board={args.boards}"])
            docs = [json.loads((folder / "deploy" / b / "deploy.json").read_text()) for b in boards]
            rows.append((method, docs))
        base_macs = rows[0][1][0]["macs"]  # msp adds no MACs to the backbone
        print(f"\n### {backbone} ({DATA[backbone]}): extras over BASE")
        print("flash / peak RAM / latency (total) / MACs; BASE = the backbone alone\n")
        print("| method | " + " | ".join(boards) + " |")
        print("|" + "---|" * (len(boards) + 1))
        print(
            "| BASE | "
            + " | ".join(
                f"{d['flash_bytes']['backbone'] / 1024:.1f} KiB / "
                f"{d['ram_bytes']['backbone'] / 1024:.1f} KiB / "
                f"{d['latency']['backbone_ms']:.0f} ms / {base_macs:,} MACs"
                if d.get("fits")
                else "OOM"
                for d in rows[0][1]
            )
            + " |"
        )
        for method, docs in rows:
            print(f"| {method} | " + " | ".join(_cell(d, base_macs) for d in docs) + " |")


if __name__ == "__main__":
    main()
