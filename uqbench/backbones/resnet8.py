"""ResNet-8 as in MLPerf Tiny image classification (CIFAR-10, 32x32x3).

    conv3x3(16) BN ReLU                                  -> 16x32x32  tap "stem"
    stage 1: [conv3x3(16) BN ReLU, conv3x3(16) BN] + x   -> 16x32x32  tap "stage1"
    stage 2: stride 2, 32 filters, 1x1 conv shortcut     -> 32x16x16  tap "mid"
    stage 3: stride 2, 64 filters, 1x1 conv shortcut     -> 64x8x8    tap "penultimate"
    global average pool -> linear(10)

77,706 parameters with batch norm folded and 12.50 M MACs at 32x32x3 (tested).
"""

from __future__ import annotations

from torch import Tensor, nn

from uqbench.backbones.base import Backbone, check_width, conv_bn_relu


class _Stage(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(c_in, c_out, stride=stride), conv_bn_relu(c_out, c_out, relu=False)
        )
        # MLPerf Tiny's shortcut is a 1x1 conv with bias (no BN) wherever the shape changes.
        self.shortcut = (
            nn.Identity() if stride == 1 and c_in == c_out else nn.Conv2d(c_in, c_out, 1, stride)
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet8(Backbone):
    tap_names = ("stem", "stage1", "mid", "penultimate")
    cpu_eval_slice = 64  # same bits in slices (see Backbone)

    def __init__(self, num_classes: int, input_shape: tuple[int, ...], width: int = 16) -> None:
        super().__init__()
        self.num_classes, self.input_shape = num_classes, tuple(input_shape)
        self.stem = conv_bn_relu(input_shape[0], width)
        self.stage1 = _Stage(width, width, 1)
        self.stage2 = _Stage(width, 2 * width, 2)
        self.stage3 = _Stage(2 * width, 4 * width, 2)
        self.classifier = nn.Linear(4 * width, num_classes)
        self.num_features = 4 * width

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        stem = self.stem(x)
        stage1 = self.stage1(stem)
        mid = self.stage2(stage1)
        return {"stem": stem, "stage1": stage1, "mid": mid, "penultimate": self.stage3(mid)}

    def forward_head(self, pooled: Tensor) -> Tensor:
        return self.classifier(pooled)

    def tap_modules(self) -> dict[str, nn.Module]:
        return {
            "stem": self.stem,
            "stage1": self.stage1,
            "mid": self.stage2,
            "penultimate": self.stage3,
        }


def resnet8(num_classes: int, input_shape: tuple[int, ...], width: int = 16) -> ResNet8:
    """Factory registered as ``resnet8``."""
    check_width("width", width)
    return ResNet8(num_classes, input_shape, width)
