"""The leaderboards' markdown tables: per task, each cell the mean over seeds with the mean of
the per-seed 95% bootstrap intervals; paired differences against a reference; per-corruption
AUROC; streams; how each method was fitted."""

from __future__ import annotations

import dataclasses
import json
import statistics
from dataclasses import dataclass

import numpy as np

from uqbench import metrics as M
from uqbench import streams
from uqbench.bootstrap import interval, same_examples
from uqbench.leaderboards.runs import Run
from uqbench.metric_table import EvalGroups, lookup, spec
from uqbench.predictions import Predictions
from uqbench.streams import StreamResult

# --------------------------------------------------------------------------- cells
BY_SEVERITY = "id_vs_error_by_severity/"  # AUROCs keyed by severity: not rows of the table


def _higher_is_better(key: str) -> bool:
    return True if key.startswith(BY_SEVERITY) else spec(key).higher_is_better


def _fmt(key: str) -> str:
    return ".3f" if key.startswith(BY_SEVERITY) else spec(key).fmt


@dataclass
class Estimate:
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


def mean_defined(values: list[float]) -> float | None:
    defined = [v for v in values if v is not None and v == v]
    return statistics.mean(defined) if defined else None


def estimate(runs: list[Run], key: str) -> Estimate:
    points = [lookup(r.metrics["metrics"], key) for r in runs]
    bounds = [interval(r.samples[key]) for r in runs if key in r.samples]
    lows, highs = [b[0] for b in bounds], [b[1] for b in bounds]
    return Estimate(mean_defined(points), mean_defined(lows), mean_defined(highs))


def _difference(runs: list[Run], reference: list[Run], key: str) -> Estimate:
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
    return Estimate(mean_defined(points), mean_defined(lows), mean_defined(highs))


# --------------------------------------------------------------------------- tables
def _row(cells: list[str]) -> str:
    """A markdown table row; a '|' inside a cell (``ID ok | ID err``) is escaped."""
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _header(names: list[str]) -> list[str]:
    return [_row(names), "|" + "---|" * len(names)]


def table(methods: dict[str, list[Run]], columns: list[tuple[str, str]]) -> list[str]:
    """Methods x columns of ``mean [low, high]``; the best mean of each column in bold."""
    estimates = {m: [estimate(rs, key) for _, key in columns] for m, rs in methods.items()}
    best = []
    for j, (_, key) in enumerate(columns):
        means = [e[j].mean for e in estimates.values() if e[j].mean is not None]
        pick = max if _higher_is_better(key) else min
        best.append(pick(means) if means else None)
    lines = _header(["method", *(name for name, _ in columns)])
    for method, row in estimates.items():
        cells = []
        for j, e in enumerate(row):
            text = e.cell(_fmt(columns[j][1]))
            cells.append(f"**{text}**" if e.mean is not None and e.mean == best[j] else text)
        lines.append(_row([method, *cells]))
    return lines


def tasks(example: Run) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(title, what it measures, columns) for every task this data set has."""
    m = example.metrics["metrics"]
    tasks = [
        (
            "Failure detection: ID ok | ID err",
            "Positives: misclassified inputs of the ID test split and of every CID set, pooled; "
            "negatives: correctly classified ones. The last column averages the AUROC over the "
            "corruption x severity sets (the paper's F.2 rule).",
            [
                ("AUROC", "id_vs_error/auroc"),
                ("AUPRC", "id_vs_error/auprc"),
                ("FPR@95", "id_vs_error/fpr95"),
            ]
            + (
                [("AUROC, mean over CID sets", "id_vs_error_cid_mean/auroc")]
                if "id_vs_error_cid_mean" in m
                else []
            ),
        ),
    ]
    if "id_vs_error_by_severity" in m:
        severities = sorted(m["id_vs_error_by_severity"], key=int)
        tasks.append(
            (
                "Failure detection by severity: AUROC ID ok | ID err",
                "Severity 0 is the clean ID test split; severity s pools every corruption at s.",
                [(f"sev {s}", f"id_vs_error_by_severity/{s}") for s in severities],
            )
        )
    if "id_vs_ood" in m:
        sets = [s for s in m["id_vs_ood"] if s != "mean"]
        tasks.append(
            (
                "Out-of-distribution: ID ok | OOD",
                "Positives: the OOD set's inputs; negatives: correctly classified ID test inputs.",
                [(f"AUROC {s}", f"id_vs_ood/{s}/auroc") for s in sets]
                + [("AUROC mean", "id_vs_ood/mean/auroc"), ("FPR@95 mean", "id_vs_ood/mean/fpr95")],
            )
        )
    selective = [("AURC ID", "selective/id/aurc"), ("risk@90 ID", "selective/id/risk@90")]
    if "id+cid" in m.get("selective", {}):
        selective += [
            ("AURC ID+CID", "selective/id+cid/aurc"),
            ("risk@90 ID+CID", "selective/id+cid/risk@90"),
            ("sNLL@90 ID+CID", "selective/id+cid/snll@90"),
        ]
    tasks.append(
        (
            "Selective prediction",
            "Inputs accepted least uncertain first; risk is the error rate of the accepted.",
            selective,
        )
    )
    calibration = [
        ("acc ID", "accuracy/id"),
        ("NLL", "calibration/nll"),
        ("Brier", "calibration/brier"),
        ("ECE", "calibration/ece"),
    ]
    if "calibration_ts" in m:
        calibration.append(("ECE, T-scaled on dev", "calibration_ts/ece"))
    tasks.append(
        (
            "Calibration",
            "On the ID test split, with each method's probabilities (ECE: 15 equal-mass bins).",
            calibration,
        )
    )
    return tasks


HEADLINE = [
    ("ID ok vs ID err AUROC", "id_vs_error/auroc"),
    ("ID ok vs OOD AUROC (mean)", "id_vs_ood/mean/auroc"),
    ("AURC ID+CID", "selective/id+cid/aurc"),
    ("ECE", "calibration/ece"),
]


def differences(methods: dict[str, list[Run]], reference: str, data: str) -> list[str]:
    """The paired table against ``reference`` and one sentence per method on the first
    headline metric."""
    present = [
        (n, k)
        for n, k in HEADLINE
        if lookup(methods[reference][0].metrics["metrics"], k) is not None
    ]
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
            cells.append(d.cell(_fmt(key), signed=True) + mark)
            if j == 0 and d.mean is not None:
                sentences.append(_sentence(method, reference, data, name, key, d))
        lines.append(_row([method, *cells]))
    return lines + ["", *sentences]


def _sentence(method: str, reference: str, data: str, name: str, key: str, d: Estimate) -> str:
    if d.low is None or d.low <= 0 <= d.high:
        return (
            f"- {method} and {reference} do not differ on {data} {name}: "
            f"{d.mean:+.3f} [{d.low:.3f}, {d.high:.3f}] includes zero."
        )
    better = (d.mean > 0) == _higher_is_better(key)
    verb = "beats" if better else "trails"
    low, high = (d.low, d.high) if d.mean > 0 else (-d.high, -d.low)  # the gap's magnitude
    return (
        f"- {method} {verb} {reference} on {data} {name} by {abs(d.mean):.3f} "
        f"[{low:.3f}, {high:.3f}]."
    )


def _cid_aurocs(p: Predictions) -> dict[str, float]:
    """AUROC ID ok | ID err within each CID set (``<corruption>/<severity>``) and within each
    corruption, its severities pooled (``<corruption>``)."""
    g = EvalGroups.of(p)
    errors = ~g.correct
    out: dict[str, float] = {}
    for name in (n for n in p.group_names if n.startswith("cid/")):
        corruption = name.split("/")[1]
        if corruption not in out:
            pooled = np.char.startswith(g.names.astype(str), f"cid/{corruption}/")
            out[corruption] = M.auroc(p.score[pooled], errors[pooled])
        member = g.names == name
        out[name.removeprefix("cid/")] = M.auroc(p.score[member], errors[member])
    return out


def per_corruption(methods: dict[str, list[Run]]) -> tuple[list[str], list[str]]:
    """(a table of AUROC ID ok | ID err per corruption, severities pooled; one table per
    corruption with a column per severity), each cell the mean over seeds."""
    first = next(iter(methods.values()))[0].predictions
    sets = [n.removeprefix("cid/") for n in first.group_names if n.startswith("cid/")]
    corruptions = list(dict.fromkeys(n.split("/")[0] for n in sets))
    if not corruptions:
        return [], []
    aurocs = {m: [_cid_aurocs(r.predictions) for r in runs] for m, runs in methods.items()}

    def cell(method: str, key: str) -> str:
        mean = mean_defined([a.get(key) for a in aurocs[method]])
        return "-" if mean is None else f"{mean:.3f}"

    pooled = _header(["method", *corruptions])
    pooled += [_row([m, *(cell(m, c) for c in corruptions)]) for m in methods]
    by_severity = []
    for corruption in corruptions:
        severities = [n.split("/")[1] for n in sets if n.startswith(f"{corruption}/")]
        by_severity += [
            "",
            f"**{corruption}**",
            "",
            *_header(["method", *(f"sev {s}" for s in severities)]),
        ]
        by_severity += [
            _row([m, *(cell(m, f"{corruption}/{s}") for s in severities)]) for m in methods
        ]
    return pooled, by_severity


def stream_table(methods: dict[str, list[Run]], spec: streams.StreamSpec) -> list[str]:
    """The streaming metrics per method, mean over seeds (intervals' ends averaged)."""
    lines = _header(
        [
            "method",
            "event AUPRC",
            "median delay (frames)",
            "miss rate",
            "FPR on clean ID at 90% recall",
            "abstained (budget)",
            "accuracy of the accepted",
        ]
    )
    budget = spec.budget
    for method, runs in methods.items():
        results = [r.stream for r in runs if isinstance(r.stream, StreamResult)]
        if not results:
            continue
        mean = {
            f.name: mean_defined([getattr(r, f.name) for r in results])
            for f in dataclasses.fields(StreamResult)
            if not f.name.endswith("interval")
        }
        ends = {
            name: (
                mean_defined([getattr(r, name)[0] for r in results]),
                mean_defined([getattr(r, name)[1] for r in results]),
            )
            for name in ("auprc_interval", "delay_interval")
        }
        lines.append(
            _row(
                [
                    method,
                    Estimate(mean["auprc"], *ends["auprc_interval"]).cell(),
                    Estimate(mean["median_delay"], *ends["delay_interval"]).cell(".0f"),
                    Estimate(mean["miss_rate"], None, None).cell(),
                    Estimate(mean["id_fpr"], None, None).cell(),
                    f"{mean['abstention']:.3f} ({budget})",
                    Estimate(mean["accepted_accuracy"], None, None).cell(),
                ]
            )
        )
    return lines


def provenance(methods: dict[str, list[Run]]) -> list[str]:
    """Per method: the splits it was fitted on, what it searched on dev and by which objective,
    and what it chose (first seed)."""
    lines = _header(
        ["method", "fitted on", "searched on dev (objective)", "fitted values, first seed"]
    )
    for method, runs in methods.items():
        doc = runs[0].metrics
        splits = doc.get("fitted_on")
        if splits is None:  # a run from before metrics.json recorded it
            fitted_on = "not recorded by this run"
        else:
            fitted_on = ", ".join(splits) or "nothing (no fitting after training)"
            if "dev_mix" in splits or "dev_shift" in splits:
                fitted_on += " (saw shifted data)"
        tuning = doc.get("tuning") or {}
        searched = ", ".join(tuning.get("searched", [])) or "-"
        if tuning.get("objective"):
            searched += f" ({tuning['objective']})"
        tuned = json.dumps(doc.get("tuned", {}), separators=(",", ":"))
        tuned = tuned if len(tuned) <= 120 else tuned[:117] + "..."
        lines.append(_row([method, fitted_on, searched, f"`{tuned}`"]))
    return lines
