"""The faster max pooling equals torch's bit for bit: values, gradients, and what export sees."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from uqbench.backbones.pooling import MaxPool2d

WINDOWS = [
    {"kernel_size": 2},
    {"kernel_size": 3, "stride": 2, "padding": 1},
    {"kernel_size": 2, "ceil_mode": True},
    {"kernel_size": 3, "stride": 1, "dilation": 2},
]


def _hard_map(generator: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    """Small integers (ties in most windows) with signed zeros, infinities and NaN."""
    x = torch.randint(-2, 3, shape, generator=generator).float()
    u = torch.rand(shape, generator=generator)
    x[u < 0.05] = -0.0
    x[(u >= 0.05) & (u < 0.08)] = float("-inf")
    x[(u >= 0.08) & (u < 0.10)] = float("nan")
    x[(u >= 0.10) & (u < 0.12)] = float("inf")
    return x


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32)  # NaN == NaN and -0.0 != 0.0 here


@pytest.mark.parametrize("window", WINDOWS, ids=lambda w: "-".join(f"{k}{v}" for k, v in w.items()))
def test_values_and_gradients_equal_torch_bit_for_bit(window: dict) -> None:
    generator = torch.Generator().manual_seed(0)
    pool = MaxPool2d(**window)
    for _ in range(60):
        height, width = (int(v) for v in torch.randint(5, 12, (2,), generator=generator))
        x = _hard_map(generator, (3, 4, height, width))
        ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
        pooled, expected = pool(ours), F.max_pool2d(theirs, **window)
        assert torch.equal(_bits(pooled), _bits(expected))
        grad = _hard_map(generator, tuple(expected.shape)).nan_to_num(0.0, 0.0, 0.0)
        pooled.backward(grad)
        expected.backward(grad)
        assert torch.equal(_bits(ours.grad), _bits(theirs.grad))
        with torch.no_grad():  # the path that keeps no indices
            assert torch.equal(_bits(pool(x)), _bits(F.max_pool2d(x, **window)))


def test_a_training_step_through_it_equals_one_through_torch() -> None:
    torch.manual_seed(3)
    layers = [torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU()]
    ours = torch.nn.Sequential(*layers, MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(64, 3))
    theirs = torch.nn.Sequential(
        *layers, torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(64, 3)
    )
    theirs.load_state_dict(ours.state_dict())
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    for net in (ours, theirs):
        torch.nn.functional.cross_entropy(net(x), y).backward()
    assert all(
        torch.equal(a.grad, b.grad)
        for a, b in zip(ours.parameters(), theirs.parameters(), strict=True)
    )


def test_export_sees_torchs_own_operator() -> None:
    exported = torch.export.export(MaxPool2d(2), (torch.randn(1, 2, 4, 4),))
    targets = {node.target for node in exported.graph.nodes if node.op == "call_function"}
    assert torch.ops.aten.max_pool2d.default in targets


def test_other_maps_take_torchs_path() -> None:
    pool = MaxPool2d(2, return_indices=True)
    values, indices = pool(torch.randn(1, 1, 4, 4))
    assert values.shape == indices.shape == (1, 1, 2, 2)
    strided = torch.randn(1, 2, 8, 8)[:, :, ::2, ::2]  # not contiguous
    assert torch.equal(MaxPool2d(2)(strided), F.max_pool2d(strided, 2))
