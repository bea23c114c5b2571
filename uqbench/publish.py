"""Leaderboards from run folders: per data set, a folder with one table per task and plots.

``write_leaderboards(runs, out, command)`` writes ``<out>/<data>/README.md`` and its figures
(``<out>/<data>/*.png`` and ``.svg``) for every data set among ``runs``. Each table cell is the
mean over seeds of the run's value with its 95% bootstrap interval (:mod:`uqbench.bootstrap`:
1,000 stratified resamples per seed, the interval's ends averaged over seeds, the paper's F.5).
Differences against a reference method (``msp`` by default) are paired: both runs of a seed are
resampled on the same indices. The tables state the command, the commit, the seeds and, per
method, which splits it was fitted on and what it searched on dev, so a reader sees which
methods saw shifted data.

Bootstrap samples are cached under ``~/.cache/uqbench/bootstrap`` by the hash of the run's
``scores.npz``, so regenerating a leaderboard after one more run costs that run only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import statistics
import subprocess
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uqbench import metrics as M
from uqbench import plots, streams
from uqbench.bootstrap import RESAMPLES, bootstrap, interval, same_examples
from uqbench.leaderboard import COST_LEGEND, cost_table
from uqbench.metric_table import EvalGroups, compute_metrics, lookup, spec
from uqbench.predictions import Predictions
from uqbench.run_folder import METRICS, SCORES, atomic_write_bytes
from uqbench.stages.base_model import cache_root
from uqbench.streams import StreamResult

REFERENCE = "msp"


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
class _Run:
    ref: RunRef
    metrics: dict[str, Any]  # metrics.json whole
    predictions: Predictions
    samples: dict[str, np.ndarray]  # bootstrap: key -> [resamples]
    stream: StreamResult | str  # the stream metrics, or why the run has none
    deploy: dict[str, dict[str, Any]] = field(default_factory=dict)  # board -> deploy.json


def scan(root: Path) -> list[RunRef]:
    """Every complete run folder directly under ``root`` (``metrics.json`` and ``scores.npz``),
    labelled by its method; of two runs of one (method, data, seed) the newer is kept."""
    found: dict[tuple[str, str, int], tuple[float, RunRef]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if not ((folder / METRICS).is_file() and (folder / SCORES).is_file()):
            continue
        doc = json.loads((folder / METRICS).read_text())
        ref = RunRef(doc["method"], doc["data"], int(doc["seed"]), folder)
        key, when = (ref.label, ref.data, ref.seed), (folder / METRICS).stat().st_mtime
        if key not in found or found[key][0] < when:
            found[key] = (when, ref)
    return [ref for _, ref in found.values()]


# --------------------------------------------------------------------------- loading
def _cache_path(predictions_file: Path, what: str) -> Path:
    digest = hashlib.sha256(predictions_file.read_bytes()).hexdigest()[:20]
    return cache_root() / "bootstrap" / f"{digest}-{what}"


def _predictions(predictions_file: Path, variant: str | None) -> Predictions:
    p = Predictions.load(predictions_file)
    return p if variant is None else p.with_score(variant)


def _samples(predictions_file: Path, variant: str | None, resamples: int) -> dict[str, np.ndarray]:
    """The run's bootstrap samples, from the cache when its scores were bootstrapped before."""
    cached = _cache_path(predictions_file, f"{variant or 'score'}-{resamples}.npz")
    if cached.is_file():
        with np.load(cached, allow_pickle=False) as data:
            return {key.replace("|", "/"): data[key] for key in data.files}
    samples = bootstrap(_predictions(predictions_file, variant), resamples)
    cached.parent.mkdir(parents=True, exist_ok=True)
    buffer = cached.with_name(cached.name + f".{os.getpid()}.tmp")
    with open(buffer, "wb") as handle:  # '/' is not a valid npz key: stored as '|'
        np.savez(handle, **{key.replace("/", "|"): v for key, v in samples.items()})
    buffer.replace(cached)
    return samples


def _stream(predictions_file: Path, variant: str | None, options: Options) -> StreamResult | str:
    """The run's stream metrics (cached like the samples, by the stream layout too), or why
    it has none."""
    layout = hashlib.sha256(repr(options.stream).encode()).hexdigest()[:8]
    name = f"{variant or 'score'}-{options.resamples}-stream-{layout}.json"
    cached = _cache_path(predictions_file, name)
    if cached.is_file():
        doc = json.loads(cached.read_text())
        return doc if isinstance(doc, str) else StreamResult(**doc)
    try:
        p = _predictions(predictions_file, variant)
        result: StreamResult | str = streams.evaluate(p, options.stream, options.resamples)
    except ValueError as exc:
        result = str(exc)
    cached.parent.mkdir(parents=True, exist_ok=True)
    doc = result if isinstance(result, str) else dataclasses.asdict(result)
    atomic_write_bytes(cached, json.dumps(doc).encode())
    return result


def _load(ref: RunRef, options: Options) -> list[_Run]:
    """The run, then one row per variant score it recorded (``<label> (<variant>)``), each
    with the run's metrics recomputed on that score."""
    deploy = {}
    for doc_path in sorted((ref.folder / "deploy").glob("*/deploy.json")):
        deploy[doc_path.parent.name] = json.loads(doc_path.read_text())
    scores = ref.folder / SCORES
    predictions = Predictions.load(scores)
    doc = json.loads((ref.folder / METRICS).read_text())
    rows = [_Run(ref, doc, predictions, _samples(scores, None, options.resamples),
                 _stream(scores, None, options), deploy)]  # fmt: skip
    for name in predictions.variants:
        p = predictions.with_score(name)
        variant = dataclasses.replace(ref, label=f"{ref.label} ({name})")
        variant_doc = {
            **doc,
            "metrics": compute_metrics(p),
            "tuned": {"variant of": ref.label, "score": name},
            "tuning": None,
        }
        rows.append(_Run(variant, variant_doc, p, _samples(scores, name, options.resamples),
                         _stream(scores, name, options)))  # fmt: skip
    return rows


# --------------------------------------------------------------------------- cells
def _higher_is_better(key: str) -> bool:
    if key.startswith("id_vs_error_by_severity/"):
        return True
    return spec(key).higher_is_better


def _fmt(key: str) -> str:
    return "" if key.startswith("id_vs_error_by_severity/") else spec(key).fmt


@dataclass
class _Estimate:
    """Mean over seeds of a value and of its interval's ends (None where undefined)."""

    mean: float | None
    low: float | None
    high: float | None

    def cell(self, fmt: str = ".3f", signed: bool = False) -> str:
        if self.mean is None:
            return "-"
        sign = "+" if signed else ""
        text = f"{self.mean:{sign}{fmt}}"
        if self.low is not None:
            text += f" [{self.low:{fmt}}, {self.high:{fmt}}]"
        return text


def _mean(values: list[float]) -> float | None:
    defined = [v for v in values if v is not None and v == v]
    return statistics.mean(defined) if defined else None


def _estimate(runs: list[_Run], key: str) -> _Estimate:
    points = [lookup(r.metrics["metrics"], key) for r in runs]
    bounds = [interval(r.samples[key]) for r in runs if key in r.samples]
    return _Estimate(_mean(points), _mean([b[0] for b in bounds]), _mean([b[1] for b in bounds]))


def _difference(runs: list[_Run], reference: list[_Run], key: str) -> _Estimate:
    """Paired: per seed, the run's resampled values minus the reference's on the same indices."""
    by_seed = {r.ref.seed: r for r in reference}
    points, lows, highs = [], [], []
    for run in runs:
        base = by_seed.get(run.ref.seed)
        if base is None or key not in run.samples or key not in base.samples:
            continue
        if not same_examples(run.predictions, base.predictions):
            continue  # not the same examples: no paired difference
        a, b = lookup(run.metrics["metrics"], key), lookup(base.metrics["metrics"], key)
        if a is None or b is None:
            continue
        low, high = interval(run.samples[key] - base.samples[key])
        points.append(a - b), lows.append(low), highs.append(high)
    return _Estimate(_mean(points), _mean(lows), _mean(highs))


# --------------------------------------------------------------------------- tables
def _row(cells: list[str]) -> str:
    """A markdown table row; a '|' inside a cell (``ID ok | ID err``) is escaped."""
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _header(names: list[str]) -> list[str]:
    return [_row(names), "|" + "---|" * len(names)]


def _table(methods: dict[str, list[_Run]], columns: list[tuple[str, str]]) -> list[str]:
    """Methods x columns of ``mean [low, high]``; the best mean of each column in bold."""
    estimates = {m: [_estimate(rs, key) for _, key in columns] for m, rs in methods.items()}
    best = []
    for j, (_, key) in enumerate(columns):
        means = [e[j].mean for e in estimates.values() if e[j].mean is not None]
        pick = max if _higher_is_better(key) else min
        best.append(pick(means) if means else None)
    lines = _header(["method", *(name for name, _ in columns)])
    for method, row in estimates.items():
        cells = []
        for j, e in enumerate(row):
            text = e.cell(_fmt(columns[j][1]) or ".3f")
            cells.append(f"**{text}**" if e.mean is not None and e.mean == best[j] else text)
        lines.append(_row([method, *cells]))
    return lines


def _tasks(example: _Run) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(title, what it measures, columns) for every task this data set has."""
    m = example.metrics["metrics"]
    tasks = [
        ("Failure detection: ID ok | ID err",
         "Positives: misclassified inputs of the ID test split and of every CID set, pooled; "
         "negatives: correctly classified ones. The last column averages the AUROC over the "
         "corruption x severity sets (the paper's F.2 rule).",
         [("AUROC", "id_vs_error/auroc"), ("AUPRC", "id_vs_error/auprc"),
          ("FPR@95", "id_vs_error/fpr95")]
         + ([("AUROC, mean over CID sets", "id_vs_error_cid_mean/auroc")]
            if "id_vs_error_cid_mean" in m else [])),
    ]  # fmt: skip
    if "id_vs_error_by_severity" in m:
        severities = sorted(m["id_vs_error_by_severity"], key=int)
        tasks.append((
            "Failure detection by severity: AUROC ID ok | ID err",
            "Severity 0 is the clean ID test split; severity s pools every corruption at s.",
            [(f"sev {s}", f"id_vs_error_by_severity/{s}") for s in severities],
        ))  # fmt: skip
    if "id_vs_ood" in m:
        sets = [s for s in m["id_vs_ood"] if s != "mean"]
        tasks.append((
            "Out-of-distribution: ID ok | OOD",
            "Positives: the OOD set's inputs; negatives: correctly classified ID test inputs.",
            [(f"AUROC {s}", f"id_vs_ood/{s}/auroc") for s in sets]
            + [("AUROC mean", "id_vs_ood/mean/auroc"), ("FPR@95 mean", "id_vs_ood/mean/fpr95")],
        ))  # fmt: skip
    selective = [("AURC ID", "selective/id/aurc"), ("risk@90 ID", "selective/id/risk@90")]
    if "id+cid" in m.get("selective", {}):
        selective += [("AURC ID+CID", "selective/id+cid/aurc"),
                      ("risk@90 ID+CID", "selective/id+cid/risk@90"),
                      ("sNLL@90 ID+CID", "selective/id+cid/snll@90")]  # fmt: skip
    tasks.append((
        "Selective prediction",
        "Inputs accepted least uncertain first; risk is the error rate of the accepted.",
        selective,
    ))  # fmt: skip
    calibration = [("acc ID", "accuracy/id"), ("NLL", "calibration/nll"),
                   ("Brier", "calibration/brier"), ("ECE", "calibration/ece")]  # fmt: skip
    if "calibration_ts" in m:
        calibration.append(("ECE, T-scaled on dev", "calibration_ts/ece"))
    tasks.append(("Calibration", "On the ID test split, with each method's probabilities "
                  "(ECE: 15 equal-mass bins).", calibration))  # fmt: skip
    return tasks


HEADLINE = [
    ("ID ok vs ID err AUROC", "id_vs_error/auroc"),
    ("ID ok vs OOD AUROC (mean)", "id_vs_ood/mean/auroc"),
    ("AURC ID+CID", "selective/id+cid/aurc"),
    ("ECE", "calibration/ece"),
]


def _differences(methods: dict[str, list[_Run]], reference: str, data: str) -> list[str]:
    """The paired table against ``reference`` and one sentence per method on the first
    headline metric."""
    present = [(n, k) for n, k in HEADLINE if lookup(methods[reference][0].metrics["metrics"], k)
               is not None]  # fmt: skip
    lines = [
        f"Each cell: the method's value minus {reference}'s, mean over seeds, with the 95% "
        "interval of the paired bootstrap (both runs resampled on the same indices per seed). "
        "✓: the interval excludes zero in the method's favour, ✗: in the reference's favour.",
        "",
        *_header(["method", *(n for n, _ in present)]),
    ]
    sentences = []
    for method, runs in methods.items():
        if method == reference:
            continue
        cells = []
        for j, (name, key) in enumerate(present):
            d = _difference(runs, methods[reference], key)
            mark = ""
            if d.low is not None and (d.low > 0 or d.high < 0):
                better = (d.low > 0) == _higher_is_better(key)
                mark = " ✓" if better else " ✗"
            cells.append(d.cell(_fmt(key) or ".3f", signed=True) + mark)
            if j == 0 and d.mean is not None:
                sentences.append(_sentence(method, reference, data, name, key, d))
        lines.append(_row([method, *cells]))
    return lines + ["", *sentences]


def _sentence(method: str, reference: str, data: str, name: str, key: str, d: _Estimate) -> str:
    if d.low is None or d.low <= 0 <= d.high:
        return (f"- {method} and {reference} do not differ on {data} {name}: "
                f"{d.mean:+.3f} [{d.low:.3f}, {d.high:.3f}] includes zero.")  # fmt: skip
    better = (d.mean > 0) == _higher_is_better(key)
    verb = "beats" if better else "trails"
    low, high = (d.low, d.high) if d.mean > 0 else (-d.high, -d.low)  # the gap's magnitude
    return (f"- {method} {verb} {reference} on {data} {name} by {abs(d.mean):.3f} "
            f"[{low:.3f}, {high:.3f}].")  # fmt: skip


def _per_corruption(methods: dict[str, list[_Run]]) -> list[str]:
    """AUROC ID ok | ID err within each corruption (its severities pooled), mean over seeds."""
    first = next(iter(methods.values()))[0].predictions
    corruptions = list(dict.fromkeys(n.split("/")[1] for n in first.group_names
                                     if n.startswith("cid/")))  # fmt: skip
    if not corruptions:
        return []
    lines = _header(["method", *corruptions])
    for method, runs in methods.items():
        cells = []
        for corruption in corruptions:
            values = []
            for run in runs:
                p = run.predictions
                g = EvalGroups.of(p)
                mask = np.array([n.startswith(f"cid/{corruption}/") for n in g.names])
                values.append(M.auroc(p.score[mask], ~g.correct[mask]))
            mean = _mean(values)
            cells.append("-" if mean is None else f"{mean:.3f}")
        lines.append(_row([method, *cells]))
    return lines


def _stream_table(methods: dict[str, list[_Run]], spec: streams.StreamSpec) -> list[str]:
    """The streaming metrics per method, mean over seeds (intervals' ends averaged)."""
    lines = _header(["method", "event AUPRC", "median delay (frames)", "miss rate",
                     "FPR on clean ID at 90% recall", "abstained (budget)",
                     "accuracy of the accepted"])  # fmt: skip
    budget = spec.budget
    for method, runs in methods.items():
        results = [r.stream for r in runs if isinstance(r.stream, StreamResult)]
        if not results:
            continue
        mean = {
            f.name: _mean([getattr(r, f.name) for r in results])
            for f in dataclasses.fields(StreamResult)
            if not f.name.endswith("interval")
        }
        ends = {name: (_mean([getattr(r, name)[0] for r in results]),
                       _mean([getattr(r, name)[1] for r in results]))
                for name in ("auprc_interval", "delay_interval")}  # fmt: skip
        lines.append(_row([
            method,
            _Estimate(mean["auprc"], *ends["auprc_interval"]).cell(),
            _Estimate(mean["median_delay"], *ends["delay_interval"]).cell(".0f"),
            _Estimate(mean["miss_rate"], None, None).cell(),
            _Estimate(mean["id_fpr"], None, None).cell(),
            f"{mean['abstention']:.3f} ({budget})",
            _Estimate(mean["accepted_accuracy"], None, None).cell(),
        ]))  # fmt: skip
    return lines


def _provenance(methods: dict[str, list[_Run]]) -> list[str]:
    """Per method: the splits it was fitted on, what it searched on dev and by which objective,
    and what it chose (first seed)."""
    lines = _header(["method", "fitted on", "searched on dev (objective)",
                     "fitted values, first seed"])  # fmt: skip
    for method, runs in methods.items():
        doc = runs[0].metrics
        fitted_on = ", ".join(doc.get("fitted_on", [])) or "nothing (no fitting after training)"
        if "dev_mix" in doc.get("fitted_on", []) or "dev_shift" in doc.get("fitted_on", []):
            fitted_on += " (saw shifted data)"
        tuning = doc.get("tuning") or {}
        searched = ", ".join(tuning.get("searched", [])) or "-"
        if tuning.get("objective"):
            searched += f" ({tuning['objective']})"
        tuned = json.dumps(doc.get("tuned", {}), separators=(",", ":"))
        tuned = tuned if len(tuned) <= 120 else tuned[:117] + "..."
        lines.append(_row([method, fitted_on, searched, f"`{tuned}`"]))
    return lines


# --------------------------------------------------------------------------- figures
def _figures(methods: dict[str, list[_Run]], folder: Path, data: str,
             spec: streams.StreamSpec) -> list[tuple[str, Path]]:  # fmt: skip
    figures = []
    first = next(iter(methods.values()))[0].metrics["metrics"]
    if "id_vs_error_by_severity" in first:
        curves = {}
        for method, runs in methods.items():
            severities = sorted(first["id_vs_error_by_severity"], key=int)
            rows = [_estimate(runs, f"id_vs_error_by_severity/{s}") for s in severities]
            if all(r.mean is not None for r in rows):
                curves[method] = tuple(np.array(v, dtype=float) for v in (
                    [int(s) for s in severities], [r.mean for r in rows],
                    [r.low for r in rows], [r.high for r in rows]))  # fmt: skip
        figures.append(
            (
                "AUROC against severity",
                plots.severity_curves(
                    curves, f"{data}: failure detection by severity", folder / "auroc-by-severity"
                ),
            )
        )
    grid = np.linspace(0.01, 1, 100)
    rc, rel = {}, {}
    for method, runs in methods.items():
        risks, confs, accs = [], [], []
        for run in runs:
            p = run.predictions
            g = EvalGroups.of(p)
            keep = (g.kind == "id") | (g.kind == "cid")
            coverage, risk = M.risk_coverage_curve(p.score[keep], ~g.correct[keep])
            risks.append(np.interp(grid, coverage.numpy(), risk.numpy()))
            ids = g.kind == "id"
            confidence = p.probs[ids].max(1)
            order = np.argsort(confidence, kind="stable")
            bins = np.array_split(order, 15)
            confs.append([confidence[b].mean() for b in bins])
            accs.append([g.correct[ids][b].mean() for b in bins])
        rc[method] = (grid, np.mean(risks, 0))
        rel[method] = (np.mean(confs, 0), np.mean(accs, 0))
    figures.append(
        (
            "Risk-coverage (ID + CID)",
            plots.risk_coverage(
                rc, f"{data}: risk-coverage, ID + CID, mean over seeds", folder / "risk-coverage"
            ),
        )
    )
    figures.append(
        (
            "Reliability (ID)",
            plots.reliability(
                rel, f"{data}: reliability, 15 equal-mass bins", folder / "reliability"
            ),
        )
    )
    trace = _trace(methods, folder, data, spec)
    if trace is not None:
        figures.append(("Stream trace", trace))
    boards = sorted({b for rs in methods.values() for r in rs for b in r.deploy})
    for board in boards:
        for cost, unit, label in (("flash", "KiB", "flash"), ("latency", "ms", "latency")):
            points = {}
            for method, runs in methods.items():
                docs = [r.deploy[board] for r in runs if board in r.deploy]
                docs = [d for d in docs if d.get("deployable") and d.get("fits")]
                auroc = _mean([lookup(r.metrics["metrics"], "id_vs_error/auroc") for r in runs])
                if not docs or auroc is None:
                    continue
                x = statistics.mean(d["flash_bytes"]["total"] / 1024 if cost == "flash"
                                    else d["latency"]["estimated_ms"] for d in docs)  # fmt: skip
                points[method] = (x, auroc)
            if points:
                figures.append((f"AUROC against {label} on {board}", plots.cost_scatter(
                    points, f"{label} on {board} ({unit})", "AUROC, ID ok vs ID err",
                    f"{data}: what the uncertainty costs on {board}",
                    folder / f"auroc-vs-{cost}-{board}")))  # fmt: skip
    return figures


def _trace(methods: dict[str, list[_Run]], folder: Path, data: str,
           spec: streams.StreamSpec) -> Path | None:  # fmt: skip
    """The first test stream of the first seed: accuracy, events, every method's score."""
    runs = [rs[0] for rs in methods.values() if isinstance(rs[0].stream, StreamResult)]
    if not runs:
        return None
    dev, tests, band = streams.streams(runs[0].predictions, spec)
    test = tests[0]
    traces = {}
    for method, rs in methods.items():
        run = rs[0]
        if not isinstance(run.stream, StreamResult):
            continue
        dev_sorted = np.sort(run.predictions.score[dev.index])

        def cdf(values: np.ndarray, ref: np.ndarray = dev_sorted) -> np.ndarray:
            return np.searchsorted(ref, values, side="right") / len(ref)

        score = run.predictions.score[test.index]
        traces[method] = (cdf(score), float(cdf(np.array([run.stream.threshold]))[0]))
    accuracy = streams.windowed_accuracy(test.correct, spec.window)
    intervals = streams.events(test, band, spec.window)
    return plots.stream_trace(accuracy, band[0] - 3 * band[1], intervals, traces,
                              f"{data}: a test stream (seed {runs[0].ref.seed}), events shaded",
                              folder / "stream-trace")  # fmt: skip


# --------------------------------------------------------------------------- the writer
def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=Path(__file__).parent, timeout=10)  # fmt: skip
        return out.stdout.strip() or "unknown (not a git checkout)"
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not found)"


def write_leaderboards(
    runs: list[RunRef], out: Path, command: str, options: Options | None = None
) -> list[Path]:
    """Write ``<out>/<data>/README.md`` and its figures for each data set of ``runs``."""
    options = options or Options()
    seen: dict[tuple[str, str, int], Path] = {}
    for r in runs:
        other = seen.setdefault((r.label, r.data, r.seed), r.folder)
        if other != r.folder:
            raise ValueError(
                f"two runs of {r.label} on {r.data} with seed {r.seed}: {other} and {r.folder}; "
                "give them different labels or leave one out"
            )
    written = []
    previous = torch.get_num_threads()
    # Many small array operations: on a busy machine more threads make them many times slower
    # (measured: 3.7 ms against 0.25 ms per resample with both cores taken).
    torch.set_num_threads(1)
    try:
        for data in dict.fromkeys(r.data for r in runs):
            methods: dict[str, list[_Run]] = {}
            for ref in sorted((r for r in runs if r.data == data), key=lambda r: r.seed):
                for run in _load(ref, options):
                    methods.setdefault(run.ref.label, []).append(run)
            written.append(_write_one(methods, out / data, data, command, options))
    finally:
        torch.set_num_threads(previous)
    return written


def _write_one(methods: dict[str, list[_Run]], folder: Path, data: str, command: str,
               options: Options) -> Path:  # fmt: skip
    reference, resamples, spec = options.reference, options.resamples, options.stream
    seeds = sorted({r.ref.seed for rs in methods.values() for r in rs})
    example = next(iter(methods.values()))[0]
    lines = [
        f"# {data}: leaderboard",
        "",
        f"Generated by `{command}` at commit {_commit()} on {date.today()}, from "
        f"{sum(len(v) for v in methods.values())} run folders. Seeds: "
        f"{', '.join(map(str, seeds))}. Each cell: the mean over seeds, then the 95% interval "
        f"of a bootstrap over test examples ({resamples} resamples stratified by evaluation "
        "set, per seed, the ends averaged over seeds). Bold: the best mean of the column.",
    ]
    for title, what, columns in _tasks(example):
        lines += ["", f"## {title}", "", what, "", *_table(methods, columns)]
    per_corruption = _per_corruption(methods)
    if per_corruption:
        lines += ["", "## Failure detection per corruption: AUROC ID ok | ID err", "",
                  "Each corruption's severities pooled; mean over seeds (no interval).", "",
                  *per_corruption]  # fmt: skip
    variants = [m for m in methods if m.endswith(")") and " (" in m]
    if variants:
        lines += ["", "## What the scores are made of", "",
                  f"Rows {', '.join(variants)}: one part of the method's score alone, through "
                  "its own logistic map fitted on the same dev mix as the full score, on the "
                  "same runs (uqbench records these variant scores beside the score). "
                  "`(confidence)` is the fair control for a map that saw shifted dev data. A "
                  "softmax baseline gets no such control row: a one-feature map is monotone, "
                  "so every ranking metric stays what the baseline's own row shows."]  # fmt: skip
    stream_rows = _stream_table(methods, spec)
    if len(stream_rows) > 2:
        lines += ["", "## Streaming monitoring", "",
                  f"Streams built from each run's recorded outputs (uqbench.streams): ID "
                  f"{spec.id_frames} frames, then for each severity {spec.cid_frames} CID frames "
                  f"(corruption type cycled every {spec.cycle}) with {spec.ood_frames}-frame OOD "
                  f"bursts between severities; a dev stream and {spec.test_streams} test streams "
                  "from disjoint halves of the examples. Events: windowed accuracy (window "
                  f"{spec.window}) below the ID band's mean - 3 sd. Threshold: best event-frame "
                  "F1 on the dev stream, frozen, for the delay and miss rate; the clean-ID FPR "
                  "at the threshold reaching 90% event recall on dev; the abstention controller "
                  "on the score mapped through the dev stream's CDF. Mean over seeds and test "
                  "streams; intervals: frames resampled (AUPRC), events resampled (delay).", "",
                  *stream_rows]  # fmt: skip
    if reference in methods and len(methods) > 1:
        lines += ["", f"## Paired differences against {reference}", "",
                  *_differences(methods, reference, data)]  # fmt: skip
    boards = sorted({b for rs in methods.values() for r in rs for b in r.deploy})
    if boards:
        costs = {m: {b: [r.deploy[b] for r in rs if b in r.deploy] for b in boards}
                 for m, rs in methods.items()}  # fmt: skip
        lines += ["", "## Cost on the device", "", *COST_LEGEND, "", *cost_table(costs, boards)]
    lines += ["", "## How each method was fitted and tuned", "",
              "Fitted on: the splits the method read after training (``dev_mix`` is dev plus "
              "its shifted copy: a method that read it saw corrupted data, which MSP never "
              "does).", "", *_provenance(methods)]  # fmt: skip
    figures = _figures(methods, folder, data, spec)
    lines += ["", "## Figures", ""]
    lines += [f"![{name}]({path.name})" for name, path in figures]
    path = folder / "README.md"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path
