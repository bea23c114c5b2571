"""The readable table ``uqbench fit`` and ``uqbench test`` print at the end of a run.

Rows and columns come from the metric table (:mod:`uqbench.metric_table`): a metric is named,
formatted and oriented in one place.
"""

from __future__ import annotations

from typing import Any

from uqbench.metric_table import MetricSpec, lookup, table

HEADLINE = (
    "id_vs_error/auroc",
    "id_vs_ood/mean/auroc",
    "selective/id/aurc",
    "selective/id+cid/aurc",
    "calibration/ece",
    "accuracy/id",
)


def _f(value: Any, fmt: str = ".3f") -> str:
    return "n/a" if value is None or value != value else format(value, fmt)


def _short(value: Any) -> str:
    """Compact rendering of a tuned value: floats to 4 significant digits, recursively."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return str(value)


def _specs(m: dict[str, Any]) -> list[MetricSpec]:
    ood_sets = [k for k in m.get("id_vs_ood", {}) if k != "mean"]
    return table(ood_sets)


def _task_lines(m: dict[str, Any], specs: list[MetricSpec], tasks: list[str]) -> list[str]:
    lines = []
    for task in tasks:
        row = [s for s in specs if s.task == task]
        if not row or lookup(m, task) is None:
            continue
        cells = "  ".join(f"{s.name} {_f(lookup(m, s.key), s.fmt)}" for s in row)
        lines.append(f"  {task:<26} {cells}   ({row[0].subset})")
    return lines


def format_report(document: dict[str, Any], folder: str | None = None) -> str:
    """Render a ``metrics.json`` document (scores: higher = more uncertain) as plain text."""
    m = document["metrics"]
    specs = _specs(m)
    lines = [
        f"uqbench  method={document['method']}  data={document['data']}  "
        f"backbone={document['backbone']}  seed={document['seed']}",
    ]
    if folder:
        lines.append(f"run folder: {folder}")
    training = document.get("training", {})
    if document.get("uqbench_command") == "test":
        lines.append("model: loaded from the run's checkpoint.pt (weights_only)")
        compared = document.get("compared_with_fit")
        if compared and compared["agree"]:
            lines.append(
                f"compared with the fit's metrics.json: all {compared['metrics']} metrics agree "
                f"(largest difference {compared['max_abs_difference']:.1e})"
            )
        elif compared:
            lines.append(
                f"compared with the fit's metrics.json: {len(compared['differing'])} of "
                f"{compared['metrics']} metrics DIFFER (largest difference "
                f"{compared['max_abs_difference']:.3g}): {', '.join(compared['differing'][:5])}"
            )
    elif "base_key" in training:
        how = "reused from cache" if training["base_reused"] else "trained and cached"
        lines.append(f"base model: {how} ({training['base_key']})")
    counts = m["counts"]
    ood = ", ".join(f"{k} {v}" for k, v in counts["ood"].items())
    lines.append(
        f"examples: ID {counts['id']} ({counts['id_errors']} errors), CID {counts['cid']}, "
        f"OOD {ood}, dev {counts['dev']}"
    )
    acc = m["accuracy"]
    line = f"\nAccuracy        ID {_f(acc['id'])}"
    if "cid" in acc:
        line += "   CID " + "  ".join(f"s{s} {_f(v)}" for s, v in acc["cid"].items())
        line += f"   CID mean {_f(acc['cid_mean'])}"
    lines.append(line)
    lines.append("\nFailure detection (score: higher = more uncertain)")
    ood_tasks = [f"id_vs_ood/{k}" for k in m.get("id_vs_ood", {})]
    lines += _task_lines(m, specs, ["id_vs_error", "id_vs_error_cid_mean", *ood_tasks])
    by_sev = m.get("id_vs_error_by_severity", {})
    if by_sev:
        lines.append(
            "  AUROC ID ok | ID err by severity: "
            + "  ".join(("clean" if s == "0" else f"s{s}") + f" {_f(v)}" for s, v in by_sev.items())
        )
    lines.append("\nSelective prediction")
    lines += _task_lines(m, specs, ["selective/id", "selective/id+cid"])
    lines.append("\nCalibration")
    lines += _task_lines(m, specs, ["calibration", "calibration_ts"])
    if "calibration_ts" in m:
        lines.append(f"  (calibration_ts: T = {_f(m['calibration_ts']['temperature'])} on dev)")
    cost = document.get("cost", {})
    if cost:
        lines.append(
            f"\nCost              {cost['forward_passes']} forward pass(es), "
            f"+{cost['extra_params']} params, +{cost['extra_macs']} MACs"
        )
    tuning = document.get("tuning")
    if tuning:
        chosen = ", ".join(f"{k}={_short(v)}" for k, v in tuning["chosen"].items())
        best = max(
            (c["value"] for c in tuning["candidates"] if c["value"] is not None),
            default=None,
            key=lambda v: v if tuning["higher_is_better"] else -v,
        )
        lines.append(
            f"Tuned on dev      {chosen} of {len(tuning['candidates'])} candidates "
            f"(fixed: {', '.join(tuning['fixed']) or 'none'}); objective: {tuning['objective']}"
            f" = {_f(best)}"
        )
    fitted = dict(document.get("tuned", {}))
    diagnostics = fitted.pop("diagnostics", {})
    if fitted:
        lines.append(
            "Fitted on dev     " + ", ".join(f"{k}={_short(v)}" for k, v in fitted.items())
        )
    for tap, stats in diagnostics.items():
        lines.append(
            f"Dev diagnostics   {tap}: mean e_bar {_f(stats['ebar_mean'])} (expect ~1), "
            f"var {_f(stats['ebar_var'])} (2/d = {_f(stats['ebar_var_expected'])}), "
            f"corr with 1-conf {_f(stats['corr_with_1_minus_conf'])}"
        )
    seconds = document.get("seconds", {})
    if seconds:
        lines.append("Wall time         " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    if "deploy" in document:
        lines += ["", "Deploy (int8, per board; deploy/<board>/deploy.json in the run folder)"]
        lines += format_deploy(document["deploy"])
    return "\n".join(lines)


def format_deploy(documents: dict[str, dict[str, Any]], method: str = "") -> list[str]:
    """One line per board: flash / peak RAM / estimated latency, or OOM, or not deployable (the
    paper's Table 1 shape, one method)."""
    lines = []
    for board, doc in documents.items():
        prefix = f"{method:<14} {board:<14}" if method else f"{board:<14}"
        if not doc["deployable"]:
            lines.append(f"{prefix} not deployable: {doc['reason']}")
        elif not doc["fits"]:
            over = ", ".join(f"{region} +{count:,} B" for region, count in doc["oom"].items())
            lines.append(f"{prefix} OOM ({over})")
        else:
            kib = {k: v / 1024 for k, v in doc["flash_bytes"].items() if isinstance(v, int)}
            ram = {k: v / 1024 for k, v in doc["ram_bytes"].items() if isinstance(v, int)}
            latency = doc["latency"]
            lines.append(
                f"{prefix} flash {kib['total']:7.1f} KiB (extras {kib['uncertainty_extras']:.1f})"
                f"  peak RAM {ram['peak']:6.1f} KiB (extras {ram['uncertainty_extras']:.1f})"
                f"  ~{latency['estimated_ms']:8.1f} ms emulated (extras "
                f"{latency['uncertainty_extras_ms']:.2f})"
            )
    return lines


def format_group_report(results: list[tuple[Any, dict[str, Any]]]) -> str:
    """One row per method of a group run: the headline metrics, side by side."""
    first = results[0][1]
    specs = {s.key: s for s in _specs(first["metrics"])}
    header = "  ".join(f"{key:>22}" for key in HEADLINE)
    lines = [
        f"uqbench  data={first['data']}  backbone={first['backbone']}  seed={first['seed']}  "
        f"(one base model, one recorded pass per split)",
        "",
        f"{'method':<14} {header}  run folder",
    ]
    for folder, doc in results:
        m = doc["metrics"]
        cells = "  ".join(f"{_f(lookup(m, k), specs[k].fmt):>22}" for k in HEADLINE)
        lines.append(f"{doc['method']:<14} {cells}  {folder}")
    deployed = [(doc["method"], doc["deploy"]) for _, doc in results if "deploy" in doc]
    if deployed:
        lines += ["", "Deploy (int8, per board)"]
        for method, documents in deployed:
            lines += format_deploy(documents, method)
    return "\n".join(lines)
