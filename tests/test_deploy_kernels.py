"""The DSP kernels against the reference kernels, the host int8 reference and tflite-micro, on
randomized layers: shapes, kernel sizes, strides, paddings, channel counts that are not multiples
of 4, zero points and per-channel multipliers drawn at random, left shifts, and inputs far
outside the calibrated ranges (every activation saturates somewhere)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from uqbench.deploy.boards import big_mcu, mid_mcu, small_mcu
from uqbench.deploy.codegen import generate
from uqbench.deploy.convert import quantize_input, to_graph
from uqbench.deploy.firmware import build, emulate, harness
from uqbench.deploy.int8 import QParams
from uqbench.deploy.reference import run
from uqbench.deploy.tflite import run_tflite_micro, to_tflite
from uqbench.deploy.timing import symbols

from uqbench.backbones.base import global_pool

# Ops whose output takes its input's quantization (TFLite requires it).
PASS_THROUGH = {"pad", "max_pool_2d", "average_pool_2d", "reshape"}


class _Layers(nn.Module):
    """A body of random layers with the backbone interface the converter reads."""

    def __init__(self, body: nn.Module, channels: int, classes: int) -> None:
        super().__init__()
        self.body, self.head = body, nn.Linear(channels, classes)

    def pool(self, features):
        return global_pool(features)

    def forward_features(self, x):
        return {"penultimate": self.body(x)}

    def forward_head(self, pooled):
        return self.head(pooled)


class _Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x)


def _random_body(rng: np.random.Generator) -> tuple[nn.Module, int, tuple[int, int, int]]:
    c = int(rng.choice([1, 3, 4, 5, 8]))
    h, w = int(rng.integers(6, 13)), int(rng.integers(6, 13))
    layers, channels = [], c
    for _ in range(int(rng.integers(2, 4))):
        kind = rng.choice(["conv", "depthwise", "residual"])
        k = int(rng.choice([1, 3, 5]))
        stride = int(rng.choice([1, 2])) if k > 1 else 1
        if kind == "conv":
            out = int(rng.choice([1, 3, 6, 8, 17]))
            layers.append(
                nn.Conv2d(
                    channels,
                    out,
                    (k, int(rng.choice([1, k]))),
                    stride,
                    padding=int(rng.integers(0, 2)),
                )
            )
            channels = out
        elif kind == "depthwise":
            layers.append(nn.Conv2d(channels, channels, k, stride, padding=k // 2, groups=channels))
        else:
            layers.append(_Residual(channels))
        layers.append(rng.choice([nn.ReLU(), nn.ReLU6(), nn.Identity()]))
    return nn.Sequential(*layers), channels, (c, h, w)


def _perturb(graph, rng: np.random.Generator) -> None:
    """Random scales (1/1000 to 10 times the calibrated ones: multipliers far above 1, left
    shifts) and zero points for every computed activation."""
    for op in graph.ops:
        out = graph.tensors[op.outputs[0]]
        if op.kind in PASS_THROUGH:
            out.qparams = graph.tensors[op.inputs[0]].qparams
        elif op.outputs[0] not in graph.outputs:
            scale = np.float32(out.qparams.scale[0] * 10 ** rng.uniform(-3, 1))
            out.qparams = QParams.tensor(float(scale), int(rng.integers(-128, 128)))


def _case(seed: int):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    body, channels, shape = _random_body(rng)
    net = _Layers(body, channels, int(rng.integers(2, 12))).eval()
    graph = to_graph(net, [torch.randn(8, *shape) * float(rng.uniform(0.1, 3))])
    if seed % 2:
        _perturb(graph, rng)
    # Half the inputs far outside the calibrated range: saturated at -128 / 127.
    x = torch.randn(3, *shape) * torch.tensor([1.0, 50.0, 0.2])[:, None, None, None]
    return graph, quantize_input(graph, x)


# Two seeds in the fast suite (the M4 and M7 boards), the other six with the slow tests
# (the M33 board among them).
@pytest.mark.parametrize(
    "seed", [s if s < 2 else pytest.param(s, marks=pytest.mark.slow) for s in range(8)]
)
def test_dsp_kernels_equal_the_reference_and_tflite_micro(seed, tmp_path):
    graph, x = _case(seed)
    expected = run(graph, x)[graph.outputs[0]].reshape(len(x), -1)
    theirs = run_tflite_micro(to_tflite(graph), x).reshape(expected.shape)
    np.testing.assert_array_equal(expected, theirs)
    files, _ = generate(graph)
    files["main.c"] = harness(x.reshape(len(x), -1))
    board = (small_mcu(), big_mcu(), mid_mcu())[seed % 3]
    outputs = {}
    for reference in (False, True):
        result = build(files, board, tmp_path / str(reference), reference_kernels=reference)
        outputs[reference] = emulate(result.elf, board, len(x)).outputs
        names = {name.split(".")[0] for _, _, name in symbols(result.elf)}
        # The DSP build links its own kernels; the reference build only the portable ones.
        assert ("rows_by_patches" in names) is not reference
    np.testing.assert_array_equal(outputs[False], expected)
    np.testing.assert_array_equal(outputs[True], expected)


def test_the_cases_reach_the_edges():
    """The random cases do exercise what they claim: left shifts, channel counts that are not
    multiples of 4, strides of 2, and saturated inputs."""
    from uqbench.deploy.reference import output_multipliers

    shifts, channels, strides, saturated = [], set(), set(), 0
    for seed in range(8):
        graph, x = _case(seed)
        saturated += int((np.abs(x.astype(int)) >= 127).sum())
        for op in graph.ops:
            if op.kind in ("conv2d", "depthwise_conv2d", "fully_connected"):
                tensors = [graph.tensors[name] for name in (*op.inputs[:2], op.outputs[0])]
                _, shift = output_multipliers(*tensors)
                shifts += list(np.ravel(shift))
                channels.add(graph.tensors[op.outputs[0]].shape[-1] % 4)
                strides.add(tuple(op.options.get("stride", (1, 1))))
    assert max(shifts) > 0 and min(shifts) < 0
    assert channels - {0} and (2, 2) in strides and saturated > 100


def test_patches_longer_than_the_stack_buffers_take_the_reference_path(tmp_path):
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(80, 6, 3), nn.ReLU())  # a patch of 3 x 3 x 80 = 720 > 640
    net = _Layers(body, 6, 3).eval()
    graph = to_graph(net, [torch.randn(4, 80, 5, 5)])
    x = quantize_input(graph, torch.randn(2, 80, 5, 5))
    expected = run(graph, x)[graph.outputs[0]].reshape(2, -1)
    files, _ = generate(graph)
    files["main.c"] = harness(x.reshape(2, -1))
    result = build(files, small_mcu(), tmp_path)
    emulation = emulate(result.elf, small_mcu(), 2)
    np.testing.assert_array_equal(emulation.outputs, expected)
    assert emulation.stack_bytes < 4096


@pytest.mark.parametrize("rows, k", [(1, 5), (2, 8), (3, 7), (6, 27), (5, 4)])
def test_the_dsp_weight_layout_is_a_reordering_the_kernels_read(rows, k):
    from uqbench.deploy.codegen import dsp_weight_layout

    weights = np.arange(rows * k).reshape(rows, k) % 251 - 125
    laid = dsp_weight_layout(weights)
    assert sorted(laid.tolist()) == sorted(weights.ravel().tolist())  # the same bytes
    k4 = k - k % 4
    pair = weights[:2]
    if rows >= 2 and k4:
        # Group 0 of a pair: row 0's first 4 bytes, then row 1's, then group 1 ...
        np.testing.assert_array_equal(laid[:8], np.concatenate([pair[0, :4], pair[1, :4]]))
    if rows % 2:
        np.testing.assert_array_equal(laid[-k:], weights[-1])  # an odd last row as it is


def test_the_code_generator_and_the_kernels_agree_on_the_longest_patch():
    import re

    from uqbench.deploy.codegen import C_DIR, DSP_MAX_PATCH

    source = (C_DIR / "uq_kernels_dsp.c").read_text()
    assert int(re.search(r"#define UQ_MAX_PATCH (\d+)", source).group(1)) == DSP_MAX_PATCH


def _executed_functions(elf, machine: str) -> set[str]:
    """The functions of ``elf`` that one inference executed (profiled under QEMU)."""
    import bisect

    from uqbench.deploy.timing import profile

    functions = symbols(elf)
    starts = [start for start, _, _ in functions]
    names = set()
    for item in profile(elf, machine).executed:
        i = bisect.bisect_right(starts, item.address) - 1
        if i >= 0 and item.address < functions[i][1]:
            names.add(functions[i][2].split(".")[0])
    return names


# Depthwise 3 x 3 layers for the planes path: tall maps (it slides down columns) and wide ones
# (along rows, in several bands: a 75-pixel row leaves room for 2 output rows a band), strides
# 1 and 2, odd and even lengths, clamps (ReLU6); and for the four-channel group path, a layer
# with 6 channels and rows too long for the planes' buffer (130 pixels).
_DEPTHWISE = {
    "tall": (4, 31, 8, [(4, 1, nn.ReLU()), (4, 2, nn.Identity()), (4, 1, nn.ReLU6())]),
    "wide": (8, 7, 75, [(8, 1, nn.ReLU6()), (8, 2, nn.ReLU()), (8, 1, nn.Identity())]),
    "odd channels": (6, 9, 9, [(6, 1, nn.ReLU()), (6, 2, nn.Identity())]),
    "too wide": (4, 4, 130, [(4, 1, nn.ReLU())]),
}


def _random_zero_points(graph, rng: np.random.Generator) -> None:
    """Random zero points and output scales 1 to 10 times the calibrated ones for every
    computed activation: the multipliers stay right shifts, so the planes path still runs."""
    for op in graph.ops:
        out = graph.tensors[op.outputs[0]]
        if op.kind in PASS_THROUGH:
            out.qparams = graph.tensors[op.inputs[0]].qparams
        elif op.outputs[0] not in graph.outputs:
            scale = np.float32(out.qparams.scale[0] * 10 ** rng.uniform(0, 1))
            out.qparams = QParams.tensor(float(scale), int(rng.integers(-128, 128)))


@pytest.mark.parametrize("name", sorted(_DEPTHWISE))
def test_depthwise_3x3_by_planes_is_bit_exact(name, tmp_path):
    c, h, w, spec = _DEPTHWISE[name]
    torch.manual_seed(len(name))
    layers = []
    for channels, stride, act in spec:
        layers += [nn.Conv2d(channels, channels, 3, stride, padding=1, groups=channels), act]
    net = _Layers(nn.Sequential(*layers), c, 5).eval()
    graph = to_graph(net, [torch.randn(8, c, h, w)])
    _random_zero_points(graph, np.random.default_rng(len(name)))
    scale = torch.tensor([1.0, 30.0, 0.3])[:, None, None, None]  # the middle one saturates
    x = quantize_input(graph, torch.randn(3, c, h, w) * scale)
    expected = run(graph, x)[graph.outputs[0]].reshape(len(x), -1)
    theirs = run_tflite_micro(to_tflite(graph), x).reshape(expected.shape)
    np.testing.assert_array_equal(expected, theirs)
    files, _ = generate(graph)
    files["main.c"] = harness(x.reshape(len(x), -1))
    board = small_mcu()
    result = build(files, board, tmp_path)
    np.testing.assert_array_equal(emulate(result.elf, board, len(x)).outputs, expected)
    ran = _executed_functions(result.elf, board.qemu_machine)
    linked = {name.split(".")[0] for _, _, name in symbols(result.elf)}
    if name in ("odd channels", "too wide"):  # the four-channel group loop, never the planes
        assert "dw_groups" in ran and "uq_depthwise_planes" not in linked
    else:  # only the planes path is linked: the code generator chose it for every layer
        assert {"expand_planes", "dw_plane_s1", "dw_plane_s2"} <= ran
        assert "uq_ref_depthwise" not in ran  # the kernel agreed: no fallback
        assert "dw_groups" not in linked


def test_the_code_generator_and_the_planes_kernel_agree_on_its_buffers():
    import re

    from uqbench.deploy.codegen import C_DIR, DW_PLANE_BYTES, DW_SUMS, takes_planes

    source = (C_DIR / "uq_kernels_dsp.c").read_text()
    assert int(re.search(r"#define DW_PLANE_BYTES (\d+)", source).group(1)) == DW_PLANE_BYTES
    assert int(re.search(r"#define DW_SUMS (\d+)", source).group(1)) == DW_SUMS
    right = [-7, -9]
    assert takes_planes(27, 7, 64, (3, 3), (1, 1), right)  # DS-CNN's layers
    assert not takes_planes(27, 7, 64, (3, 3), (1, 1), [-7, -1])  # a shift of -1
    assert not takes_planes(27, 7, 6, (3, 3), (1, 1), right)  # channels not in fours
    assert not takes_planes(27, 7, 64, (5, 5), (1, 1), right)
    assert not takes_planes(27, 7, 64, (3, 3), (1, 2), right)
    assert takes_planes(6, 127, 4, (3, 3), (1, 1), right)  # the longest line: 3 lines of 128
    assert not takes_planes(6, 128, 4, (3, 3), (1, 1), right)


class _Factor(nn.Module):
    """x times a constant tensor, or by MC dropout's mask of (site 1, pass 3)."""

    def __init__(self, factor: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("factor", factor)

    def forward(self, x):
        if self.factor is None:
            return torch.ops.uqbench.dropout(x, 1, 3, 0.3)
        return x * self.factor


@pytest.mark.parametrize(
    "size, dropout, kernel",
    [(6, True, "uq_mul_dropout"), (12, True, "uq_mul_dropout"), (6, False, "uq_mul")],
)  # 8 x 6 x 6 = 288 elements (computed one by one), 8 x 12 x 12 = 1,152 (by a table)
def test_a_product_with_a_constant_is_bit_exact(size, dropout, kernel, tmp_path):
    import uqbench.dropout_masks  # noqa: F401 - registers uqbench::dropout

    torch.manual_seed(size)
    g = torch.Generator().manual_seed(size)
    factor = None if dropout else torch.rand((8, size, size), generator=g) * 3 - 1
    body = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), _Factor(factor), nn.Conv2d(8, 4, 3), nn.ReLU()
    )
    net = _Layers(body, 4, 5).eval()
    graph = to_graph(net, [torch.randn(8, 3, size, size)])
    assert [op.kind for op in graph.ops].count("mul") == 1
    scale = torch.tensor([1.0, 30.0, 0.3])[:, None, None, None]
    x = quantize_input(graph, torch.randn(3, 3, size, size) * scale)
    expected = run(graph, x)[graph.outputs[0]].reshape(len(x), -1)
    theirs = run_tflite_micro(to_tflite(graph), x).reshape(expected.shape)
    np.testing.assert_array_equal(expected, theirs)
    files, _ = generate(graph)
    assert f"{kernel}(" in files["model.c"]
    files["main.c"] = harness(x.reshape(len(x), -1))
    board = small_mcu()
    result = build(files, board, tmp_path)
    np.testing.assert_array_equal(emulate(result.elf, board, len(x)).outputs, expected)
