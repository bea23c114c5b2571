"""Dropout masks from a counter-based generator: MC dropout's N fixed passes, the same on the host
and on a microcontroller.

Element ``i`` of site ``site`` in pass ``k`` is kept when ``mix(i * GOLDEN + stream(site, k)) <
threshold(p)``, all in 32-bit unsigned arithmetic: ``mix`` is a 32-bit integer hash
(xor-shift-multiply, the "lowbias32" constants), ``stream`` mixes the seed, the site and the pass,
and ``i`` is the element's index in the site's output in NCHW order (channel, row, column; a
vector's own index). A mask is thus a pure function of (seed, site, pass, element): the float
method, the int8 host reference and the firmware (``uq_mul_dropout`` in
``deploy/c/uq_kernels.c``, which recomputes it instead of storing it) draw exactly the same
one, the first n passes of N are the passes of n, and no example or batch changes it.

The torch implementation keeps every product below 2^63 (32-bit values times 16-bit halves), so
it is exact on every device.
"""

from __future__ import annotations

import torch
from torch import Tensor

SEED = 0
GOLDEN = 0x9E3779B9
MASK32 = 0xFFFFFFFF
_M1, _M2 = 0x7FEB352D, 0x846CA68B


def _mul(x: Tensor | int, c: int) -> Tensor | int:
    """x * c mod 2^32 for x in [0, 2^32) (int64 tensor or int), c < 2^32."""
    low, high = c & 0xFFFF, c >> 16
    return (x * low + ((x * high) & 0xFFFF) * 65536) & MASK32


def mix(x: Tensor | int) -> Tensor | int:
    """The 32-bit hash (x: values in [0, 2^32))."""
    x = x ^ (x >> 16)
    x = _mul(x, _M1)
    x = x ^ (x >> 15)
    x = _mul(x, _M2)
    return x ^ (x >> 16)


def stream(site: int, pass_index: int, seed: int = SEED) -> int:
    """The offset of (site, pass): every pair its own sequence."""
    return mix((seed * 0x85EBCA77 + site * 0xC2B2AE3D + pass_index * 0x27D4EB2F + 1) & MASK32)


def threshold(p: float) -> int:
    """Keep an element when its hash is below this: probability 1 - p (to 2^-32)."""
    if not 0 <= p < 1:
        raise ValueError(f"p must be in [0, 1), got {p}")
    return min(MASK32, round((1.0 - p) * 2**32))


def keep(shape: tuple[int, ...], site: int, pass_index: int, p: float) -> Tensor:
    """The 0/1 float mask of ``shape`` (a site's output without the batch, NCHW order)."""
    index = torch.arange(int(torch.Size(shape).numel()), dtype=torch.int64)
    hashed = mix((_mul(index, GOLDEN) + stream(site, pass_index)) & MASK32)
    return (hashed < threshold(p)).reshape(shape).float()


@torch.library.custom_op("uqbench::dropout", mutates_args=())
def dropout(x: Tensor, site: int, pass_index: int, p: float) -> Tensor:
    """x * mask / (1 - p) with the mask of (site, pass) (shared by every example of the batch).
    An operator of its own so that an exported network keeps it as one node: the int8 converter
    reads its site, pass and rate and the firmware regenerates the mask."""
    mask = keep(tuple(x.shape[1:]), site, pass_index, p).to(x.device)
    return x * mask / (1.0 - p)


@dropout.register_fake
def _(x: Tensor, site: int, pass_index: int, p: float) -> Tensor:
    return torch.empty_like(x)
