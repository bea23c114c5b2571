"""Poisson draws for rates that take few values: inversion started from a guide table.

Shot noise draws Poisson(photons * x) for every value x of a batch. ``torch.poisson`` samples
one element at a time (about 45 ns each here), the slowest single step of the engine. Images
stored with 8 bits take at most 256 values, so their rates take at most 256 values too, and
inversion is cheaper: with U uniform in [0, 1) and F the CDF of the element's rate,

    K = min { k : F(k) > U }

has exactly the Poisson distribution. :class:`PoissonTable` holds F for each rate (from
``scipy.special.pdtr``, exact to float64 rounding) up to where it rounds to 1, and a guide table
(Chen & Asau, 1974): for each rate and each j < G, the smallest k with F(k) > j / G. Starting
from the guide entry of floor(U G) the answer is at most a few steps up, and for most elements
none, so a draw costs a uniform, two table lookups and a comparison.

The draws are Poisson up to the float64 rounding of F and U (relative 2^-53).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import scipy.special
import torch
from torch import Tensor

GUIDE = 2048  # guide entries per rate: most draws need no step beyond their entry
CHUNK = 1 << 17  # elements per pass: the working set stays in cache


class PoissonTable:
    """Inverse-CDF sampler for Poisson(``rates[level]``), ``rates`` [L] (float64, >= 0)."""

    def __init__(self, rates: Tensor) -> None:
        rates = rates.double().cpu()
        if rates.ndim != 1 or bool((rates < 0).any()):
            raise ValueError("rates must be a 1-D tensor of non-negative values")
        # Row by row up to 12 standard deviations past the rate (+30 for small rates), where
        # the tail is below 1e-26 and F is 1 in float64; 1 beyond.
        reach = (rates + 12 * rates.sqrt() + 30).long()
        row = torch.repeat_interleave(torch.arange(len(rates)), reach)
        k = torch.arange(len(row)) - torch.repeat_interleave(reach.cumsum(0) - reach, reach)
        cdf = torch.ones(len(rates), int(reach.max()), dtype=torch.float64)
        cdf[row, k] = torch.from_numpy(scipy.special.pdtr(k.numpy(), rates[row].numpy()))
        cdf[:, -1] = 1.0  # the search always ends inside the row
        width = int((cdf < 1.0).sum(1).max()) + 1  # columns up to the first exact 1 of any row
        self.cdf = cdf[:, :width].contiguous()  # [L, width]
        self.width = width
        # guide[l, j] = #{k : F(k) <= j / G} = #{k : ceil(F(k) G) <= j} (G a power of two:
        # exact), a cumulative count of the columns' ceil(F G).
        rows = torch.arange(len(rates))[:, None] * (GUIDE + 1)  # each row's own G + 1 bins
        bins = torch.ceil(self.cdf * GUIDE).long().add_(rows)
        counts = torch.bincount(bins.view(-1), minlength=len(rates) * (GUIDE + 1))
        guide = counts.view(len(rates), GUIDE + 1).cumsum(1)[:, :GUIDE]
        self.guide = guide.to(torch.int32).reshape(-1)  # [L * GUIDE]
        self.flat_cdf = self.cdf.reshape(-1)

    def sample(self, levels: Tensor, uniform: Callable[[int], Tensor]) -> Tensor:
        """Poisson(``rates[levels]``) per element of the int32 ``levels``, any shape; returns
        int32 counts of that shape. ``uniform(n)`` gives n float64 uniforms in [0, 1): it is
        called chunk by chunk in element order (the numbers of one batch-sized draw, without a
        batch-sized float64 buffer)."""
        draws = torch.empty(levels.shape, dtype=torch.int32)
        if draws.numel() == 0:
            return draws
        flat_levels, flat_draws = levels.reshape(-1), draws.view(-1)
        late, late_u = [], []  # elements whose answer lies past their guide entry, their u
        for start in range(0, len(flat_levels), CHUNK):
            part = slice(start, start + CHUNK)
            u = uniform(len(flat_levels[part]))
            behind = self._guess(flat_levels[part], u, flat_draws[part])
            late.append(behind + start)
            late_u.append(u.index_select(0, behind))
        self._step_up(flat_levels, flat_draws, torch.cat(late), torch.cat(late_u))
        return draws

    def _guess(self, levels: Tensor, u: Tensor, out: Tensor) -> Tensor:
        """Writes each element's guide entry to ``out``; returns the (chunk) indices whose
        answer is further up."""
        key = (u * GUIDE).to(torch.int32).add_(levels * GUIDE)
        torch.index_select(self.guide, 0, key, out=out)
        at = (levels * self.width).add_(out)
        return (self.flat_cdf.index_select(0, at) <= u).nonzero().squeeze(1)

    def _step_up(self, levels: Tensor, draws: Tensor, late: Tensor, u: Tensor) -> None:
        """One step up at a time for the ``late`` elements (their uniforms ``u``) until
        F(k) > u."""
        while len(late):
            draws.index_add_(0, late, torch.ones(len(late), dtype=torch.int32))
            at = levels.index_select(0, late) * self.width + draws.index_select(0, late)
            still = self.flat_cdf.index_select(0, at) <= u
            late, u = late[still], u[still]


@functools.lru_cache(maxsize=32)
def lattice_table(photons: float, steps: int = 255) -> PoissonTable:
    """The table for rates ``photons * k / steps``, k = 0..steps (8-bit images: steps 255)."""
    return PoissonTable(torch.arange(steps + 1, dtype=torch.float64) * photons / steps)


def lattice_levels(x: Tensor, steps: int = 255) -> Tensor | None:
    """int32 k in [0, steps] with x == k / steps (float32) everywhere, or None if any value is
    off that lattice. Checked chunk by chunk, without a batch-sized float copy."""
    flat = x.detach().reshape(-1).float().cpu()
    levels = torch.empty(flat.shape, dtype=torch.int32)
    for start in range(0, len(flat), CHUNK):
        part = flat[start : start + CHUNK]
        k = part * steps
        k.round_()
        low, high = torch.aminmax(k)
        if low < 0 or high > steps or not torch.equal(k / steps, part):
            return None
        levels[start : start + CHUNK] = k
    return levels.view(x.shape)
