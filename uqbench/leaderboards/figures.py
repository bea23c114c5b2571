"""The leaderboards' figures from loaded runs (drawn by :mod:`uqbench.leaderboards.plots`):
each function returns ``(name, PNG path)`` pairs, none when its data is absent."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from uqbench import metrics as M
from uqbench import streams
from uqbench.leaderboards import plots
from uqbench.leaderboards.runs import Run
from uqbench.leaderboards.tables import estimate
from uqbench.metric_table import EvalGroups
from uqbench.streams import StreamResult

Figures = list[tuple[str, Path]]
RELIABILITY_BINS = 15


def figures(
    methods: dict[str, list[Run]], folder: Path, data: str, spec: streams.StreamSpec
) -> Figures:
    """Every figure of a data set's leaderboard, in the order the README shows them."""
    return [
        *_severity(methods, folder, data),
        *_selective(methods, folder, data),
        *_trace(methods, folder, data, spec),
        *_costs(methods, folder, data),
    ]


def _severity(methods: dict[str, list[Run]], folder: Path, data: str) -> Figures:
    """AUROC ID ok | ID err against severity, with the intervals (the paper's Figure 2)."""
    first = next(iter(methods.values()))[0].metrics["metrics"]
    if "id_vs_error_by_severity" not in first:
        return []
    severities = sorted(first["id_vs_error_by_severity"], key=int)
    curves = {}
    for method, runs in methods.items():
        rows = [estimate(runs, f"id_vs_error_by_severity/{s}") for s in severities]
        if all(r.mean is not None for r in rows):
            curves[method] = tuple(
                np.array(v, dtype=float)
                for v in (
                    [int(s) for s in severities],
                    [r.mean for r in rows],
                    [r.low for r in rows],
                    [r.high for r in rows],
                )
            )
    title = f"{data}: failure detection by severity"
    return [
        (
            "AUROC against severity",
            plots.severity_curves(curves, title, folder / "auroc-by-severity"),
        )
    ]


def _selective(methods: dict[str, list[Run]], folder: Path, data: str) -> Figures:
    """Risk-coverage on ID + CID and reliability on ID, each the mean over seeds."""
    grid = np.linspace(0.01, 1, 100)
    risk_curves, reliability = {}, {}
    for method, runs in methods.items():
        risks, confidences, accuracies = [], [], []
        for run in runs:
            p, g = run.predictions, EvalGroups.of(run.predictions)
            keep = (g.kind == "id") | (g.kind == "cid")
            coverage, risk = M.risk_coverage_curve(p.score[keep], ~g.correct[keep])
            risks.append(np.interp(grid, coverage.numpy(), risk.numpy()))
            ids = g.kind == "id"
            confidence, correct = p.probs[ids].max(1), g.correct[ids]
            bins = np.array_split(np.argsort(confidence, kind="stable"), RELIABILITY_BINS)
            confidences.append([confidence[b].mean() for b in bins])
            accuracies.append([correct[b].mean() for b in bins])
        risk_curves[method] = (grid, np.mean(risks, 0))
        reliability[method] = (np.mean(confidences, 0), np.mean(accuracies, 0))
    return [
        (
            "Risk-coverage (ID + CID)",
            plots.risk_coverage(
                risk_curves,
                f"{data}: risk-coverage, ID + CID, mean over seeds",
                folder / "risk-coverage",
            ),
        ),
        (
            "Reliability (ID)",
            plots.reliability(
                reliability,
                f"{data}: reliability, {RELIABILITY_BINS} equal-mass bins",
                folder / "reliability",
            ),
        ),
    ]


def _trace(
    methods: dict[str, list[Run]], folder: Path, data: str, spec: streams.StreamSpec
) -> Figures:
    """The first test stream of the first seed: accuracy, events, every method's score on
    the dev stream's CDF with its frozen threshold."""
    with_streams = {m: rs[0] for m, rs in methods.items() if isinstance(rs[0].stream, StreamResult)}
    if not with_streams:
        return []
    first = next(iter(with_streams.values()))
    dev, tests, band = streams.streams(first.predictions, spec)
    test = tests[0]
    traces = {}
    for method, run in with_streams.items():
        dev_sorted = np.sort(run.predictions.score[dev.index])
        score = streams.dev_cdf(dev_sorted, run.predictions.score[test.index])
        threshold = float(streams.dev_cdf(dev_sorted, np.array([run.stream.threshold]))[0])
        traces[method] = (score, threshold)
    accuracy = streams.windowed_accuracy(test.correct, spec.window)
    intervals = streams.events(test, band, spec.window)
    title = f"{data}: a test stream (seed {first.ref.seed}), events shaded"
    floor = band[0] - 3 * band[1]
    path = plots.stream_trace(accuracy, floor, intervals, traces, title, folder / "stream-trace")
    return [("Stream trace", path)]


def _costs(methods: dict[str, list[Run]], folder: Path, data: str) -> Figures:
    """AUROC ID ok | ID err (with its interval) against flash and against latency, per board;
    the methods that do not deploy or do not fit are named with the reason."""
    out: Figures = []
    boards = sorted({b for rs in methods.values() for r in rs for b in r.deploy})
    for board in boards:
        for cost, unit in (("flash", "KiB"), ("latency", "ms")):
            points, absent = {}, {}
            for method, runs in methods.items():
                if method.split(" (")[0] in methods and " (" in method:
                    continue  # a variant score of a method (SNAP-UQ's parts): not deployed alone
                docs = [r.deploy[board] for r in runs if board in r.deploy]
                fitting = [d for d in docs if d.get("deployable") and d.get("fits")]
                auroc = estimate(runs, "id_vs_error/auroc")
                if not docs:
                    absent[method] = "not deployed"
                elif not fitting:
                    absent[method] = _why_absent(docs[0])
                elif auroc.mean is not None:
                    x = [
                        d["flash_bytes"]["total"] / 1024
                        if cost == "flash"
                        else d["latency"]["estimated_ms"]
                        for d in fitting
                    ]
                    low = auroc.low if auroc.low is not None else auroc.mean
                    high = auroc.high if auroc.high is not None else auroc.mean
                    points[method] = (statistics.mean(x), auroc.mean, low, high)
            if points:
                out.append(
                    (
                        f"AUROC against {cost} on {board}",
                        plots.cost_scatter(
                            points,
                            absent,
                            f"{cost} on {board} ({unit})",
                            "AUROC, ID ok vs ID err (95% interval)",
                            f"{data}: what the uncertainty costs on {board}",
                            folder / f"auroc-vs-{cost}-{board}",
                        ),
                    )
                )
    return out


def _why_absent(doc: dict) -> str:
    if not doc.get("deployable"):
        reason = str(doc.get("reason", "no device form"))
        return "not deployable: " + (reason[:60] + "..." if len(reason) > 60 else reason)
    return "OOM: " + ", ".join(f"{r} +{b / 1024:.0f} KiB" for r, b in doc.get("oom", {}).items())
