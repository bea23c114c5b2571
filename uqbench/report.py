"""The readable table ``uqbench fit`` and ``uqbench test`` print at the end of a run."""

from __future__ import annotations

from typing import Any


def _f(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def _short(value: Any) -> str:
    """Compact rendering of a tuned value: floats to 4 significant digits, recursively."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return str(value)


def format_report(document: dict[str, Any], folder: str | None = None) -> str:
    """Render a ``metrics.json`` document (scores: higher = more uncertain) as plain text."""
    m = document["metrics"]
    lines = [
        f"uqbench  method={document['method']}  data={document['data']}  "
        f"backbone={document['backbone']}  seed={document['seed']}",
    ]
    if folder:
        lines.append(f"run folder: {folder}")
    training = document.get("training", {})
    if "base_key" in training:
        how = "reused from cache" if training["base_reused"] else "trained and cached"
        lines.append(f"base model: {how} ({training['base_key']})")
    counts = m["counts"]
    lines.append(
        f"examples: ID {counts['id']} ({counts['id_errors']} errors), CID {counts['cid']}, "
        f"OOD {counts['ood']}"
    )
    acc = m["accuracy"]
    line = f"\nAccuracy        ID {_f(acc['id'])}"
    if "cid" in acc:
        line += "   CID " + "  ".join(f"s{s} {_f(v)}" for s, v in acc["cid"].items())
        line += f"   CID mean {_f(acc['cid_mean'])}"
    lines.append(line)
    lines.append("\nFailure detection          AUROC   AUPRC   FPR@95TPR")
    tasks = [("id_vs_error", "ID ok | ID err (ID+CID)"), ("id_vs_ood", "ID ok | OOD")]
    for key, label in tasks:
        if key in m:
            r = m[key]
            lines.append(f"  {label:<24} {_f(r['auroc'])}   {_f(r['auprc'])}   {_f(r['fpr95'])}")
    by_sev = m.get("id_vs_error_by_severity", {})
    if by_sev:
        lines.append(
            "  AUROC ID ok | ID err by severity: "
            + "  ".join(("clean" if s == "0" else f"s{s}") + f" {_f(v)}" for s, v in by_sev.items())
        )
    lines.append("\nSelective prediction       AURC    risk@80 risk@90 risk@95 sNLL@90")
    for split, r in m["selective"].items():
        lines.append(
            f"  {split:<24} {_f(r['aurc'], 4)}  {_f(r['risk@80'])}   {_f(r['risk@90'])}   "
            f"{_f(r['risk@95'])}   {_f(r['snll@90'])}"
        )
    cal = m["calibration"]
    lines.append(
        f"\nCalibration (ID)  NLL {_f(cal['nll'])}   Brier {_f(cal['brier'], 4)}   "
        f"ECE (15 adaptive bins) {_f(cal['ece'])}"
    )
    cost = document.get("cost", {})
    if cost:
        lines.append(
            f"Cost              {cost['forward_passes']} forward pass(es), "
            f"+{cost['extra_params']} params, +{cost['extra_macs']} MACs"
        )
    tuned = dict(document.get("tuned", {}))
    diagnostics = tuned.pop("diagnostics", {})
    if tuned:
        lines.append("Tuned on dev      " + ", ".join(f"{k}={_short(v)}" for k, v in tuned.items()))
    for tap, stats in diagnostics.items():
        lines.append(
            f"Dev diagnostics   {tap}: mean e_bar {_f(stats['ebar_mean'])} (expect ~1), "
            f"var {_f(stats['ebar_var'])} (2/d = {_f(stats['ebar_var_expected'])}), "
            f"corr with 1-conf {_f(stats['corr_with_1_minus_conf'])}"
        )
    seconds = document.get("seconds", {})
    if seconds:
        lines.append("Wall time         " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    return "\n".join(lines)


def format_group_report(results: list[tuple[Any, dict[str, Any]]]) -> str:
    """One row per method of a group run: the headline metrics, side by side."""
    first = results[0][1]
    lines = [
        f"uqbench  data={first['data']}  backbone={first['backbone']}  seed={first['seed']}  "
        f"(one base model, one recorded pass per split)",
        "",
        f"{'method':<14} {'AUROC err':>9} {'AUROC OOD':>9} {'AURC ID':>8} {'AURC ID+CID':>11} "
        f"{'ECE':>6} {'acc ID':>6}  run folder",
    ]
    for folder, doc in results:
        m = doc["metrics"]
        ood = m.get("id_vs_ood", {}).get("auroc")
        sel = m["selective"]
        lines.append(
            f"{doc['method']:<14} {_f(m['id_vs_error']['auroc']):>9} {_f(ood):>9} "
            f"{_f(sel['id']['aurc'], 4):>8} {_f(sel.get('id+cid', {}).get('aurc'), 4):>11} "
            f"{_f(m['calibration']['ece']):>6} {_f(m['accuracy']['id']):>6}  {folder}"
        )
    return "\n".join(lines)
