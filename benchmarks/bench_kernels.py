"""The DSP kernels against the portable reference kernels, side by side, per layer type.

For each model the same generated C is built twice per board, with the DSP kernels
(``uq_kernels_dsp.c``, the default on Cortex-M4/M7) and with ``-DUQ_REFERENCE_KERNELS``; both
run under QEMU on the same inputs (their outputs must be equal, and equal to the host int8
reference), and the project's instruction profiler counts what one inference executes. Printed
per layer type: MACs, executed instructions per MAC and estimated cycles per MAC (the core's
documented timings, ``uqbench.deploy.timing``), reference then DSP; then the totals, and the
flash the kernels take.

Targets (issue: deploy kernels): estimated cycles per MAC on the Cortex-M4 at most 2.0 for
ResNet-8 and 2.4 for DS-CNN, on the Cortex-M7 at most 1.3 and 1.6. The published MLPerf Tiny
results they are set against are measured on silicon (ANCHORS.md); these are emulated estimates.

    python benchmarks/bench_kernels.py [--models resnet8 ds-cnn ds-cnn-40x98] [--out /tmp/kernels]
"""

from __future__ import annotations

import argparse
import bisect
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from uqbench.deploy.boards import big_mcu, mid_mcu, nucleo_l4r5zi, small_mcu
from uqbench.deploy.codegen import generate
from uqbench.deploy.convert import quantize_input, to_graph
from uqbench.deploy.firmware import build, emulate, harness
from uqbench.deploy.kernels import kernel_flash, layer_of
from uqbench.deploy.reference import run
from uqbench.deploy.timing import estimate, profile, symbols

from uqbench.backbones.dscnn import ds_cnn
from uqbench.backbones.mobilenetv2 import mobilenetv2
from uqbench.backbones.resnet8 import resnet8

MODELS = {
    "resnet8": (resnet8, (3, 32, 32)),
    "ds-cnn": (ds_cnn, (1, 49, 10)),  # MLPerf Tiny's input: 49 x 10 MFCC
    "ds-cnn-40x98": (ds_cnn, (1, 40, 98)),  # the speechcommands datamodule's log-Mel
    "mobilenetv2": (mobilenetv2, (3, 64, 64)),
}


def layer_macs(graph) -> Counter:
    """MACs per layer type of an int8 graph (NHWC shapes, OHWI weights)."""
    macs: Counter = Counter()
    for op in graph.ops:
        if op.kind not in ("conv2d", "depthwise_conv2d", "fully_connected"):
            continue
        weight = graph.tensors[op.inputs[1]].shape
        out = graph.tensors[op.outputs[0]].shape
        per_output = (
            int(np.prod(weight[1:])) if op.kind != "depthwise_conv2d" else int(np.prod(weight[1:3]))
        )
        kind = {"conv2d": "conv", "depthwise_conv2d": "depthwise"}.get(op.kind, "fully connected")
        macs[kind] += int(np.prod(out)) * per_output
    return macs


def by_layer(elf: Path, machine: str, core: str) -> dict[str, tuple[int, float]]:
    """(instructions, estimated cycles) per layer type of one inference."""
    executed = profile(elf, machine)
    functions = symbols(elf)
    starts = [start for start, _, _ in functions]
    groups: dict[str, list] = {}
    for item in executed.executed:
        i = bisect.bisect_right(starts, item.address) - 1
        name = functions[i][2] if i >= 0 and item.address < functions[i][1] else "?"
        groups.setdefault(layer_of(name), []).append(item)
    result = {}
    for layer, items in groups.items():
        timing = estimate(executed.only(items), core)
        result[layer] = (timing.instructions, timing.cycles)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["resnet8", "ds-cnn", "ds-cnn-40x98"])
    parser.add_argument("--out", default=None, help="build folder (default: a temporary one)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="uqbench-kernels-"))
    print(
        "| model | board | layer | MACs | instr/MAC ref | instr/MAC DSP | cycles/MAC ref | "
        "cycles/MAC DSP | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        factory, shape = MODELS[name]
        torch.manual_seed(0)
        net = factory(10, shape).eval()
        graph = to_graph(net, [torch.randn(16, *shape)])
        x = quantize_input(graph, torch.randn(2, *shape))
        expected = run(graph, x)[graph.outputs[0]].reshape(len(x), -1)
        files, _ = generate(graph)
        files["main.c"] = harness(x.reshape(len(x), -1))
        macs = layer_macs(graph)
        for board in (small_mcu(), big_mcu(), mid_mcu()):
            measured, flash = {}, {}
            for reference in (True, False):
                folder = out / f"{name}-{board.name}-{'ref' if reference else 'dsp'}"
                result = build(files, board, folder, reference_kernels=reference)
                if result.elf is None:  # too big for this board's RAM: its core on a bigger one
                    board = nucleo_l4r5zi()
                    result = build(files, board, folder, reference_kernels=reference)
                outputs = emulate(result.elf, board, len(x)).outputs
                if not np.array_equal(outputs, expected):
                    raise SystemExit(f"{name} on {board.name}: outputs differ from the reference")
                measured[reference] = by_layer(result.elf, board.qemu_machine, board.core)
                flash[reference] = kernel_flash(result.elf)
            others = sorted({*measured[True], *measured[False]} - set(macs) - {"other"})
            for layer in [*sorted(macs), *others, "total"]:
                rows = []
                for reference in (True, False):
                    counts = measured[reference]
                    if layer == "total":
                        instr = sum(v[0] for v in counts.values())
                        cycles = sum(v[1] for v in counts.values())
                    else:
                        instr, cycles = counts.get(layer, (0, 0.0))
                    rows.append((instr, cycles))
                # Layers without MACs of their own (add, pad, pool): per MAC of the network.
                own = layer in macs
                count = macs[layer] if own else sum(macs.values())
                label = layer if own or layer == "total" else f"{layer} (per network MAC)"
                print(
                    f"| {name} | {board.name} ({board.core}) | {label} | "
                    f"{count if own or layer == 'total' else 0:,} | "
                    f"{rows[0][0] / count:.2f} | {rows[1][0] / count:.2f} | "
                    f"{rows[0][1] / count:.2f} | {rows[1][1] / count:.2f} | "
                    f"{rows[0][1] / max(rows[1][1], 1):.1f}x |"
                )
            print(
                f"| {name} | {board.name} | kernels' flash (bytes) | | | | {flash[True]:,} | "
                f"{flash[False]:,} | |"
            )


if __name__ == "__main__":
    main()
