"""Finished runs as the leaderboards read them: their records, predictions, bootstrap samples
and stream metrics (cached under ``~/.cache/uqbench/bootstrap`` by the hash of ``scores.npz``,
so regenerating a leaderboard after one more run costs that run only), and each variant score a
run recorded as a row of its own."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from uqbench import streams
from uqbench.bootstrap import RESAMPLES, bootstrap
from uqbench.metric_table import compute_metrics
from uqbench.predictions import Predictions
from uqbench.run_folder import METRICS, PARTIAL, SCORES, atomic_write_bytes
from uqbench.stages.base_model import cache_root
from uqbench.streams import StreamResult

REFERENCE = "msp"
# Bumped when what is cached is computed differently (2: calibration_ts keeps T = 1 on a dev
# split without errors), so a leaderboard never mixes samples of two definitions.
CACHE_VERSION = 2


@dataclass(frozen=True)
class Options:
    """How the leaderboards are computed: the paired differences' reference method, the
    bootstrap resamples per run and the stream layout."""

    reference: str = REFERENCE
    resamples: int = RESAMPLES
    stream: streams.StreamSpec = field(default_factory=streams.StreamSpec)


@dataclass(frozen=True)
class RunRef:
    """One finished run: the label its row carries, its data set, seed and folder."""

    label: str
    data: str
    seed: int
    folder: Path


@dataclass
class Run:
    """A run (or one of its variant scores) as the tables and figures read it."""

    ref: RunRef
    metrics: dict[str, Any]  # metrics.json whole
    predictions: Predictions
    samples: dict[str, np.ndarray]  # bootstrap: key -> [resamples]
    stream: StreamResult | str  # the stream metrics, or why the run has none
    deploy: dict[str, dict[str, Any]] = field(default_factory=dict)  # board -> deploy.json


def check_run(folder: Path) -> str | None:
    """Why ``folder`` cannot be read as a finished run, or ``None`` if it can: ``metrics.json``
    a JSON object with its method, data and integer seed, and ``scores.npz`` readable without
    unpickling, its arrays of one length and the shapes :class:`Predictions` documents."""
    metrics, scores = folder / METRICS, folder / SCORES
    if not metrics.is_file():
        return f"{METRICS} is missing"
    if not scores.is_file():
        return f"{SCORES} is missing"
    try:
        doc = json.loads(metrics.read_text())
    except (OSError, ValueError) as exc:
        return f"{METRICS} is unreadable ({type(exc).__name__}: {exc})"
    if not isinstance(doc, dict):
        return f"{METRICS} is not a JSON object"
    for key, kind in (("method", str), ("data", str), ("seed", int), ("metrics", dict)):
        if not isinstance(doc.get(key), kind) or isinstance(doc.get(key), bool):
            return f"{METRICS} has no {kind.__name__} {key!r}"
    try:
        p = Predictions.load(scores)
    except Exception as exc:  # noqa: BLE001 - any unreadable archive is the same damage
        return f"{SCORES} is unreadable ({type(exc).__name__}: {exc})"
    n = len(p.score)
    if p.probs.ndim != 2 or p.probs.shape[0] != n or p.probs.dtype.kind != "f":
        return f"{SCORES}: probs are {p.probs.dtype} {p.probs.shape}, not float [{n}, C]"
    arrays = {"score": p.score, "label": p.label, "group": p.group, **p.variants}
    for name, values in arrays.items():
        if values.shape != (n,) or values.dtype.kind not in "iuf":
            return f"{SCORES}: {name} is {values.dtype} {values.shape}, not numbers [{n}]"
    if n and (p.group.min() < 0 or p.group.max() >= len(p.group_names)):
        return f"{SCORES}: group indices outside its {len(p.group_names)} group names"
    return None


def ref_of(folder: Path) -> RunRef:
    """The reference of a finished run folder (:func:`check_run` passed), labelled by its
    method."""
    doc = json.loads((folder / METRICS).read_text())
    return RunRef(doc["method"], doc["data"], int(doc["seed"]), folder)


def scan(root: Path) -> tuple[list[RunRef], dict[Path, str]]:
    """The finished run folders directly under ``root``, labelled by their method (of two runs
    of one (method, data, seed) the newer is kept), and the damaged ones with why
    (:func:`check_run`). Unfinished (``*.partial``) and hidden folders are never runs; a
    folder with neither ``metrics.json`` nor ``scores.npz`` is not one either (``logs/``)."""
    found: dict[tuple[str, str, int], tuple[float, RunRef]] = {}
    damaged: dict[Path, str] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name.startswith(".") or PARTIAL in folder.name:
            continue
        if not ((folder / METRICS).exists() or (folder / SCORES).exists()):
            continue
        reason = check_run(folder)
        if reason:
            damaged[folder] = reason
            continue
        ref = ref_of(folder)
        key, when = (ref.label, ref.data, ref.seed), (folder / METRICS).stat().st_mtime
        if key not in found or found[key][0] < when:
            found[key] = (when, ref)
    return [ref for _, ref in found.values()], damaged


# --------------------------------------------------------------------------- loading
def _cache(name: str) -> Path:
    """A file of the cache; ``name`` starts with the hash of the run's ``scores.npz``."""
    return cache_root() / "bootstrap" / name


def _samples(p: Predictions, key: str, resamples: int) -> dict[str, np.ndarray]:
    """The bootstrap samples of ``p``, from the cache when these scores were bootstrapped."""
    cached = _cache(f"{key}-{resamples}-v{CACHE_VERSION}.npz")
    if cached.is_file():
        with np.load(cached, allow_pickle=False) as data:
            return {name.replace("|", "/"): data[name] for name in data.files}
    samples = bootstrap(p, resamples)
    cached.parent.mkdir(parents=True, exist_ok=True)
    buffer = cached.with_name(cached.name + f".{os.getpid()}.tmp")
    with open(buffer, "wb") as handle:  # '/' is not a valid npz key: stored as '|'
        np.savez(handle, **{name.replace("/", "|"): v for name, v in samples.items()})
    buffer.replace(cached)
    return samples


def _stream(p: Predictions, key: str, options: Options) -> StreamResult | str:
    """The stream metrics of ``p`` (cached like the samples, by the stream layout too), or why
    it has none."""
    layout = f"{streams.PROTOCOL}/{options.stream!r}"
    layout = hashlib.sha256(layout.encode()).hexdigest()[:8]
    cached = _cache(f"{key}-{options.resamples}-stream-{layout}.json")
    if cached.is_file():
        doc = json.loads(cached.read_text())
        return doc if isinstance(doc, str) else StreamResult(**doc)
    try:
        result: StreamResult | str = streams.evaluate(p, options.stream, options.resamples)
    except ValueError as exc:
        result = str(exc)
    cached.parent.mkdir(parents=True, exist_ok=True)
    doc = result if isinstance(result, str) else dataclasses.asdict(result)
    atomic_write_bytes(cached, json.dumps(doc).encode())
    return result


def load(ref: RunRef, options: Options) -> list[Run]:
    """The run, then one row per variant score it recorded (``<label> (<variant>)``), each
    with the run's metrics recomputed on that score."""
    deploy = {}
    for doc_path in sorted((ref.folder / "deploy").glob("*/deploy.json")):
        deploy[doc_path.parent.name] = json.loads(doc_path.read_text())
    scores = ref.folder / SCORES
    digest = hashlib.sha256(scores.read_bytes()).hexdigest()[:20]
    predictions = Predictions.load(scores)
    doc = json.loads((ref.folder / METRICS).read_text())
    key = f"{digest}-score"
    rows = [
        Run(
            ref,
            doc,
            predictions,
            _samples(predictions, key, options.resamples),
            _stream(predictions, key, options),
            deploy,
        )
    ]
    for name in predictions.variants:
        p, key = predictions.with_score(name), f"{digest}-{name}"
        variant = dataclasses.replace(ref, label=f"{ref.label} ({name})")
        variant_doc = {
            **doc,
            "metrics": compute_metrics(p),
            "tuned": {"variant of": ref.label, "score": name},
            "tuning": None,
        }
        rows.append(
            Run(
                variant,
                variant_doc,
                p,
                _samples(p, key, options.resamples),
                _stream(p, key, options),
            )
        )
    return rows


def warm(arguments: list[str]) -> int:
    """``[resamples, folder, ...]``: load each finished run folder as a leaderboard with the
    default stream layout does, which computes and caches its bootstrap samples and stream
    metrics. A bench runs this for each finished job while its other jobs run, so its
    leaderboards read them from the cache. Returns 0 (the exit status)."""
    import torch

    torch.set_num_threads(1)  # as write_leaderboards computes them
    options = Options(resamples=int(arguments[0]))
    for folder in arguments[1:]:
        load(ref_of(Path(folder)), options)
    return 0
