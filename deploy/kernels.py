"""Which functions of a firmware are the int8 kernels, and which layer type each serves.

The names are those of ``c/uq_kernels.c`` (the reference kernels, ``uq_ref_*`` and their public
aliases) and ``c/uq_kernels_dsp.c`` (the DSP kernels and their helpers). ``memset`` and
``memcpy`` are charged to ``pad``: the kernels call them to fill and copy rows. The fully
connected layer's dot products and requantization run in the convolution's helpers and count
as convolution (one small layer in every first-party backbone).
"""

from __future__ import annotations

from pathlib import Path

LAYER = {
    "uq_conv2d": "conv",
    "uq_ref_conv2d": "conv",
    "rows_by_patches": "conv",
    "requantize_conv": "conv",
    "requantize_pair": "conv",
    "uq_depthwise": "depthwise",
    "uq_depthwise_planes": "depthwise",
    "uq_ref_depthwise": "depthwise",
    "dw_groups": "depthwise",
    "requantize_depthwise": "depthwise",
    "expand_planes": "depthwise",
    "dw_plane_s1": "depthwise",
    "dw_plane_s2": "depthwise",
    "requantize_lines": "depthwise",
    "uq_fully_connected": "fully connected",
    "uq_ref_fully_connected": "fully connected",
    "uq_add": "add",
    "uq_ref_add": "add",
    "uq_mul": "mul",
    "uq_mul_dropout": "mul",
    "uq_pad": "pad",
    "uq_ref_pad": "pad",
    "memset": "pad",
    "memcpy": "pad",
    "uq_average_pool": "pool",
    "uq_max_pool": "pool",
}
KERNELS = frozenset(name for name in LAYER if name not in ("memset", "memcpy"))


def layer_of(function: str) -> str:
    """The layer type a function's instructions count for (``other`` for the rest: the
    network's glue, the score, the harness). Compiler clones (``name.constprop.0``) count as
    their original."""
    return LAYER.get(function.split(".", 1)[0], "other")


def kernel_flash(elf: Path) -> int:
    """Bytes of flash the kernels linked into ``elf`` take (only those a model calls are)."""
    from uqbench.deploy.timing import symbols

    return sum(end - start for start, end, name in symbols(elf) if name.split(".")[0] in KERNELS)


def by_layer(by_function: dict[str, int]) -> dict[str, int]:
    """Executed instructions per layer type, from the profile's per-function counts."""
    totals: dict[str, int] = {}
    for function, count in by_function.items():
        layer = layer_of(function)
        totals[layer] = totals.get(layer, 0) + count
    return dict(sorted(totals.items(), key=lambda item: -item[1]))
