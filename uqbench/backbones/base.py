"""The backbone contract and cost counting.

A backbone is a classifier split in two, ``forward_features`` (input -> named activations) and
``forward_head`` (pooled penultimate vector -> logits), so that methods can read any tap and
post-hoc methods such as ReAct can edit the pooled vector before the classifier.

Taps are named activations in depth order (``tap_names``). Every backbone has ``mid`` and
``penultimate``; a tap's *predecessor* is the tap before it in that order, which is what
SNAP-UQ projects from when it predicts the tap.
"""

from __future__ import annotations

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
    """Global average pooling: [B, C, H, W] -> [B, C]; vectors [B, D] pass through."""
    return feature.mean(dim=(2, 3)) if feature.dim() == 4 else feature


class Backbone(nn.Module):
    """Base class of every backbone. Subclasses set ``tap_names`` and implement the two halves."""

    tap_names: tuple[str, ...] = ()
    num_classes: int
    input_shape: tuple[int, ...]

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """Input [B, *input_shape] -> every tap, in ``tap_names`` order; the last is penultimate."""
        raise NotImplementedError

    def pool(self, feature: Tensor) -> Tensor:
        """The pooling in front of the classifier: [B, C, H, W] -> [B, C] by default."""
        return global_pool(feature)

    def forward_head(self, pooled: Tensor) -> Tensor:
        """Pooled penultimate vector [B, D] -> logits [B, C]."""
        raise NotImplementedError

    def tap_modules(self) -> dict[str, nn.Module]:
        """The module whose output is each tap, so a method can hook it (MC dropout does)."""
        raise NotImplementedError(f"{type(self).__name__} does not name its tap modules")

    def forward(self, x: Tensor) -> BackboneOutput:
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
        out = self(torch.zeros(1, *self.input_shape))
        self.train(was_training)
        return {name: tuple(t.shape[1:]) for name, t in out.taps.items()}


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

    def conv_hook(module: nn.Conv2d, _inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal macs
        kernel = module.weight.shape[1] * module.weight.shape[2] * module.weight.shape[3]
        macs += output.numel() // output.shape[0] * kernel

    def linear_hook(module: nn.Linear, inputs: tuple[Tensor, ...], _output: Tensor) -> None:
        nonlocal macs
        macs += inputs[0].numel() // inputs[0].shape[0] * module.out_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        model(example)
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
