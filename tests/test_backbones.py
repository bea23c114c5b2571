"""Backbones: MLPerf Tiny shapes, taps and the timm adapter."""

import pytest
import torch

from uqbench.backbones.base import count_macs, count_parameters
from uqbench.backbones.digits_cnn import digits_cnn
from uqbench.backbones.dscnn import ds_cnn
from uqbench.backbones.mobilenetv2 import mobilenetv2
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


def test_mobilenetv2_is_torchvisions_with_the_64x64_strides():
    """Same layers as torchvision's mobilenet_v2(width_mult=0.5): equal parameter count; with
    the stem and the 160-channel stage at stride 1 (paper B.1), equal MACs."""
    import torchvision

    model = mobilenetv2(200, (3, 64, 64))
    reference = torchvision.models.mobilenet_v2(width_mult=0.5, num_classes=200)
    assert sum(p.numel() for p in model.parameters()) == 943_880
    assert sum(p.numel() for p in reference.parameters()) == 943_880
    reference.features[0][0].stride = (1, 1)
    reference.features[14].conv[1][0].stride = (1, 1)  # the 160-channel stage's depthwise
    x = torch.zeros(1, 3, 64, 64)
    assert count_macs(model, x) == count_macs(reference, x) == 56_139_776
    shapes = model.tap_shapes()
    assert shapes["mid"] == (32, 8, 8) and shapes["penultimate"] == (1280, 8, 8)
    assert shapes["stem"] == (16, 64, 64) and shapes["stage2"] == (16, 32, 32)


def test_ds_cnn_on_40x98_log_mel():
    model = ds_cnn(12, (1, 40, 98))
    assert model.tap_shapes()["penultimate"] == (64, 20, 49)


def test_fold_batchnorm_counts_one_bias_per_channel():
    model = digits_cnn(10, (1, 28, 28))
    unfolded = count_parameters(model, fold_batchnorm=False)
    bn_channels = 16 + 32 + 64
    assert unfolded - count_parameters(model) == bn_channels  # weight+bias -> one bias


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    "factory,shape",
    [(digits_cnn, (1, 28, 28)), (resnet8, (3, 32, 32)), (ds_cnn, (1, 40, 98))],
    ids=["digits-cnn", "resnet8", "ds-cnn"],
)
def test_a_large_eval_batch_runs_in_slices_with_the_same_bits(factory, shape, threads):
    """On the CPU in eval mode a batch larger than the backbone's slice runs in slices: logits,
    every tap and the pooled vector equal the whole batch's bit for bit, whatever the slice
    (a last slice of one example, which oneDNN computes with other kernels, joins the one
    before)."""
    torch.manual_seed(0)
    model = factory(num_classes=7, input_shape=shape)
    for module in model.modules():  # running statistics that are not the identity
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    model.eval()
    x = torch.rand(2 * model.cpu_eval_slice + 1, *shape)
    calls = []
    original = model.forward_features
    model.forward_features = lambda part: calls.append(len(part)) or original(part)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            whole = model._forward(x)
            assert calls == [len(x)]
            for size in (model.cpu_eval_slice, 2, 3, 7, 33):
                calls.clear()
                model.cpu_eval_slice = size
                sliced = model(x)
                assert sum(calls) == len(x) and min(calls) >= 2 and max(calls) <= size + 1
                assert torch.equal(sliced.logits, whole.logits), size
                assert torch.equal(sliced.pooled, whole.pooled), size
                for name in whole.taps:
                    assert torch.equal(sliced.taps[name], whole.taps[name]), (size, name)
    finally:
        torch.set_num_threads(before)
    calls.clear()
    model.train()  # batch statistics: never sliced
    model(x)
    assert calls == [len(x)]


def test_backbones_whose_kernels_depend_on_the_batch_are_not_sliced():
    """oneDNN computes MobileNetV2's depthwise layers and timm's models with kernels chosen by
    batch size: their batches run whole, so a plugin's numbers never depend on a slice."""
    for factory, shape in [(mobilenetv2, (3, 64, 64)), (timm_factory("resnet10t"), (1, 28, 28))]:
        model = factory(num_classes=7, input_shape=shape).eval()
        calls = []
        original = model.forward_features
        model.forward_features = lambda part, c=calls, f=original: c.append(len(part)) or f(part)
        with torch.no_grad():
            model(torch.rand(130, *shape))
        assert model.cpu_eval_slice is None and calls == [130]


@pytest.mark.parametrize(
    "factory,shape",
    [
        (digits_cnn, (1, 28, 28)),
        (resnet8, (3, 32, 32)),
        (ds_cnn, (1, 49, 10)),
        (mobilenetv2, (3, 64, 64)),
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
