"""The base-model stage: the plain classifier every ``needs.base`` method starts from.

It is trained once per (backbone, data, seed, training configuration, device type) and cached;
every later run with the same key loads it. Location: ``$UQBENCH_CACHE`` if set, else
``~/.cache/uqbench``. Entries are ``base/<key>.pt`` (the backbone's state_dict, loaded with
``weights_only=True``) and ``base/<key>.json`` (what the key was made from). Writes are atomic;
an entry that cannot be read (truncated, empty) is set aside as ``<key>.pt.corrupt-<time>`` and
retrained, or refused with the fix when ``train_base=false``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from uqbench.errors import ConfigError
from uqbench.random_state import kept_random_state
from uqbench.run_folder import atomic_write_bytes, atomic_write_json
from uqbench.stages.resolve import Resolved


def cache_root() -> Path:
    return Path(os.environ.get("UQBENCH_CACHE") or Path.home() / ".cache" / "uqbench")


def training_config(resolved: Resolved) -> dict[str, Any]:
    """The base class's training options (lr, optimizer, ...) from the method's arguments."""
    from uqbench.config import schema
    from uqbench.method import UQMethod

    keys = schema(UQMethod, skip=("backbone",))
    return {k: resolved.method_args.get(k, p.default) for k, p in keys.items()}


def base_spec(resolved: Resolved, device: torch.device) -> dict[str, Any]:
    """What determines a trained base classifier."""
    return {
        "backbone": resolved.backbone,
        "backbone_args": resolved.backbone_args,
        "data": resolved.config.data,
        "data_args": resolved.data_args,
        "seed": resolved.config.seed,
        "training": training_config(resolved),
        "trainer": resolved.trainer_args,
        "device_type": device.type,
        "torch": torch.__version__,
    }


def base_key(spec: dict[str, Any]) -> str:
    """A stable hash of everything that determines the trained base classifier."""
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def check_cache() -> None:
    """The base-model cache can be written: checked before any training, so a run never trains
    for minutes and then fails to store what it trained."""
    folder = cache_root() / "base"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ConfigError(
            f"the base-model cache {folder} cannot be written ({exc.strerror or exc}); point "
            f"UQBENCH_CACHE at a writable folder"
        ) from None


def load_base(key: str, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """The cached state for ``key``; None if absent, unreadable or not a state of the backbone
    whose ``state_dict`` is ``expected`` (same keys, same shapes): such an entry is set aside,
    and said."""
    path = cache_root() / "base" / f"{key}.pt"
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not state:
            raise ValueError("not a state_dict")
        _check_matches(state, expected)
        return state
    except Exception as exc:  # noqa: BLE001 - any unusable entry is handled the same way
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        os.replace(path, aside)
        print(
            f"uqbench: cached base model {path} is unusable ({type(exc).__name__}: "
            f"{str(exc)[:200]}); moved it to {aside.name} and will train it again",
            file=sys.stderr,
        )
        return None


def _check_matches(state: dict[str, Any], expected: dict[str, torch.Tensor]) -> None:
    if set(state) != set(expected):
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        raise ValueError(f"not this backbone's state (missing {missing[:3]}, extra {extra[:3]})")
    for name, tensor in expected.items():
        if not isinstance(state[name], torch.Tensor) or state[name].shape != tensor.shape:
            raise ValueError(
                f"{name} has shape {getattr(state[name], 'shape', None)}, not {tuple(tensor.shape)}"
            )


def save_base(key: str, state: dict[str, torch.Tensor], spec: dict[str, Any]) -> Path:
    folder = cache_root() / "base"
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state.items()}, buffer)
    atomic_write_bytes(folder / f"{key}.pt", buffer.getvalue())
    atomic_write_json(folder / f"{key}.json", spec)
    return folder / f"{key}.pt"


def is_cached_key(key: str) -> bool:
    """Whether the base classifier of ``key`` (:func:`base_key`) is in the cache."""
    return (cache_root() / "base" / f"{key}.pt").is_file()


def is_cached(resolved: Resolved, device: torch.device) -> bool:
    """Whether a base classifier for ``resolved`` on ``device`` is in the cache."""
    return is_cached_key(base_key(base_spec(resolved, device)))


def prepare_base(
    resolved: Resolved,
    backbone: torch.nn.Module,
    fit: Callable[[Any], None],
    device: torch.device,
) -> dict[str, Any]:
    """Load the cached base classifier into ``backbone``, or train it with ``fit`` and cache it.

    ``fit(module)`` trains a LightningModule. Returns what the report says about the base.
    """
    from uqbench.method import BaseClassifier

    spec = base_spec(resolved, device)
    key = base_key(spec)
    state = load_base(key, backbone.state_dict())
    if state is None and not resolved.config.train_base:
        raise ConfigError(
            f"no usable cached base model for this backbone, data, seed and training config "
            f"(key {key} in {cache_root() / 'base'}) and train_base=false; set "
            f"train_base=true to train it, or change the settings to those of a cached run"
        )
    if state is None:
        # The generators come back as they were before training: the run then draws what it
        # would draw with this base loaded from the cache (its numbers never depend on it).
        with kept_random_state(device):
            fit(BaseClassifier(backbone, **training_config(resolved)))
        save_base(key, backbone.state_dict(), spec)
    else:
        backbone.load_state_dict(state)
    return {"base_key": key, "base_reused": state is not None}
