"""Each benchmark's training recipe (paper B.2) as defaults, and its augmentation (paper A.1)
on batches: formulas against per-image references on the same draws, training batches only."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from uqbench.datamodules.augment import (
    _resize_crops,
    color_jitter,
    crop_flip,
    random_flip,
    random_grayscale,
    random_resized_crop,
    rotate_translate,
)
from uqbench.datamodules.cifar10c import CIFAR10C
from uqbench.datamodules.digits import Digits
from uqbench.datamodules.mnist import MNIST

from uqbench.config import RunConfig
from uqbench.errors import ConfigError
from uqbench.stages.resolve import resolve


def _resolved(tmp_path, **kw):
    from test_cifar10c import make_root

    root = make_root(tmp_path / "data")
    args = {"root": str(root), "corruptions": "[fog,contrast]"}
    return resolve(RunConfig(data="cifar10c", data_args=args, **kw))


def test_cifar_recipe_is_the_default_and_every_part_an_override(tmp_path):
    r = _resolved(tmp_path, method="msp")
    assert {k: r.method_args[k] for k in CIFAR10C.recipe} == CIFAR10C.recipe
    assert r.trainer_args["gradient_clip_val"] == 1.0 and r.trainer_args["max_epochs"] == 200
    r = _resolved(
        tmp_path / "b",
        method="msp",
        method_args={"lr": "0.05", "optimizer": "adam"},
        trainer_args={"gradient_clip_val": "0.5"},
    )
    assert r.method_args["lr"] == 0.05 and r.method_args["optimizer"] == "adam"
    assert r.method_args["label_smoothing"] == 0.1
    assert r.trainer_args["gradient_clip_val"] == 0.5


def test_digits_keeps_the_method_defaults():
    r = resolve(RunConfig(method="msp"))
    assert r.method_args["optimizer"] == "adam" and r.method_args["label_smoothing"] == 0.0
    assert "gradient_clip_val" not in r.trainer_args


def test_label_smoothing_is_checked_and_used():
    from uqbench.methods.msp import MSP

    from uqbench.testing import build

    method, _ = build(MSP, "digits-cnn", label_smoothing=0.1)
    logits, y = torch.randn(5, 10), torch.arange(5)
    expected = torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1)
    torch.testing.assert_close(method.classification_loss(logits, y), expected)
    with pytest.raises(ConfigError, match="label_smoothing must be in"):
        build(MSP, "digits-cnn", label_smoothing=1.0)


def test_crop_flip_is_pad_crop_then_flip_per_image():
    x = torch.rand(6, 3, 8, 8)
    fill = torch.tensor([-1.0, -2.0, -3.0])
    out = crop_flip(x, 2, fill, torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)
    top, left = torch.randint(0, 5, (6,), generator=gen), torch.randint(0, 5, (6,), generator=gen)
    flip = torch.rand(6, generator=gen) < 0.5
    for i in range(6):
        padded = fill[:, None, None].expand(3, 12, 12).clone()
        padded[:, 2:10, 2:10] = x[i]
        ref = padded[:, top[i] : top[i] + 8, left[i] : left[i] + 8]
        torch.testing.assert_close(out[i], ref.flip(-1) if flip[i] else ref)
    assert flip.any() and not flip.all()


def test_color_jitter_formulas():
    x = torch.rand(4, 3, 5, 5)
    out = color_jitter(x, 0.2, torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(1)
    b, c, s = (torch.rand(4, generator=gen) * 0.4 + 0.8 for _ in range(3))
    w = torch.tensor([0.2989, 0.587, 0.114])[:, None, None]  # torchvision's
    for i in range(4):
        y = (x[i] * b[i]).clamp(0, 1)
        m = (y * w).sum(0).mean()
        y = ((y - m) * c[i] + m).clamp(0, 1)
        g = (y * w).sum(0, keepdim=True)
        torch.testing.assert_close(out[i], ((y - g) * s[i] + g).clamp(0, 1))


def test_rotate_translate_without_rotation_is_an_integer_shift():
    x = torch.rand(3, 1, 10, 10)
    out = rotate_translate(x, 0.0, 2, fill=-5.0, gen=torch.Generator().manual_seed(2))
    gen = torch.Generator().manual_seed(2)
    torch.rand(3, generator=gen)  # the angles (all 0 here)
    dx = torch.round(torch.rand(3, generator=gen) * 4 - 2).long()
    dy = torch.round(torch.rand(3, generator=gen) * 4 - 2).long()
    for i in range(3):
        ref = torch.full((1, 10, 10), -5.0)
        src = x[i, :, max(0, -dy[i]) : 10 - max(0, dy[i]), max(0, -dx[i]) : 10 - max(0, dx[i])]
        ref[:, max(0, dy[i]) : 10 - max(0, -dy[i]), max(0, dx[i]) : 10 - max(0, -dx[i])] = src
        torch.testing.assert_close(out[i], ref)
    rotated = rotate_translate(x, 10.0, 0, fill=0.0)
    assert rotated.shape == x.shape


def test_resized_crops_are_torchvisions_bilinear_resize_of_each_crop():
    from torchvision.transforms.v2 import functional as TF

    x = torch.rand(5, 3, 16, 12)
    top, left = torch.tensor([0, 3, 1, 0, 8]), torch.tensor([0, 2, 5, 0, 0])
    ch, cw = torch.tensor([16, 9, 13, 1, 8]), torch.tensor([12, 10, 7, 1, 12])
    out = _resize_crops(x, top, left, ch, cw)
    for i in range(5):
        ref = TF.resized_crop(
            x[i], int(top[i]), int(left[i]), int(ch[i]), int(cw[i]), [16, 12], antialias=False
        )
        torch.testing.assert_close(out[i], ref)


def test_random_resized_crop_draws_torchvisions_crop_boxes():
    x = torch.arange(64 * 64, dtype=torch.float32).reshape(1, 1, 64, 64).expand(400, 3, 64, 64)
    out = random_resized_crop(x, (0.8, 1.0), gen=torch.Generator().manual_seed(3))
    # Each output is a smooth resize of a crop: its corners tell the crop's box.
    rows = out[:, 0, :, 0] // 64
    height = rows[:, -1] - rows[:, 0] + 1
    width = out[:, 0, 0, -1] % 64 - out[:, 0, 0, 0] % 64 + 1
    area = height * width / 64**2
    assert area.min() >= 0.8 - 0.05 and area.max() <= 1.0  # scale, up to rounding
    assert (width / height).min() >= 3 / 4 - 0.05 and (width / height).max() <= 4 / 3 + 0.05
    assert len(set(zip(height.tolist(), width.tolist(), strict=True))) > 20  # varied boxes
    tall = torch.rand(2, 3, 64, 8)  # no draw fits: the centre crop at the nearest ratio
    fallback = random_resized_crop(tall, (0.99, 1.0), gen=torch.Generator().manual_seed(0))
    assert fallback.shape == tall.shape


def test_random_flip_flips_the_drawn_half():
    x = torch.rand(40, 3, 4, 5)
    out = random_flip(x, torch.Generator().manual_seed(5))
    flip = torch.rand(40, generator=torch.Generator().manual_seed(5)) < 0.5
    assert torch.equal(out[flip], x[flip].flip(-1)) and torch.equal(out[~flip], x[~flip])
    assert 5 < flip.sum() < 35


def test_random_grayscale_is_torchvisions_gray_on_the_chosen_images():
    from torchvision.transforms.v2 import functional as TF

    x = torch.rand(200, 3, 4, 4)
    out = random_grayscale(x, 0.1, torch.Generator().manual_seed(4))
    chosen = torch.rand(200, generator=torch.Generator().manual_seed(4)) < 0.1
    assert 5 < chosen.sum() < 40
    torch.testing.assert_close(out[~chosen], x[~chosen])
    ref = TF.rgb_to_grayscale(x[chosen], num_output_channels=3)
    torch.testing.assert_close(out[chosen], ref)


def test_only_training_batches_are_augmented(tmp_path):
    from test_mnist import make_root

    data = MNIST(root=str(make_root(tmp_path)))
    batch = (torch.rand(4, 1, 28, 28), torch.arange(4))
    data.trainer = SimpleNamespace(training=False)
    assert data.on_after_batch_transfer(batch, 0) is batch
    data.trainer = SimpleNamespace(training=True)
    x, y = data.on_after_batch_transfer(batch, 0)
    assert x.shape == batch[0].shape and torch.equal(y, batch[1])
    assert not torch.equal(x, batch[0])
    off = MNIST(root=str(tmp_path), augment=False)
    off.trainer = SimpleNamespace(training=True)
    assert off.on_after_batch_transfer(batch, 0)[0] is batch[0]
    digits = Digits()
    digits.trainer = SimpleNamespace(training=True)
    assert digits.on_after_batch_transfer(batch, 0)[0] is batch[0]  # no augmentation
