"""The leaderboards' figures, each written as PNG and SVG (matplotlib, no display needed).

Every function takes the numbers to draw, one entry per method (the method's label first), and
a path without suffix; it writes ``<path>.png`` and ``<path>.svg`` and returns the PNG's path.
The numbers come from :mod:`uqbench.leaderboards.figures`; nothing here reads a run folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from uqbench.leaderboards.styles import style

Series = dict[str, tuple[np.ndarray, np.ndarray]]  # label -> (x, y)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, whatever the environment's default backend
    import matplotlib.pyplot as plt

    return plt


def _figure(width: float = 6.4, height: float = 4.2):
    return _pyplot().subplots(figsize=(width, height), layout="constrained")


def _save(fig, path: Path) -> Path:
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path.with_suffix(".png"), dpi=120)
    # Each save would lay the figure out again (constrained layout measures every label, about
    # a third of a save); the SVG keeps the layout the PNG's save computed, in inches.
    fig.set_layout_engine("none")
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
        color, marker = style(label)
        ax.errorbar(
            x,
            mean,
            yerr=[mean - low, high - mean],
            marker=marker,
            ms=3,
            capsize=2,
            color=color,
            label=label,
        )
    ax.set(xlabel="severity (0 = clean ID test)", ylabel="AUROC, ID ok vs ID err", title=title)
    ax.set_xticks(sorted({int(v) for c in curves.values() for v in c[0]}))
    _legend(ax)
    return _save(fig, path)


def risk_coverage(curves: Series, title: str, path: Path) -> Path:
    """Selective risk against coverage (examples accepted least uncertain first)."""
    fig, ax = _figure()
    for label, (coverage, risk) in curves.items():
        color, marker = style(label)
        ax.plot(coverage, risk, label=label, lw=1.2, color=color, marker=marker, markevery=10, ms=3)
    ax.set(xlabel="coverage", ylabel="selective risk (error rate of the accepted)", title=title)
    ax.set_xlim(0, 1)
    _legend(ax)
    return _save(fig, path)


def reliability(curves: Series, title: str, path: Path) -> Path:
    """Accuracy against confidence per equal-mass bin, one small panel per method (so no curve
    hides another), zoomed to the occupied range; the diagonal is perfect calibration."""
    columns = min(4, len(curves))
    rows = -(-len(curves) // columns)
    # Zoomed to the occupied range (an accurate classifier's bins all sit near 1), the same
    # for every panel, from a multiple of 0.1.
    low = min(float(np.min(np.r_[c, a])) for c, a in curves.values())
    low = max(0.0, np.floor(low * 10) / 10)
    fig, axes = _pyplot().subplots(
        rows,
        columns,
        figsize=(2.1 * columns, 2.1 * rows + 0.4),
        sharex=True,
        sharey=True,
        layout="constrained",
        squeeze=False,
    )
    for ax, (label, (confidence, accuracy)) in zip(axes.flat, curves.items(), strict=False):
        color, marker = style(label)
        ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
        ax.plot(confidence, accuracy, marker=marker, ms=2.5, lw=1.0, color=color)
        ax.set_title(label, fontsize=8)
        ax.set(xlim=(low, 1), ylim=(low, 1))
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(curves) :]:
        ax.set_visible(False)
    fig.supxlabel("confidence (max probability), bin mean", fontsize=8)
    fig.supylabel("accuracy, bin mean", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def cost_scatter(
    points: dict[str, tuple[float, float, float, float]],
    absent: dict[str, str],
    xlabel: str,
    ylabel: str,
    title: str,
    path: Path,
) -> Path:
    """One point per method: its device cost (x) against a metric (y) with the metric's 95%
    interval (label -> (x, mean, low, high)); the Pareto front (no other method is both
    cheaper and better) joined by a line; the methods without a point named with the reason
    (label -> reason)."""
    fig, ax = _figure(6.4, 4.6)
    for label, (x, mean, low, high) in points.items():
        color, marker = style(label)
        ax.errorbar(
            [x],
            [mean],
            yerr=[[mean - low], [high - mean]],
            color=color,
            marker=marker,
            ms=5,
            capsize=2,
            lw=0.8,
        )
        ax.annotate(label, (x, mean), fontsize=7, xytext=(4, 3), textcoords="offset points")
    front = pareto_front({label: (x, mean) for label, (x, mean, _, _) in points.items()})
    if len(front) > 1:
        xs, ys = zip(*(points[label][:2] for label in front), strict=True)
        ax.step(xs, ys, where="post", color="0.5", lw=0.8, ls=":", label="Pareto front")
        ax.legend(fontsize=7, frameon=False, loc="lower right")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if absent:  # below the axes, inside the layout (so it never covers the axis label)
        text = "not shown: " + "; ".join(f"{k} ({v})" for k, v in absent.items())
        fig.supxlabel(text, fontsize=6, wrap=True)
    return _save(fig, path)


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """The labels no other point beats on both cost (x, lower is better) and metric (y, higher
    is better), by increasing cost."""
    order = sorted(points, key=lambda k: (points[k][0], -points[k][1]))
    front, best = [], -np.inf
    for label in order:
        if points[label][1] > best:
            front.append(label)
            best = points[label][1]
    return front


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
    plt = _pyplot()
    rows = 1 + len(traces)
    fig, axes = plt.subplots(
        rows, 1, figsize=(8.0, 1.1 * rows + 0.8), sharex=True, layout="constrained"
    )
    axes = np.atleast_1d(axes)
    frames = np.arange(len(accuracy))
    axes[0].plot(frames, accuracy, lw=0.8, color="black")
    axes[0].axhline(band_floor, color="tab:red", lw=0.8, ls="--")
    axes[0].set_ylabel("window acc.", fontsize=7)
    axes[0].set_title(title, fontsize=9)
    for ax, (label, (score, threshold)) in zip(axes[1:], traces.items(), strict=True):
        # 10^4 points a row: rasterized to keep the SVG small
        ax.plot(frames, score, lw=0.4, rasterized=True, color=style(label)[0])
        ax.axhline(threshold, color="tab:red", lw=0.8, ls="--")
        ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
        ax.set_ylim(0, 1)
    for ax in axes:
        for on, off in events:
            ax.axvspan(on, off, color="tab:orange", alpha=0.25, lw=0)
        ax.tick_params(labelsize=6)
    axes[-1].set_xlabel("frame (ID, then CID severities 1-5 with OOD bursts between)")
    return _save(fig, path)
