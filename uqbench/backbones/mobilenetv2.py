"""MobileNetV2 at width 0.5 for 64x64 inputs (Tiny-ImageNet; paper B.1).

Inverted residual blocks (expand 1x1 by t, depthwise 3x3, project 1x1; a residual where the
shape is kept), ReLU6, batch norm, the standard stage table (t, c, n, s):

    (1, 16, 1, 1) (6, 24, 2, 2) (6, 32, 3, 2) (6, 64, 4, 2)
    (6, 96, 3, 1) (6, 160, 3, 1) (6, 320, 1, 1)

with channels scaled by ``width`` and rounded to multiples of 8, and the last 1x1 conv at 1,280
channels (kept at width < 1, as MobileNetV2 does). For 64x64 inputs the stem keeps the full
resolution and only three stages downsample (strides [2, 2, 2], paper B.1), so the last maps are
8x8 rather than the 2x2 that ImageNet's strides would leave.

Taps: ``stem`` (64x64), ``stage2`` (end of the 24-channel stage, 32x32), ``mid`` (end of the
64-channel stage, 8x8: a middle inverted residual block), ``stage7`` (the last inverted residual
block) and ``penultimate`` (the 1,280-channel 1x1 conv the classifier pools).
"""

from __future__ import annotations

from torch import Tensor, nn

from uqbench.backbones.base import Backbone, check_width

STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 1),
    (6, 320, 1, 1),
)
LAST_CHANNELS = 1280


def divisible(value: float, divisor: int = 8) -> int:
    """MobileNet's channel rounding: nearest multiple of ``divisor``, never 10% below ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def conv_bn_relu6(
    c_in: int, c_out: int, kernel: int = 1, stride: int = 1, groups: int = 1, relu: bool = True
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if relu:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        layers = [] if expansion == 1 else [conv_bn_relu6(c_in, hidden)]
        layers += [
            conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            conv_bn_relu6(hidden, c_out, relu=False),
        ]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2(Backbone):
    tap_names = ("stem", "stage2", "mid", "stage7", "penultimate")

    def __init__(self, num_classes: int, input_shape: tuple[int, ...], width: float = 0.5) -> None:
        super().__init__()
        self.num_classes, self.input_shape = num_classes, tuple(input_shape)
        channels = divisible(32 * width)
        self.stem = conv_bn_relu6(input_shape[0], channels, 3, stride=1)
        stages = []
        for expansion, c, n, stride in STAGES:
            out = divisible(c * width)
            blocks = []
            for i in range(n):
                blocks.append(InvertedResidual(channels, out, stride if i == 0 else 1, expansion))
                channels = out
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.head = conv_bn_relu6(channels, LAST_CHANNELS)
        self.classifier = nn.Linear(LAST_CHANNELS, num_classes)
        self.num_features = LAST_CHANNELS

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        taps = {"stem": self.stem(x)}
        h = taps["stem"]
        for i, stage in enumerate(self.stages, start=1):
            h = stage(h)
            if i == 2:
                taps["stage2"] = h
            elif i == 4:
                taps["mid"] = h
        taps["stage7"] = h
        taps["penultimate"] = self.head(h)
        return taps

    def forward_head(self, pooled: Tensor) -> Tensor:
        return self.classifier(pooled)

    def tap_modules(self) -> dict[str, nn.Module]:
        return {
            "stem": self.stem,
            "stage2": self.stages[1],
            "mid": self.stages[3],
            "stage7": self.stages[6],
            "penultimate": self.head,
        }


def mobilenetv2(num_classes: int, input_shape: tuple[int, ...], width: float = 0.5) -> MobileNetV2:
    """Factory registered as ``mobilenetv2``: width 0.5 at 64x64 by default (paper B.1)."""
    check_width("width", width, 0.05)
    return MobileNetV2(num_classes, input_shape, width)
