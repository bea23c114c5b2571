"""The leaderboards' figures from loaded runs (drawn by :mod:`uqbench.leaderboards.plots`)."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from uqbench import metrics as M
from uqbench import streams
from uqbench.leaderboards import plots
from uqbench.leaderboards.runs import Run
from uqbench.leaderboards.tables import estimate, mean_defined
from uqbench.metric_table import EvalGroups, lookup
from uqbench.streams import StreamResult


# --------------------------------------------------------------------------- figures
def figures(methods: dict[str, list[Run]], folder: Path, data: str,
             spec: streams.StreamSpec) -> list[tuple[str, Path]]:  # fmt: skip
    figures = []
    first = next(iter(methods.values()))[0].metrics["metrics"]
    if "id_vs_error_by_severity" in first:
        curves = {}
        for method, runs in methods.items():
            severities = sorted(first["id_vs_error_by_severity"], key=int)
            rows = [estimate(runs, f"id_vs_error_by_severity/{s}") for s in severities]
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
                values = [lookup(r.metrics["metrics"], "id_vs_error/auroc") for r in runs]
                auroc = mean_defined(values)
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


def _trace(methods: dict[str, list[Run]], folder: Path, data: str,
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
