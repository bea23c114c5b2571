"""Max pooling with torch's results bit for bit, faster on contiguous CPU maps.

torch's CPU ``max_pool2d`` has two kernels: one for contiguous NCHW maps, which walks each
window element by element, and a vectorized one for channels-last maps. At one thread on a
[256, 16, 28, 28] map the first took 16.4 ms, more than the 3x3 convolution before it, and
converting to channels last, pooling, and converting back took 5.8 ms (measured on the
development machine; on [64, 16, 28, 28], a training batch of digits, 4.2 against 1.0 ms).

Both kernels are the same scan (``aten/src/ATen/native/cpu/MaxPoolKernel.cpp``): an element
replaces the window's best when it is greater, or NaN; ties go to the first element in row-major
order. So the values and the indices are the same, and the gradient is torch's own backward
from those indices. Tests compare values, indices and gradients with ``F.max_pool2d`` on ties,
signed zeros, infinities and NaN, and a fit gives the same weights with either.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _ChannelsLastMaxPool(torch.autograd.Function):
    """Forward with the channels-last kernel; backward with torch's, from its indices."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, *window: Any) -> Tensor:
        channels_last = x.contiguous(memory_format=torch.channels_last)
        best, index = F.max_pool2d(channels_last, *window, return_indices=True)
        ctx.save_for_backward(x, index.contiguous())
        ctx.window = window
        return best.contiguous()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, index = ctx.saved_tensors
        grad_input = torch.ops.aten.max_pool2d_with_indices_backward(
            grad.contiguous(), x, *ctx.window, index
        )
        return (grad_input, *[None] * len(ctx.window))


def _plain_cpu_map(x: Tensor) -> bool:
    """A real float NCHW map on the CPU, outside any tracing: export sees torch's own op."""
    return (
        type(x) is torch.Tensor
        and x.device.type == "cpu"
        and x.dim() == 4
        and x.is_contiguous()
        and x.dtype in (torch.float32, torch.float64)
        and not torch.compiler.is_compiling()
        and not torch.compiler.is_exporting()
        and not torch.jit.is_tracing()
    )


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` (so isinstance checks, state dicts and exports are unchanged) that
    pools contiguous CPU maps with the channels-last kernel; anything else is torch's path."""

    def forward(self, x: Tensor) -> Tensor:
        if self.return_indices or not _plain_cpu_map(x):
            return super().forward(x)
        pair = nn.modules.utils._pair
        window = (
            list(pair(self.kernel_size)),
            list(pair(self.stride or self.kernel_size)),
            list(pair(self.padding)),
            list(pair(self.dilation)),
            self.ceil_mode,
        )
        if torch.is_grad_enabled() and x.requires_grad:
            return _ChannelsLastMaxPool.apply(x, *window)
        # No gradient wanted: the indices need not be kept.
        return F.max_pool2d(x.contiguous(memory_format=torch.channels_last), *window).contiguous()
