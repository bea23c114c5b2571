"""A recorded pass: one eval-mode pass of the backbone over a split, stacked.

It keeps what the record-scored methods of a group ask for (:class:`TapRequest`): logits, the
pooled penultimate vector, taps pooled to ``[N, C]`` and (only if asked) whole feature maps.
Every such method fits and scores from it (``output(recorded.out)``), so a group of seven
post-hoc methods costs about one pass per split, not seven. A method must give the same output
from a recorded pass as from its own forward pass: the record is just the backbone's output.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from uqbench.backbones.base import Backbone, BackboneOutput


@dataclass(frozen=True)
class TapRequest:
    """What a method reads beyond logits and pooled: ``taps`` pooled to [N, C], ``maps`` whole."""

    taps: frozenset[str] = frozenset()
    maps: frozenset[str] = frozenset()

    def __or__(self, other: TapRequest) -> TapRequest:
        return TapRequest(self.taps | other.taps, self.maps | other.maps)

    @classmethod
    def of(cls, methods: Iterable[Any]) -> TapRequest:
        """What a group of methods reads, together."""
        request = cls()
        for method in methods:
            request = request | method.record_request()
        return request


@dataclass
class RecordedPass:
    """A split's pass: ``out`` (logits [N, C], pooled [N, D], requested taps) and ``labels``."""

    out: BackboneOutput
    labels: Tensor

    @property
    def errors(self) -> Tensor:
        """0/1 misclassification indicators [N] (float64): the ID ok | ID err positives."""
        return (self.out.logits.argmax(-1) != self.labels).to(torch.float64)


EVAL_BATCH = 512


def device_batches(dataset: Dataset, device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
    """Batches ``(x, y)`` of ``dataset`` in a fixed order, moved to ``device``."""
    for x, y in DataLoader(dataset, batch_size=EVAL_BATCH):
        yield x.to(device), y.to(device)


@torch.no_grad()
def record_pass(
    backbone: Backbone, batches: Iterable[tuple[Tensor, Tensor]], request: TapRequest
) -> RecordedPass:
    """One eval-mode pass of ``backbone`` over ``batches`` (already on its device)."""
    backbone.eval()
    logits, pooled, labels = [], [], []
    taps: dict[str, list[Tensor]] = {name: [] for name in request.taps | request.maps}
    for x, y in batches:
        out = backbone(x)
        logits.append(out.logits)
        pooled.append(out.pooled)
        labels.append(y)
        for name in taps:
            value = out.taps[name]
            taps[name].append(value if name in request.maps else backbone.pool_tap(value))
    stacked = {name: torch.cat(values) for name, values in taps.items()}
    return RecordedPass(
        BackboneOutput(torch.cat(logits), stacked, torch.cat(pooled)), torch.cat(labels)
    )
