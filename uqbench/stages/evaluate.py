"""The evaluation stage: every method over dev and every evaluation set, on the run's device.

Record-scored methods (``needs.scores_from == "record"``) of a group share one recorded pass of
their backbone per set; the others run their own forward pass. Per-example predictions come
back to the CPU only to be written. With a terminal attached, a progress line says which set is
being evaluated and how many remain.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset

from uqbench.datamodule import UQDataModule
from uqbench.method import UQMethod
from uqbench.predictions import Predictions, chunk
from uqbench.recorded_pass import TapRequest, device_batches, record_pass


def _sets(datamodule: UQDataModule) -> Iterator[tuple[str, Dataset]]:
    yield "dev", datamodule.dev_set
    for eval_set in datamodule.eval_sets():
        yield eval_set.name, eval_set.dataset


def _progress(index: int, total: int, name: str) -> None:
    if sys.stderr.isatty():
        end = "\n" if index == total else ""
        print(f"\revaluating {index}/{total}: {name:<40}", end=end, file=sys.stderr, flush=True)


@torch.no_grad()
def evaluate(
    methods: list[UQMethod], datamodule: UQDataModule, device: torch.device
) -> dict[int, Predictions]:
    """``id(method)`` -> its predictions over ``dev`` and every evaluation set."""
    shared = [m for m in methods if m.needs.scores_from == "record"]
    request = TapRequest.of(shared)
    parts: dict[int, list[tuple[Any, ...]]] = {id(m): [] for m in methods}
    names: list[str] = []
    total = datamodule.eval_set_count() + 1
    for method in methods:
        method.check_calibrated()
        method.eval()
    for index, (name, dataset) in enumerate(_sets(datamodule)):
        _progress(index + 1, total, name)
        names.append(name)
        if shared:
            recorded = record_pass(shared[0].backbone, device_batches(dataset, device), request)
            for method in shared:
                out = method.output(recorded.out)
                parts[id(method)].append(chunk(method, out, recorded.labels, index))
        for method in methods:
            if method in shared:
                continue
            for x, y in device_batches(dataset, device):
                parts[id(method)].append(chunk(method, method(x), y, index))
    return {key: Predictions.from_chunks(chunks, names) for key, chunks in parts.items()}
