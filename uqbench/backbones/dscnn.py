"""DS-CNN as in MLPerf Tiny keyword spotting (49x10 MFCC input, 64 filters).

    zero-pad (TF "same") + conv 10x4 stride 2 (64) BN ReLU    -> 64x25x5  tap "stem"
    4 x [depthwise 3x3 BN ReLU, pointwise 1x1 (64) BN ReLU]    taps "block1".."block4"
    global average pool -> linear(12)

Taps: ``mid`` is the end of block 2, ``penultimate`` the end of block 4 (paper, B.1).
22,604 parameters with batch norm folded and 2.66 M MACs (tested).
"""

from __future__ import annotations

from torch import Tensor, nn

from uqbench.backbones.base import Backbone, check_width, conv_bn_relu


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "same" padding (before, after) for one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class DSCNN(Backbone):
    tap_names = ("stem", "block1", "mid", "block3", "penultimate")
    cpu_eval_slice = 64  # same bits in slices (see Backbone)

    def __init__(self, num_classes: int, input_shape: tuple[int, ...], filters: int = 64) -> None:
        super().__init__()
        self.num_classes, self.input_shape = num_classes, tuple(input_shape)
        c, h, w = input_shape
        top, bottom = _same_padding(h, 10, 2)
        left, right = _same_padding(w, 4, 2)
        self.stem = nn.Sequential(
            nn.ZeroPad2d((left, right, top, bottom)),
            nn.Conv2d(c, filters, (10, 4), 2, bias=False),
            nn.BatchNorm2d(filters),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.ModuleList(
            nn.Sequential(
                conv_bn_relu(filters, filters, 3, groups=filters), conv_bn_relu(filters, filters, 1)
            )
            for _ in range(4)
        )
        self.classifier = nn.Linear(filters, num_classes)
        self.num_features = filters

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        taps = {"stem": self.stem(x)}
        previous = taps["stem"]
        for name, block in zip(self.tap_names[1:], self.blocks, strict=True):
            previous = taps[name] = block(previous)
        return taps

    def forward_head(self, pooled: Tensor) -> Tensor:
        return self.classifier(pooled)

    def tap_modules(self) -> dict[str, nn.Module]:
        return {"stem": self.stem, **dict(zip(self.tap_names[1:], self.blocks, strict=True))}


def ds_cnn(num_classes: int, input_shape: tuple[int, ...], filters: int = 64) -> DSCNN:
    """Factory registered as ``ds-cnn``."""
    check_width("filters", filters)
    return DSCNN(num_classes, input_shape, filters)
