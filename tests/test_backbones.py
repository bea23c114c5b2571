"""Backbones: MLPerf Tiny shapes, taps and the timm adapter."""

import pytest
import torch

from uqbench.backbones.base import count_macs, count_parameters
from uqbench.backbones.digits_cnn import digits_cnn
from uqbench.backbones.dscnn import ds_cnn
from uqbench.backbones.resnet8 import resnet8
from uqbench.backbones.timm_backbone import timm_factory


def test_resnet8_matches_mlperf_tiny():
    model = resnet8(10, (3, 32, 32))
    assert count_parameters(model, fold_batchnorm=True) == 77_706
    assert count_macs(model, torch.zeros(1, 3, 32, 32)) == 12_501_632  # 12.50 M
    shapes = model.tap_shapes()
    assert shapes["mid"] == (32, 16, 16) and shapes["penultimate"] == (64, 8, 8)


def test_ds_cnn_matches_mlperf_tiny():
    model = ds_cnn(12, (1, 49, 10))
    assert count_parameters(model, fold_batchnorm=True) == 22_604
    assert count_macs(model, torch.zeros(1, 1, 49, 10)) == 2_656_768  # 2.66 M
    assert model.tap_shapes()["penultimate"] == (64, 25, 5)


def test_fold_batchnorm_counts_one_bias_per_channel():
    model = digits_cnn(10, (1, 28, 28))
    unfolded = count_parameters(model, fold_batchnorm=False)
    bn_channels = 16 + 32 + 64
    assert unfolded - count_parameters(model) == bn_channels  # weight+bias -> one bias


@pytest.mark.parametrize(
    "factory,shape",
    [
        (digits_cnn, (1, 28, 28)),
        (resnet8, (3, 32, 32)),
        (ds_cnn, (1, 49, 10)),
        (timm_factory("resnet10t"), (1, 28, 28)),
    ],
)
def test_forward_exposes_taps_in_depth_order(factory, shape):
    model = factory(num_classes=7, input_shape=shape).eval()
    x = torch.randn(3, *shape)
    out = model(x)
    assert out.logits.shape == (3, 7)
    assert list(out.taps) == list(model.tap_names)
    assert {"mid", "penultimate"} <= set(model.tap_names)
    assert model.predecessor("penultimate") == model.tap_names[-2]
    # The head reads the pooled penultimate tap: recomputing it gives the same logits.
    torch.testing.assert_close(model.forward_head(model.pool(out.taps["penultimate"])), out.logits)
    assert out.pooled.shape == (3, model.num_features)
