"""A small CNN for 28x28 grayscale digits (digits, MNIST, Fashion-MNIST).

input 1x28x28
stem   conv3x3(16) BN ReLU, maxpool2        -> 16x14x14   tap "stem"
block  conv3x3(32) BN ReLU, maxpool2        -> 32x7x7     tap "mid"
block  conv3x3(64) BN ReLU                  -> 64x7x7     tap "penultimate"
global average pool -> 64 -> linear -> classes
"""

from __future__ import annotations

from torch import Tensor, nn

from uqbench.backbones.base import Backbone, check_width, conv_bn_relu
from uqbench.backbones.pooling import MaxPool2d


class DigitsCNN(Backbone):
    tap_names = ("stem", "mid", "penultimate")
    cpu_eval_slice = 64  # same bits in slices (see Backbone)

    def __init__(self, num_classes: int, input_shape: tuple[int, ...], width: int = 16) -> None:
        super().__init__()
        self.num_classes, self.input_shape = num_classes, tuple(input_shape)
        channels = input_shape[0]
        self.stem = nn.Sequential(conv_bn_relu(channels, width), MaxPool2d(2))
        self.mid = nn.Sequential(conv_bn_relu(width, 2 * width), MaxPool2d(2))
        self.last = conv_bn_relu(2 * width, 4 * width)
        self.classifier = nn.Linear(4 * width, num_classes)
        self.num_features = 4 * width

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        stem = self.stem(x)
        mid = self.mid(stem)
        return {"stem": stem, "mid": mid, "penultimate": self.last(mid)}

    def forward_head(self, pooled: Tensor) -> Tensor:
        return self.classifier(pooled)

    def tap_modules(self) -> dict[str, nn.Module]:
        return {"stem": self.stem, "mid": self.mid, "penultimate": self.last}


def digits_cnn(num_classes: int, input_shape: tuple[int, ...], width: int = 16) -> DigitsCNN:
    """Factory registered as ``digits-cnn``; ``backbone.width`` scales every layer."""
    check_width("width", width)
    return DigitsCNN(num_classes, input_shape, width)
