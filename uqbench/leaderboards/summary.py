"""Leaderboard tables from run folders: methods as rows, metrics (named by the metric table) as
columns, mean and standard deviation over seeds; and the device cost per board from each run's
``deploy.json``. Generated, never typed: ``uqbench bench`` and ``benchmarks/compare_seeds.py``
both write theirs with these functions."""

from __future__ import annotations

import statistics
from typing import Any

from uqbench.metric_table import lookup

# Paths into metrics.json, named by the metric table (uqbench/metric_table.py).
COLUMNS = [
    ("AUROC ID ok vs err", "id_vs_error/auroc"),
    ("AUROC ID ok vs OOD", "id_vs_ood/mean/auroc"),
    ("AURC ID", "selective/id/aurc"),
    ("AURC ID+CID", "selective/id+cid/aurc"),
    ("ECE", "calibration/ece"),
    ("ECE (T-scaled)", "calibration_ts/ece"),
    ("acc ID", "accuracy/id"),
    ("acc CID", "accuracy/cid_mean"),
]


def mean_and_spread(values: list[float]) -> str:
    """``mean ± standard deviation`` (0 for one value), 4 decimals below 0.01, else 3."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    digits = 4 if abs(statistics.mean(values)) < 0.01 else 3
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"


def metrics_table(rows: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Markdown rows: method -> the ``metrics`` of its runs (one per seed)."""
    lines = [
        "| method | " + " | ".join(name for name, _ in COLUMNS) + " |",
        "|" + "---|" * (len(COLUMNS) + 1),
    ]
    for method, metrics in rows.items():
        cells = []
        for _, key in COLUMNS:
            values = [lookup(m, key) for m in metrics]
            present = [v for v in values if v is not None]
            cells.append(mean_and_spread(present) if present else "-")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def cost_cell(docs: list[dict[str, Any]]) -> str:
    """Mean over seeds of one (method, board): flash / peak RAM / latency, each with the
    uncertainty extras over BASE in brackets; or OOM, or not deployable."""
    first = docs[0]
    if not first["deployable"]:
        return "not deployable"
    if not first["fits"]:
        return (
            "OOM (" + ", ".join(f"{r} +{b / 1024:.1f} KiB" for r, b in first["oom"].items()) + ")"
        )
    flash = statistics.mean(d["flash_bytes"]["total"] for d in docs) / 1024
    extra = statistics.mean(d["flash_bytes"]["uncertainty_extras"] for d in docs) / 1024
    ram = statistics.mean(d["ram_bytes"]["peak"] for d in docs) / 1024
    ram_extra = statistics.mean(d["ram_bytes"]["uncertainty_extras"] for d in docs) / 1024
    ms = statistics.mean(d["latency"]["estimated_ms"] for d in docs)
    ms_extra = statistics.mean(d["latency"]["uncertainty_extras_ms"] for d in docs)
    return (
        f"{flash:.1f} KiB ({extra:+.1f}) / {ram:.1f} KiB ({ram_extra:+.1f}) / "
        f"{ms:.0f} ms ({ms_extra:+.1f})"
    )


COST_LEGEND = [
    "Flash / peak RAM (static data + stack high-water mark) / latency, each with the",
    "uncertainty extras over BASE (one backbone without a score) in brackets. Latency is",
    "estimated from the executed instruction mix, counted under QEMU and weighted by the",
    "core's documented instruction timings (uqbench.deploy.timing; flash wait states and",
    "caches not modelled). Mean over seeds. The project's DSP kernels (SMLAD) on both cores;",
    "the score in float32 on the FPU.",
]


def cost_table(rows: dict[str, dict[str, list[dict[str, Any]]]], boards: list[str]) -> list[str]:
    """Markdown rows: method -> board -> the ``deploy.json`` of its runs."""
    lines = ["| method | " + " | ".join(boards) + " |", "|" + "---|" * (len(boards) + 1)]
    for method, per_board in rows.items():
        cells = [cost_cell(per_board[b]) if per_board.get(b) else "-" for b in boards]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


COMPONENTS_LEGEND = [
    "Each method's extras over BASE split by component (mean over seeds): its networks' (tap",
    "outputs and their pooling, or the other members / passes) and its score's (code and libm,",
    "of which the constants; the declared scratch in RAM). Instructions executed per inference.",
]


def components_table(rows: dict[str, dict[str, list[dict[str, Any]]]], board: str) -> list[str]:
    """Markdown rows for ``board``: method -> the extras of its runs by component (from each
    ``deploy.json``'s ``extras_by_component``); runs without the split are left out."""
    lines = [
        "| method | networks: flash | networks: instructions | score: flash (constants) "
        "| score: scratch | score: instructions |",
        "|---|---|---|---|---|---|",
    ]
    for method, per_board in rows.items():
        docs = [d for d in per_board.get(board, []) if d.get("fits") and "extras_by_component" in d]
        if not docs:
            continue
        parts = [d["extras_by_component"] for d in docs]

        def mean(path: tuple[str, str], parts: list[dict[str, Any]] = parts) -> float:
            return statistics.mean(p[path[0]][path[1]] for p in parts)

        lines.append(
            f"| {method} | {mean(('networks', 'flash_bytes')):+,.0f} B "
            f"| {mean(('networks', 'instructions')):+,.0f} "
            f"| {mean(('score', 'flash_bytes')):+,.0f} B "
            f"({mean(('score', 'constants_flash_bytes')):,.0f} B) "
            f"| {mean(('score', 'scratch_ram_bytes')):,.0f} B "
            f"| {mean(('score', 'instructions')):+,.0f} |"
        )
    return lines
