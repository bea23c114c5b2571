"""The base-model cache: a trained classifier is stored once per (backbone, data, seed, training
configuration) and reused by every post-hoc method.

Location: ``$UQBENCH_CACHE`` if set, else ``~/.cache/uqbench``. Entries are
``base/<key>.pt`` (the backbone's state_dict, loaded with ``weights_only=True``) and
``base/<key>.json`` (what the key was made from). Writes are atomic.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import torch

from uqbench.records import atomic_write_bytes, atomic_write_json


def cache_root() -> Path:
    return Path(os.environ.get("UQBENCH_CACHE") or Path.home() / ".cache" / "uqbench")


def base_key(spec: dict[str, Any]) -> str:
    """A stable hash of everything that determines the trained base classifier."""
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def load_base(key: str) -> dict[str, torch.Tensor] | None:
    path = cache_root() / "base" / f"{key}.pt"
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def save_base(key: str, state: dict[str, torch.Tensor], spec: dict[str, Any]) -> Path:
    folder = cache_root() / "base"
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(folder / f"{key}.pt", buffer.getvalue())
    atomic_write_json(folder / f"{key}.json", spec)
    return folder / f"{key}.pt"
