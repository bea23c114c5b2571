"""The backbone contract and cost counting.

A backbone is a classifier split in two, ``forward_features`` (input -> named activations) and
``forward_head`` (pooled penultimate vector -> logits), so that methods can read any tap and
post-hoc methods such as ReAct can edit the pooled vector before the classifier.

The contract (checked by :func:`check_backbone`, which the runner calls on every backbone):

- ``num_classes``, ``input_shape`` (per example, e.g. ``(1, 28, 28)`` or ``(40, 98)``) and
  ``num_features`` (width D of the pooled penultimate vector) are attributes;
- ``tap_names``: named activations in depth order; every backbone has ``mid`` and
  ``penultimate``, and a tap's *predecessor* is the tap before it (what SNAP-UQ projects from);
- ``forward_features(x)`` returns every tap; each is ``[B, C]`` (a vector), ``[B, C, L]`` (1-D
  maps, e.g. a Conv1d network on audio) or ``[B, C, H, W]``;
- ``pool_tap(t)`` turns any tap into ``[B, C]`` (global average over every axis after the
  channels); methods pool through it, never on their own; ``pool(penultimate)`` is what the
  classifier reads (``pool_tap`` unless the backbone has its own head pooling);
- ``forward_head(pooled)`` maps ``[B, D]`` to logits ``[B, num_classes]``;
- ``tap_modules()`` (optional) names the module whose output is each tap, so a method can hook
  it (MC dropout at the taps does);
- ``cpu_eval_slice`` (optional, default None) lets an eval-mode batch on the CPU run in slices
  of that many examples, for speed; set it only where the slices give the same bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class BackboneOutput:
    """One forward pass.

    ``logits``: [B, C]. ``taps``: name -> activation, [B, C_l, H_l, W_l] for conv maps or
    [B, D_l] for vectors, in depth order. ``pooled``: [B, D] the vector the classifier reads.
    """

    logits: Tensor
    taps: dict[str, Tensor]
    pooled: Tensor


def global_pool(feature: Tensor) -> Tensor:
    """Global average pooling over every axis after the channels: [B, C, ...] -> [B, C];
    vectors [B, D] pass through."""
    return feature.flatten(2).mean(-1) if feature.dim() > 2 else feature


class Backbone(nn.Module):
    """Base class of every backbone. Subclasses set ``tap_names`` and implement the two halves."""

    tap_names: tuple[str, ...] = ()
    num_classes: int
    input_shape: tuple[int, ...]
    num_features: int
    # Examples per slice in which an eval-mode batch runs on the CPU, or None: whole batches.
    # Slices keep each layer's activations in the caches instead of streaming a whole batch's
    # through memory: at one thread, 0.37-0.56x the time per example of a 512 batch for the
    # digits CNN, ResNet-8 and DS-CNN. Set it only where every example's outputs are the same
    # bits in a slice as in the batch (tested in tests/test_backbones.py): oneDNN picks its
    # convolution kernels by batch size, and for MobileNetV2's depthwise layers or timm's
    # models some sizes round differently. The method still sees the whole batch, so its own
    # reductions (MC dropout's mean over passes, whose summation order torch picks by shape)
    # are unchanged.
    cpu_eval_slice: int | None = None

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """Input [B, *input_shape] -> every tap, in ``tap_names`` order; the last is penultimate."""
        raise NotImplementedError

    def pool_tap(self, feature: Tensor) -> Tensor:
        """Any tap [B, C, ...] -> [B, C]: global average pooling (vectors pass through)."""
        return global_pool(feature)

    def pool(self, feature: Tensor) -> Tensor:
        """The pooling in front of the classifier (penultimate tap -> [B, D])."""
        return self.pool_tap(feature)

    def forward_head(self, pooled: Tensor) -> Tensor:
        """Pooled penultimate vector [B, D] -> logits [B, C]."""
        raise NotImplementedError

    def tap_modules(self) -> dict[str, nn.Module]:
        """The module whose output is each tap, so a method can hook it (MC dropout does)."""
        raise NotImplementedError(f"{type(self).__name__} does not name its tap modules")

    def forward(self, x: Tensor) -> BackboneOutput:
        """Input [B, *input_shape] -> logits, taps and pooled vector. In eval mode on the CPU a
        batch larger than ``cpu_eval_slice`` runs in slices of that many examples."""
        if _in_slices(self, x):
            return _concatenate([self._forward(part) for part in _slices(x, self.cpu_eval_slice)])
        return self._forward(x)

    def _forward(self, x: Tensor) -> BackboneOutput:
        taps = self.forward_features(x)
        pooled = self.pool(taps["penultimate"])
        return BackboneOutput(self.forward_head(pooled), taps, pooled)

    def predecessor(self, tap: str) -> str:
        """The tap right before ``tap`` in depth order (what SNAP-UQ predicts it from)."""
        index = self.tap_names.index(tap)
        if index == 0:
            raise ValueError(f"tap {tap!r} is the first tap and has no predecessor")
        return self.tap_names[index - 1]

    @torch.no_grad()
    def tap_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-example shape of each tap, from one dummy forward pass."""
        was_training = self.training
        self.eval()
        device = next(self.parameters(), torch.zeros(())).device  # also "meta" (resolve-time)
        out = self(torch.zeros(1, *self.input_shape, device=device))
        self.train(was_training)
        return {name: tuple(t.shape[1:]) for name, t in out.taps.items()}


def _in_slices(backbone: Backbone, x: Tensor) -> bool:
    """Slice ``x``: a backbone that allows it, eval mode (batch norm by running statistics), a
    real CPU tensor larger than a slice, and no tracing or export (which must see the network
    as written)."""
    size = backbone.cpu_eval_slice
    return (
        size is not None
        and not backbone.training
        and type(x) is torch.Tensor
        and x.device.type == "cpu"
        and x.dim() > 0
        and x.shape[0] > size
        and not torch.compiler.is_compiling()
        and not torch.compiler.is_exporting()
        and not torch.jit.is_tracing()
    )


def _slices(x: Tensor, size: int) -> list[Tensor]:
    """``x`` in slices of ``size`` examples; a last slice of one example joins the one before
    (oneDNN computes a batch of one with other kernels, so its bits would differ)."""
    parts = list(x.split(size))
    if len(parts) > 1 and len(parts[-1]) == 1:
        parts[-2:] = [x[-size - 1 :]]
    return parts


def _concatenate(parts: list[BackboneOutput]) -> BackboneOutput:
    """The outputs of consecutive slices as one batch's."""
    return BackboneOutput(
        torch.cat([p.logits for p in parts]),
        {name: torch.cat([p.taps[name] for p in parts]) for name in parts[0].taps},
        torch.cat([p.pooled for p in parts]),
    )


MAX_WIDTH = 1 << 16  # channels per layer; far beyond any microcontroller network


def check_width(key: str, value: float, minimum: float = 1) -> None:
    """A size option ``backbone.<key>`` is a finite number in ``[minimum, MAX_WIDTH]``; raises
    :class:`~uqbench.errors.ConfigError` naming it and the fix otherwise."""
    from uqbench.errors import ConfigError

    if not (isinstance(value, int | float) and math.isfinite(value) and value >= minimum):
        raise ConfigError(f"backbone.{key}={value} must be at least {minimum}")
    if value > MAX_WIDTH:
        raise ConfigError(
            f"backbone.{key}={value} is beyond {MAX_WIDTH:,}. Choose smaller backbone.* options."
        )


def check_backbone(backbone: Backbone, name: str) -> None:
    """Raise :class:`~uqbench.errors.ConfigError` naming what ``backbone`` lacks of the contract
    (module docstring): attributes, the ``mid`` and ``penultimate`` taps, tap ranks, head."""
    from uqbench.errors import ConfigError

    where = f"backbone {name!r} ({type(backbone).__name__})"
    for attribute in ("num_classes", "input_shape", "num_features", "tap_names"):
        if not hasattr(backbone, attribute):
            raise ConfigError(f"{where} does not set {attribute}; see the backbone contract")
    missing = [t for t in ("mid", "penultimate") if t not in backbone.tap_names]
    if missing:
        raise ConfigError(f"{where} has no tap {missing[0]!r}; its taps: {backbone.tap_names}")
    shapes = backbone.tap_shapes()
    if list(shapes) != list(backbone.tap_names):
        raise ConfigError(
            f"{where}: forward_features returned taps {list(shapes)}, but tap_names is "
            f"{list(backbone.tap_names)}; they must match, in depth order"
        )
    for tap, shape in shapes.items():
        if not 1 <= len(shape) <= 3:
            raise ConfigError(
                f"{where}: tap {tap!r} has per-example shape {shape}; a tap must be [C], [C, L] "
                f"or [C, H, W]"
            )


def count_parameters(model: nn.Module, fold_batchnorm: bool = True) -> int:
    """Trainable parameter count; with ``fold_batchnorm`` each BN counts as its folded bias.

    Folding a BN into the preceding bias-free conv adds one bias per channel, which is how
    deployed int8 models (and MLPerf Tiny's parameter counts) see it.
    """
    total = 0
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if fold_batchnorm and isinstance(module, nn.modules.batchnorm._BatchNorm):
            total += module.num_features
        else:
            total += sum(p.numel() for p in own)
    return total


@torch.no_grad()
def count_macs(model: nn.Module, example: Tensor) -> int:
    """Multiply-accumulates of conv and linear layers for one example (``example``: [1, ...]).

    Pooling, BN (folded at deployment), activations and additions are not counted, as in the
    MLPerf Tiny figures (ResNet-8: 12.50 M).
    """
    macs = 0

    def conv_hook(module: nn.Module, _inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal macs  # any convolution: in-channels per group x kernel size per output value
        kernel = math.prod(module.weight.shape[1:])
        macs += output.numel() // output.shape[0] * kernel

    def linear_hook(module: nn.Linear, inputs: tuple[Tensor, ...], _output: Tensor) -> None:
        nonlocal macs
        macs += inputs[0].numel() // inputs[0].shape[0] * module.out_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        model(example.to(next(model.parameters(), example).device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return macs


def conv_bn_relu(
    c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1, relu: bool = True
) -> nn.Sequential:
    """Bias-free conv (padding keeps the size at stride 1), batch norm, optional ReLU."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)
