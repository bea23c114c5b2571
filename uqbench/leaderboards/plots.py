"""The leaderboards' figures, each written as PNG and SVG (matplotlib, no display needed).

Every function takes the numbers to draw, one entry per method (the method's label first), and
a path without suffix; it writes ``<path>.png`` and ``<path>.svg`` and returns the PNG's path.
The numbers come from :mod:`uqbench.leaderboards.figures`; nothing here reads a run folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

Series = dict[str, tuple[np.ndarray, np.ndarray]]  # label -> (x, y)


def _figure(width: float = 6.4, height: float = 4.2):
    import matplotlib

    matplotlib.use("Agg")  # files only, whatever the environment's default backend
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), layout="constrained")


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path.with_suffix(".png"), dpi=120)
    fig.savefig(path.with_suffix(".svg"))
    plt.close(fig)
    return path.with_suffix(".png")


def _legend(ax) -> None:
    ax.legend(fontsize=7, ncol=2, frameon=False)


def severity_curves(
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    title: str,
    path: Path,
) -> Path:
    """AUROC (ID ok vs ID err) against corruption severity (0 = clean ID), one line per method
    with its 95% bootstrap interval as error bars: label -> (severities, mean, low, high)."""
    fig, ax = _figure()
    for label, (x, mean, low, high) in curves.items():
        ax.errorbar(x, mean, yerr=[mean - low, high - mean], marker="o", ms=3, capsize=2,
                    label=label)  # fmt: skip
    ax.set(xlabel="severity (0 = clean ID test)", ylabel="AUROC, ID ok vs ID err", title=title)
    ax.set_xticks(sorted({int(v) for c in curves.values() for v in c[0]}))
    _legend(ax)
    return _save(fig, path)


def risk_coverage(curves: Series, title: str, path: Path) -> Path:
    """Selective risk against coverage (examples accepted least uncertain first)."""
    fig, ax = _figure()
    for label, (coverage, risk) in curves.items():
        ax.plot(coverage, risk, label=label, lw=1.2)
    ax.set(xlabel="coverage", ylabel="selective risk (error rate of the accepted)", title=title)
    ax.set_xlim(0, 1)
    _legend(ax)
    return _save(fig, path)


def reliability(curves: Series, title: str, path: Path) -> Path:
    """Accuracy against confidence per equal-mass bin; the diagonal is perfect calibration."""
    fig, ax = _figure(5.2, 5.0)
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--", label="calibrated")
    for label, (confidence, accuracy) in curves.items():
        ax.plot(confidence, accuracy, marker="o", ms=3, lw=1.0, label=label)
    ax.set(xlabel="confidence (max probability), bin mean", ylabel="accuracy, bin mean",
           title=title, xlim=(0, 1), ylim=(0, 1))  # fmt: skip
    _legend(ax)
    return _save(fig, path)


def cost_scatter(points: dict[str, tuple[float, float]], xlabel: str, ylabel: str, title: str,
                 path: Path) -> Path:  # fmt: skip
    """One point per method: its device cost (x) against a metric (y), labelled."""
    fig, ax = _figure()
    for label, (x, y) in points.items():
        ax.scatter([x], [y], s=18)
        ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    return _save(fig, path)


def stream_trace(
    accuracy: np.ndarray,
    band_floor: float,
    events: list[tuple[int, int]],
    traces: dict[str, tuple[np.ndarray, float]],
    title: str,
    path: Path,
) -> Path:
    """A stream over time: the windowed accuracy against the ID band's floor (top), then each
    method's score on [0, 1] (the dev stream's CDF) with its frozen threshold; events shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = 1 + len(traces)
    fig, axes = plt.subplots(rows, 1, figsize=(8.0, 1.1 * rows + 0.8), sharex=True,
                             layout="constrained")  # fmt: skip
    axes = np.atleast_1d(axes)
    frames = np.arange(len(accuracy))
    axes[0].plot(frames, accuracy, lw=0.8, color="black")
    axes[0].axhline(band_floor, color="tab:red", lw=0.8, ls="--")
    axes[0].set_ylabel("window acc.", fontsize=7)
    axes[0].set_title(title, fontsize=9)
    for ax, (label, (score, threshold)) in zip(axes[1:], traces.items(), strict=True):
        ax.plot(frames, score, lw=0.4, rasterized=True)  # 10^4 points a row: keep the SVG small
        ax.axhline(threshold, color="tab:red", lw=0.8, ls="--")
        ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
        ax.set_ylim(0, 1)
    for ax in axes:
        for on, off in events:
            ax.axvspan(on, off, color="tab:orange", alpha=0.25, lw=0)
        ax.tick_params(labelsize=6)
    axes[-1].set_xlabel("frame (ID, then CID severities 1-5 with OOD bursts between)")
    return _save(fig, path)
