"""Every first-party backbone as an int8 graph: the host reference equals the tflite-micro
interpreter on the exported .tflite bit for bit, and the int8 logits track the float ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from uqbench.deploy.convert import NotDeployable, quantize_input, to_graph
from uqbench.deploy.int8 import dequantize
from uqbench.deploy.reference import run
from uqbench.deploy.tflite import run_tflite_micro, to_tflite

from uqbench.backbones.base import Backbone
from uqbench.backbones.digits_cnn import digits_cnn
from uqbench.backbones.dscnn import ds_cnn
from uqbench.backbones.mobilenetv2 import mobilenetv2
from uqbench.backbones.resnet8 import resnet8

BACKBONES = [
    (digits_cnn, (1, 28, 28)),
    (resnet8, (3, 32, 32)),
    (ds_cnn, (1, 49, 10)),
    (ds_cnn, (1, 40, 98)),
    (mobilenetv2, (3, 64, 64)),
]


def _trained_like(factory, shape):
    """A backbone whose batch-norm statistics are not the identity."""
    torch.manual_seed(0)
    net = factory(10, shape)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(16, *shape) * 1.5 + 0.3)
    return net.eval()


@pytest.mark.parametrize("factory,shape", BACKBONES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_backbone_int8_is_bit_exact_with_tflite_micro(factory, shape):
    net = _trained_like(factory, shape)
    graph = to_graph(net, [torch.randn(32, *shape) for _ in range(2)])
    x = torch.randn(6, *shape)
    q = quantize_input(graph, x)
    ours = run(graph, q)[graph.outputs[0]]
    theirs = run_tflite_micro(to_tflite(graph), q).reshape(ours.shape)
    np.testing.assert_array_equal(ours, theirs)
    with torch.no_grad():
        real = net(x).logits.numpy()
    approx = dequantize(ours, graph.tensors[graph.outputs[0]].qparams)
    assert np.corrcoef(approx.ravel(), real.ravel())[0, 1] > 0.99
    kinds = {op.kind for op in graph.ops}
    assert "fully_connected" in kinds and "average_pool_2d" in kinds


class _Gelu(Backbone):
    tap_names = ("mid", "penultimate")

    def __init__(self) -> None:
        super().__init__()
        self.num_classes, self.input_shape, self.num_features = 3, (1, 8, 8), 4
        self.conv = nn.Conv2d(1, 4, 3)
        self.head = nn.Linear(4, 3)

    def forward_features(self, x):
        h = nn.functional.gelu(self.conv(x))
        return {"mid": h, "penultimate": h}

    def forward_head(self, pooled):
        return self.head(pooled)


def test_an_operator_without_an_int8_form_is_named():
    with pytest.raises(NotDeployable, match="no operator for aten.gelu"):
        to_graph(_Gelu().eval(), [torch.randn(4, 1, 8, 8)])
