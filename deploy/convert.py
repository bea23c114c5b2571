"""A trained backbone as an int8 :class:`~uqbench.deploy.graph.Graph` (input -> logits).

The backbone's inference (``forward_features`` -> ``pool`` -> ``forward_head``) is captured
with ``torch.export`` on one example, which gives ATen operators whatever the Python around
them; activation ranges are calibrated by running that graph on calibration batches (the dev
split); then each operator becomes TFLite operators:

- ``conv2d`` (+ the ``batch_norm`` it feeds, folded into its weights and bias, + a following
  ``relu`` / ``hardtanh(0, 6)``, fused) -> ``pad`` (when it pads) + ``conv2d`` or
  ``depthwise_conv2d`` (groups == channels);
- ``add`` (+ a fused ReLU) -> ``add``; ``pad`` (constant 0) -> ``pad``;
- ``mul`` by a constant tensor of the activation's shape -> ``mul`` with that constant in int8
  (per tensor, symmetric); ``uqbench::dropout`` (MC dropout's fixed mask of a site and pass)
  -> the same ``mul`` by its mask / (1 - p), the op remembering (site, pass, p) so that the
  firmware regenerates the mask instead of storing it;
- ``max_pool2d`` -> ``max_pool_2d``; ``flatten(2)`` + ``mean(-1)`` (global average pooling)
  -> ``average_pool_2d`` over the whole map + ``reshape``;
- ``linear`` -> ``fully_connected``.

Weights are int8 per output channel, activations int8 from their calibrated [min, max] (zero
included), biases int32. Anything else is refused with the operator named: a backbone this
converter cannot express is not deployable, and says why.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from uqbench.deploy.device_score import MAP
from uqbench.deploy.graph import Graph, Op, QTensor
from uqbench.deploy.int8 import QParams, activation_qparams, quantize_bias, quantize_weights

from uqbench import dropout_masks
from uqbench.errors import UQBenchError

aten = torch.ops.aten
CONV = {aten.conv2d.default}
BATCH_NORM = {aten.batch_norm.default}
RELU = {aten.relu.default, aten.relu_.default}
HARDTANH = {aten.hardtanh.default, aten.hardtanh_.default}
SKIPPED = {aten.dropout.default, aten.detach.default}
DROPOUT = torch.ops.uqbench.dropout.default  # registered by uqbench.dropout_masks


class NotDeployable(UQBenchError):
    """The network uses something the int8 export cannot express; the message says what."""


class _Outputs(nn.Module):
    """The backbone's inference as one module: input -> (logits, *taps), each tap pooled, or
    its whole map for a name ending in ``:map``."""

    def __init__(self, backbone: nn.Module, taps: tuple[str, ...]) -> None:
        super().__init__()
        self.backbone, self.taps = backbone, taps

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        b = self.backbone
        features = b.forward_features(x)
        pooled = b.pool(features["penultimate"])

        def tap(name: str) -> Tensor:
            if name.endswith(MAP):
                return features[name.removesuffix(MAP)]
            return pooled if name == "penultimate" else b.pool_tap(features[name])

        return (b.forward_head(pooled), *(tap(t) for t in self.taps))


class _Ranges(torch.fx.Interpreter):
    """Runs the exported graph and keeps each node's output [min, max] over every run."""

    def __init__(self, module: torch.fx.GraphModule) -> None:
        super().__init__(module)
        self.ranges: dict[str, tuple[float, float]] = {}

    def run_node(self, node: torch.fx.Node) -> Any:
        value = super().run_node(node)
        if isinstance(value, Tensor) and value.is_floating_point():
            low, high = float(value.min()), float(value.max())
            old = self.ranges.get(node.name, (low, high))
            self.ranges[node.name] = (min(old[0], low), max(old[1], high))
        return value


def _nhwc(shape: torch.Size) -> tuple[int, ...]:
    return (1, shape[2], shape[3], shape[1]) if len(shape) == 4 else (1, *shape[1:])


def _only_user(node: torch.fx.Node, kinds: set) -> torch.fx.Node | None:
    users = list(node.users)
    if len(users) == 1 and users[0].op == "call_function" and users[0].target in kinds:
        return users[0]
    return None


def to_graph(
    backbone: nn.Module, calibration: Iterable[Tensor], taps: tuple[str, ...] = ()
) -> Graph:
    """The int8 graph of ``backbone`` with activation ranges from ``calibration`` batches
    (float inputs [B, *input_shape], as the datamodule gives them). Its outputs: the logits,
    then each of ``taps`` globally average-pooled ([1, C_tap] int8; ``penultimate`` is the
    vector the classifier reads), each pooling scheduled as soon as its tap exists; a tap
    named ``<tap>:map`` is output whole ([1, H, W, C] int8)."""
    batches = [x.detach().float().cpu() for x in calibration]
    if not batches:
        raise ValueError("calibration needs at least one batch")
    module = _Outputs(backbone, tuple(taps)).eval().cpu()
    with torch.no_grad():
        batch = torch.export.Dim("batch", min=1)
        example = (
            batches[0][:2]
            if len(batches[0]) > 1
            else batches[0].repeat(2, *[1] * (batches[0].dim() - 1))
        )
        exported = torch.export.export(
            module, (example,), dynamic_shapes={"x": {0: batch}}
        ).module()
        recorder = _Ranges(exported)
        for x in batches:
            recorder.run(x)
    return _schedule_pooling_early(_Builder(exported, recorder.ranges).build())


def _schedule_pooling_early(graph: Graph) -> Graph:
    """Reorder the ops so that each global pooling (and its reshape) runs right after its input
    is written: a tap then need not stay in the arena until the end of the network."""
    constants = {n for n, t in graph.tensors.items() if t.data is not None}
    ready, order, remaining = set(graph.inputs) | constants, [], list(graph.ops)
    while remaining:
        runnable = [op for op in remaining if all(n in ready for n in op.inputs)]
        pick = next((op for op in runnable if op.kind in ("average_pool_2d", "reshape")), None)
        op = pick or runnable[0]
        remaining.remove(op)
        order.append(op)
        ready.update(op.outputs)
    graph.ops = order
    return graph


class _Builder:
    def __init__(self, module: torch.fx.GraphModule, ranges: dict[str, tuple[float, float]]):
        self.module, self.ranges = module, ranges
        self.graph = Graph({}, [], [], [])
        self.names: dict[str, str] = {}  # fx node -> graph tensor holding its value
        self.done: set[str] = set()

    def constant(self, node: Any) -> np.ndarray | None:
        if node is None:
            return None
        value = self.module
        for part in node.target.split("."):
            value = getattr(value, part)
        return value.detach().double().numpy()

    def activation(self, name: str, node: torch.fx.Node) -> str:
        low, high = self.ranges[node.name]
        shape = _nhwc(node.meta["val"].shape)
        return self.graph.add(QTensor(name, shape, activation_qparams(low, high)))

    def same_quant(self, name: str, source: str, shape: tuple[int, ...]) -> str:
        return self.graph.add(QTensor(name, shape, self.graph.tensors[source].qparams))

    def build(self) -> Graph:
        for node in self.module.graph.nodes:
            if node.name in self.done or node.op == "get_attr":
                continue
            if node.op == "call_module" and str(node.target).startswith("_guards"):
                continue  # torch.export's shape guards: nothing to run on the device
            if node.op == "placeholder":
                self.names[node.name] = self.activation("input", node)
                self.graph.inputs.append(self.names[node.name])
            elif node.op == "output":
                results = node.args[0]
                results = results if isinstance(results, (tuple, list)) else [results]
                self.graph.outputs += [self.names[r.name] for r in results]
            elif node.target in CONV:
                self.conv(node)
            elif node.target == aten.add.Tensor:
                self.add(node)
            elif node.target == aten.mul.Tensor:
                self.mul(node)
            elif node.target == DROPOUT:
                self.dropout(node)
            elif node.target == aten.pad.default:
                self.pad(node)
            elif node.target == aten.max_pool2d.default:
                self.max_pool(node)
            elif node.target == aten.flatten.using_ints:
                self.global_pool(node)
            elif node.target == aten.linear.default:
                self.linear(node)
            elif node.target in SKIPPED:
                self.names[node.name] = self.names[node.args[0].name]
            else:
                raise NotDeployable(
                    f"the int8 export has no operator for {node.target} (node {node.name}); "
                    f"supported: conv2d (+ batch norm, ReLU/ReLU6), add, mul by a constant, "
                    f"pad, max pool, global average pool, linear"
                )
        return self.graph

    def _fused(self, node: torch.fx.Node) -> tuple[torch.fx.Node, str]:
        """The last node of ``node`` + a fused ReLU/ReLU6, and the activation's name."""
        relu = _only_user(node, RELU)
        if relu is not None:
            self.done.add(relu.name)
            return relu, "relu"
        clamp = _only_user(node, HARDTANH)
        if clamp is not None and tuple(clamp.args[1:3]) == (0.0, 6.0):
            self.done.add(clamp.name)
            return clamp, "relu6"
        return node, "none"

    def conv(self, node: torch.fx.Node) -> None:
        defaults = [None, None, None, [1, 1], [0, 0], [1, 1], 1]  # aten.conv2d's signature
        args = list(node.args) + defaults[len(node.args) :]
        x, w_node, b_node, stride, padding, dilation, groups = args
        if list(dilation) != [1, 1]:
            raise NotDeployable(f"{node.name}: dilated convolutions are not exported")
        w = self.constant(w_node)
        b = self.constant(b_node)
        b = np.zeros(w.shape[0]) if b is None else b
        last = node
        bn = _only_user(node, BATCH_NORM)
        if bn is not None:
            gamma, beta, mean, var = (self.constant(a) for a in bn.args[1:5])
            eps = float(bn.args[7])
            scale = gamma / np.sqrt(var + eps)
            w = w * scale[:, None, None, None]
            b = (b - mean) * scale + beta
            self.done.add(bn.name)
            last = bn
        last, activation = self._fused(last)
        source = self.names[x.name]
        if any(padding):
            ph, pw = padding
            shape = self.graph.tensors[source].shape
            padded = (1, shape[1] + 2 * ph, shape[2] + 2 * pw, shape[3])
            out = self.same_quant(f"{node.name}/pad", source, padded)
            self.graph.ops.append(Op("pad", [source], [out], {"paddings": ((ph, ph), (pw, pw))}))
            source = out
        channels = self.graph.tensors[source].shape[3]
        depthwise = groups == channels and groups > 1 and w.shape[0] == channels
        if groups != 1 and not depthwise:
            raise NotDeployable(f"{node.name}: grouped convolution with {groups} groups")
        weights = w.transpose(1, 2, 3, 0) if depthwise else w.transpose(0, 2, 3, 1)  # 1HWC / OHWI
        q, params = quantize_weights(weights, 3 if depthwise else 0)
        name = node.name
        in_scale = self.graph.tensors[source].qparams.scale[0]
        self.graph.add(QTensor(f"{name}/weights", q.shape, params, data=q))
        bias = quantize_bias(b, in_scale, params.scale)
        bias_q = QParams(params.scale * in_scale, np.zeros(len(bias), np.int64))
        self.graph.add(QTensor(f"{name}/bias", bias.shape, bias_q, "int32", bias))
        out = self.activation(name, last)
        kind = "depthwise_conv2d" if depthwise else "conv2d"
        options = {"stride": tuple(stride), "activation": activation}
        self.graph.ops.append(Op(kind, [source, f"{name}/weights", f"{name}/bias"], [out], options))
        self.names[last.name] = out

    def add(self, node: torch.fx.Node) -> None:
        a, b = node.args[:2]
        if len(node.args) > 2 or node.kwargs.get("alpha", 1) != 1:
            raise NotDeployable(f"{node.name}: add with alpha")
        last, activation = self._fused(node)
        out = self.activation(node.name, last)
        inputs = [self.names[a.name], self.names[b.name]]
        self.graph.ops.append(Op("add", inputs, [out], {"activation": activation}))
        self.names[last.name] = out

    def mul(self, node: torch.fx.Node) -> None:
        a, b = node.args[:2]
        constant, x = (b, a) if getattr(b, "op", None) == "get_attr" else (a, b)
        if getattr(constant, "op", None) != "get_attr" or getattr(x, "op", None) == "get_attr":
            raise NotDeployable(f"{node.name}: only a product with one constant tensor is exported")
        self._times_constant(node, x, np.asarray(self.constant(constant)), {})

    def dropout(self, node: torch.fx.Node) -> None:
        x, site, pass_index, p = node.args[:4]
        shape = tuple(x.meta["val"].shape[1:])
        mask = dropout_masks.keep(shape, site, pass_index, p).double().numpy()
        options = {"dropout": {"site": site, "pass": pass_index, "p": p}}
        self._times_constant(node, x, mask / (1.0 - p), options)

    def _times_constant(
        self, node: torch.fx.Node, x: torch.fx.Node, value: np.ndarray, options: dict
    ) -> None:
        """``mul`` of ``x`` by the constant ``value`` ([C, H, W] or [F], as torch lays it)."""
        source = self.names[x.name]
        shape = self.graph.tensors[source].shape
        if value.ndim == 3:  # [C, H, W] -> NHWC
            value = value.transpose(1, 2, 0)
        if value.size != int(np.prod(shape[1:])):
            raise NotDeployable(f"{node.name}: a constant of another shape than its input")
        peak = float(np.abs(value).max()) or 1.0
        params = QParams.tensor(peak / 127.0, 0)
        q = np.clip(np.round(value / params.scale[0]), -127, 127).astype(np.int8)
        factor = self.graph.add(
            QTensor(f"{node.name}/factor", (1, *shape[1:]), params, data=q.reshape(1, *shape[1:]))
        )
        last, activation = self._fused(node)
        out = self.activation(node.name, last)
        options = {**options, "activation": activation}
        self.graph.ops.append(Op("mul", [source, factor], [out], options))
        self.names[last.name] = out

    def pad(self, node: torch.fx.Node) -> None:
        x, amounts = node.args[:2]
        value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value")
        mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
        if mode != "constant" or value not in (None, 0, 0.0) or len(amounts) != 4:
            raise NotDeployable(f"{node.name}: only zero padding of H and W is exported")
        left, right, top, bottom = amounts
        source = self.names[x.name]
        shape = _nhwc(node.meta["val"].shape)
        out = self.same_quant(node.name, source, shape)
        self.graph.ops.append(
            Op("pad", [source], [out], {"paddings": ((top, bottom), (left, right))})
        )
        self.names[node.name] = out

    def max_pool(self, node: torch.fx.Node) -> None:
        x, kernel = node.args[:2]
        stride = node.args[2] if len(node.args) > 2 and node.args[2] else kernel
        padding = node.args[3] if len(node.args) > 3 else [0, 0]
        if any(padding):
            raise NotDeployable(f"{node.name}: padded max pooling is not exported")
        source = self.names[x.name]
        out = self.same_quant(node.name, source, _nhwc(node.meta["val"].shape))
        options = {"filter": tuple(kernel), "stride": tuple(stride)}
        self.graph.ops.append(Op("max_pool_2d", [source], [out], options))
        self.names[node.name] = out

    def global_pool(self, node: torch.fx.Node) -> None:
        x, start = node.args[:2]
        mean = _only_user(node, {aten.mean.dim})
        if start != 2 or mean is None or list(mean.args[1]) not in ([-1], [2]):
            raise NotDeployable(f"{node.name}: flatten other than global average pooling")
        source = self.names[x.name]
        _, h, w, c = self.graph.tensors[source].shape
        pooled = self.same_quant(f"{node.name}/pool", source, (1, 1, 1, c))
        self.graph.ops.append(
            Op("average_pool_2d", [source], [pooled], {"filter": (h, w), "stride": (1, 1)})
        )
        out = self.same_quant(mean.name, source, (1, c))
        self.graph.ops.append(Op("reshape", [pooled], [out]))
        self.done.add(mean.name)
        self.names[mean.name] = out

    def linear(self, node: torch.fx.Node) -> None:
        x, w_node = node.args[:2]
        b_node = node.args[2] if len(node.args) > 2 else None
        w = self.constant(w_node)
        b = self.constant(b_node)
        b = np.zeros(w.shape[0]) if b is None else b
        source = self.names[x.name]
        if len(self.graph.tensors[source].shape) != 2:
            raise NotDeployable(f"{node.name}: linear on a spatial map (flatten order differs)")
        q, params = quantize_weights(w, 0)
        in_scale = self.graph.tensors[source].qparams.scale[0]
        self.graph.add(QTensor(f"{node.name}/weights", q.shape, params, data=q))
        bias = quantize_bias(b, in_scale, params.scale)
        bias_q = QParams(params.scale * in_scale, np.zeros(len(bias), np.int64))
        self.graph.add(QTensor(f"{node.name}/bias", bias.shape, bias_q, "int32", bias))
        last, activation = self._fused(node)
        out = self.activation(node.name, last)
        inputs = [source, f"{node.name}/weights", f"{node.name}/bias"]
        self.graph.ops.append(Op("fully_connected", inputs, [out], {"activation": activation}))
        self.names[last.name] = out


def quantize_input(graph: Graph, x: Tensor) -> np.ndarray:
    """Float inputs [B, C, H, W] (or [B, ...]) as the graph's int8 NHWC input."""
    from uqbench.deploy.int8 import quantize

    array = x.detach().cpu().double().numpy()
    if array.ndim == 4:
        array = array.transpose(0, 2, 3, 1)
    return quantize(array, graph.tensors[graph.inputs[0]].qparams)
