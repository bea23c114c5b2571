"""The global random generators (Python's, NumPy's, torch's), saved and restored around work
that must not move them: what a run draws afterwards is then the same whether that work ran
(a base classifier trained here) or not (the same classifier loaded from the cache)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


@contextmanager
def kept_random_state(device: torch.device | None = None) -> Iterator[None]:
    """Restore every global generator on exit: Python's, NumPy's, torch's CPU generator and,
    for a CUDA ``device``, that device's."""
    cuda = [device.index or 0] if device is not None and device.type == "cuda" else []
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=cuda):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
