"""An int8 graph: the network as the device runs it (NHWC tensors, TFLite's operators).

A :class:`Graph` is a list of :class:`Op` in execution order over named :class:`QTensor`;
constants (weights, biases) carry their data. It is what the host reference executes
(:mod:`.reference`), what the ``.tflite`` writer serializes (:mod:`.tflite`), and what the C
generator will emit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from uqbench.deploy.int8 import QParams

OpKind = Literal[
    "conv2d",
    "depthwise_conv2d",
    "fully_connected",
    "average_pool_2d",
    "max_pool_2d",
    "add",
    "mul",
    "pad",
    "reshape",
]
Activation = Literal["none", "relu", "relu6"]


@dataclass
class QTensor:
    """A tensor: NHWC ``shape`` (batch 1 for activations), int8 or int32, its quantization,
    and ``data`` for constants."""

    name: str
    shape: tuple[int, ...]
    qparams: QParams
    dtype: Literal["int8", "int32"] = "int8"
    data: np.ndarray | None = None


@dataclass
class Op:
    """One operator. ``options``: ``stride`` (h, w), ``activation``, ``filter`` (h, w) for
    pooling, ``paddings`` ((top, bottom), (left, right)) for pad, ``shape`` for reshape.
    Convolutions and pooling are VALID: padding is an explicit ``pad`` op (TFLite's SAME pads
    differently from PyTorch at stride 2)."""

    kind: OpKind
    inputs: list[str]
    outputs: list[str]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    tensors: dict[str, QTensor]
    ops: list[Op]
    inputs: list[str]
    outputs: list[str]

    def add(self, tensor: QTensor) -> str:
        if tensor.name in self.tensors:
            raise ValueError(f"tensor {tensor.name!r} is defined twice")
        self.tensors[tensor.name] = tensor
        return tensor.name
