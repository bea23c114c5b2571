"""Leaderboards from run folders: tables with bootstrap intervals, paired differences, plots."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from uqbench import metrics as M
from uqbench.bootstrap import bootstrap, interval
from uqbench.cli import main
from uqbench.leaderboards import Options, RunRef, scan, write_leaderboards
from uqbench.leaderboards import runs as loaded_runs
from uqbench.metric_table import compute_metrics
from uqbench.predictions import Predictions

GROUPS = ["dev", "id", "cid/fog/1", "cid/fog/2", "cid/snow/1", "cid/snow/2", "ood/far"]


def _predictions(seed: int, knows_errors: float = 0.0) -> Predictions:
    """Predictions on the same examples for every method of a seed (labels from the seed);
    ``knows_errors`` adds that much to the score of misclassified inputs."""
    rng = np.random.default_rng(seed)
    n = 80 * len(GROUPS)
    group = np.repeat(np.arange(len(GROUPS)), 80).astype(np.int32)
    logits = rng.normal(size=(n, 4)) * 1.5
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    # Right 90% of the time on dev and ID, 40% on the CID sets: accuracy drops under shift.
    right = rng.random(n) < np.where(group <= 1, 0.9, 0.4)
    label = np.where(right, probs.argmax(1), rng.integers(0, 4, n)).astype(np.int32)
    label[group == len(GROUPS) - 1] = -1
    score = 1 - probs.max(1) + knows_errors * (probs.argmax(1) != label)
    return Predictions(probs, score.astype(np.float64), label, group, GROUPS)


def _with_part(root, seed: int) -> Predictions:
    return Predictions.load(root / f"oracle-toy-s{seed}" / "scores.npz").with_score("part")


def _run_folder(root, method: str, seed: int, p: Predictions, fitted_on=()):
    folder = root / f"{method}-toy-s{seed}"
    folder.mkdir(parents=True)
    p.save(folder / "scores.npz")
    doc = {
        "method": method,
        "data": "toy",
        "seed": seed,
        "metrics": compute_metrics(p),
        "tuned": {},
        "fitted_on": list(fitted_on),
    }
    (folder / "metrics.json").write_text(json.dumps(doc))
    return folder


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    for seed in (13, 17):
        _run_folder(root, "msp", seed, _predictions(seed))
        oracle = _predictions(seed, knows_errors=1.0)
        oracle.variants = {"part": _predictions(seed, knows_errors=0.5).score}
        _run_folder(root, "oracle", seed, oracle, ["dev_mix"])
    return root


def test_every_task_table_shows_the_seed_mean_and_the_averaged_bootstrap_interval(runs, tmp_path):
    out = tmp_path / "boards"
    (path,) = write_leaderboards(
        scan(runs)[0], out, "uqbench leaderboard test", Options(resamples=200)
    )
    text = path.read_text()
    for title in (
        "Failure detection: ID ok | ID err",
        "Failure detection by severity",
        "Out-of-distribution",
        "Selective prediction",
        "Calibration",
        "Failure detection per corruption",
        "Paired differences against msp",
        "How each method was fitted",
    ):
        assert f"## {title}" in text
    # The msp row's AUROC cell, recomputed here: mean of the seeds' values, mean of the ends.
    values, lows, highs = [], [], []
    for seed in (13, 17):
        p = Predictions.load(runs / f"msp-toy-s{seed}" / "scores.npz")
        values.append(compute_metrics(p)["id_vs_error"]["auroc"])
        low, high = interval(bootstrap(p, 200)["id_vs_error/auroc"])
        lows.append(low), highs.append(high)
    expected = f"{np.mean(values):.3f} [{np.mean(lows):.3f}, {np.mean(highs):.3f}]"
    row = next(line for line in text.splitlines() if line.startswith("| msp | "))
    assert row.split(" | ")[1].strip("*") == expected
    assert "oracle | dev_mix (saw shifted data)" in text and "msp | nothing" in text
    # Per corruption x severity: each CID set's AUROC, recomputed here for one cell.
    fog2 = []
    for seed in (13, 17):
        p = Predictions.load(runs / f"msp-toy-s{seed}" / "scores.npz")
        member = p.group == GROUPS.index("cid/fog/2")
        fog2.append(M.auroc(p.score[member], p.probs[member].argmax(1) != p.label[member]))
    fog = text[text.index("**fog**") :]
    row = next(line for line in fog.splitlines() if line.startswith("| msp | "))
    assert row.split(" | ")[2].strip(" |") == f"{np.mean(fog2):.3f}"  # method, sev 1, sev 2
    # A recorded variant score is a row of its own, its metrics recomputed on that score.
    assert "## What the scores are made of" in text
    row = next(line for line in text.splitlines() if line.startswith("| oracle (part) | "))
    part = [compute_metrics(_with_part(runs, seed))["id_vs_error"]["auroc"] for seed in (13, 17)]
    assert row.split(" | ")[1].startswith(f"{np.mean(part):.3f} [")


def test_a_run_that_did_not_record_its_splits_is_not_called_unfitted(runs, tmp_path):
    doc_path = runs / "msp-toy-s13" / "metrics.json"
    doc = json.loads(doc_path.read_text())
    del doc["fitted_on"]  # as metrics.json was written before it recorded the splits
    doc_path.write_text(json.dumps(doc))
    (path,) = write_leaderboards(scan(runs)[0], tmp_path / "b", "cmd", Options(resamples=100))
    assert "| msp | not recorded by this run |" in path.read_text()


def test_a_paired_difference_names_the_winner_with_its_interval(runs, tmp_path):
    (path,) = write_leaderboards(scan(runs)[0], tmp_path / "b", "cmd", Options(resamples=200))
    text = path.read_text()
    sentence = re.search(
        r"- oracle beats msp on toy ID ok vs ID err AUROC by ([0-9.]+) "
        r"\[([0-9.]+), ([0-9.]+)\]\.",
        text,
    )
    assert sentence, text
    gap, low, high = map(float, sentence.groups())
    assert 0 < low <= gap <= high
    row = next(line for line in text.splitlines() if line.startswith("| oracle | +"))
    assert row.split(" | ")[1].endswith("✓")


def test_figures_are_written_as_png_and_svg_and_linked(runs, tmp_path):
    (path,) = write_leaderboards(scan(runs)[0], tmp_path / "b", "cmd", Options(resamples=100))
    for stem in ("auroc-by-severity", "risk-coverage", "reliability"):
        png, svg = path.parent / f"{stem}.png", path.parent / f"{stem}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "<svg" in svg.read_text()
        assert f"({stem}.png)" in path.read_text()


def test_bootstrap_samples_are_cached_by_the_scores_hash(runs, tmp_path, monkeypatch):
    first = write_leaderboards(scan(runs)[0], tmp_path / "a", "cmd", Options(resamples=100))[
        0
    ].read_text()

    def refuse(*args, **kwargs):
        raise AssertionError("bootstrapped again")

    monkeypatch.setattr(loaded_runs, "bootstrap", refuse)
    again = write_leaderboards(scan(runs)[0], tmp_path / "b", "cmd", Options(resamples=100))[
        0
    ].read_text()
    assert again == first


def test_two_runs_of_one_method_and_seed_are_refused(runs, tmp_path):
    refs = scan(runs)[0]
    twin = RunRef("msp", "toy", 13, runs / "oracle-toy-s13")
    with pytest.raises(ValueError, match="two runs of msp on toy with seed 13"):
        write_leaderboards([*refs, twin], tmp_path / "b", "cmd")


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "needs runs="),
        (["runs=/no/such/folder"], "is not a folder"),
        (["runs=.", "colour=red"], "is not key=value with a known key"),
        (["runs=.", "resamples=10"], "resamples must be an integer in 100..100,000"),
        (["runs=.", "stream.id_frames=many"], "stream.id_frames: expected int, got 'many'"),
    ],
)
def test_bad_leaderboard_input_exits_2_and_writes_nothing(tmp_path, capsys, args, message):
    code = main(["leaderboard", *args, f"out={tmp_path / 'out'}"])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_command_writes_a_folder_per_data_set(runs, tmp_path, capsys):
    code = main(["leaderboard", f"runs={runs}", f"out={tmp_path / 'out'}", "resamples=100"])
    assert code == 0 and (tmp_path / "out" / "toy" / "README.md").is_file()
    err = capsys.readouterr().err  # the slow part says what it does, run by run
    total = len(list(runs.iterdir()))
    assert f"leaderboard toy: run 1/{total}: bootstrap and streams of " in err
    assert f"run {total}/{total}" in err and "leaderboard toy: tables and figures" in err
    # The exports beside the Markdown: a CSV per table, LaTeX (booktabs), an HTML page.
    import csv

    folder = tmp_path / "out" / "toy"
    readme = (folder / "README.md").read_text()
    with (folder / "tables" / "failure-detection-id-ok-id-err.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:2] == ["method", "AUROC"] and len(rows) > 2
    assert rows[1][0] in readme and "**" not in "".join(rows[1])
    for path in (folder / "tables").glob("*.csv"):  # every row as wide as its header
        with path.open() as handle:
            widths = {len(row) for row in csv.reader(handle)}
        assert len(widths) == 1, path.name
    tex = (folder / "tables.tex").read_text()
    tables = readme.count("\n|---")
    assert tex.count("\\toprule") == tex.count("\\bottomrule") == tables
    assert "ID ok \\textbar{} ID err" in tex
    page = (folder / "index.html").read_text()
    assert page.count("<img") == readme.count("![") and page.count("<table>") == tables


def test_exported_tables_read_escaped_pipes_and_bold_labels():
    from uqbench.leaderboards.exports import tables

    markdown = """## Fitted: ID ok | ID err

| method | objective |
|---|---|
| energy | AUROC of ID ok \\| ID err |

**gaussian_noise**

| method | sev 1 |
|---|---|
| msp | 0.785 |
| energy |  |
"""
    first, second = tables(markdown)
    assert first.heading == "Fitted: ID ok | ID err"
    assert first.rows == [["method", "objective"], ["energy", "AUROC of ID ok | ID err"]]
    assert second.heading == "Fitted: ID ok | ID err: gaussian_noise"
    assert second.slug == "fitted-id-ok-id-err-gaussian-noise"
    assert second.rows[-1] == ["energy", ""]  # an empty last cell is kept


def test_the_stream_layout_is_an_option(runs, tmp_path, capsys):
    layout = [
        "stream.id_frames=500",
        "stream.cid_frames=400",
        "stream.test_streams=1",
        "stream.severities=[1,2]",
    ]  # the toy runs have two severities
    code = main(
        ["leaderboard", f"runs={runs}", f"out={tmp_path / 'out'}", "resamples=100", *layout]
    )
    text = (tmp_path / "out" / "toy" / "README.md").read_text()
    assert code == 0 and "ID 500 frames, then for each severity 400 CID frames" in text
    assert "a dev stream and 1 test streams" in text


def _object_npz(folder):
    with open(folder / "scores.npz", "wb") as handle:
        np.savez(handle, probs=np.array([object()]), score=np.zeros(1))


DAMAGE = {
    "truncated metrics": lambda f: (f / "metrics.json").write_text('{"method": "ms'),
    "non-object metrics": lambda f: (f / "metrics.json").write_text("[1, 2]"),
    "method-less metrics": lambda f: (f / "metrics.json").write_text('{"data": "toy"}'),
    "truncated scores": lambda f: (f / "scores.npz").write_bytes(
        (f / "scores.npz").read_bytes()[:200]
    ),
    "garbage scores": lambda f: (f / "scores.npz").write_bytes(b"garbage" * 10),
    "object-array scores": _object_npz,
    "missing scores": lambda f: (f / "scores.npz").unlink(),
    "missing metrics": lambda f: (f / "metrics.json").unlink(),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_run_is_named_and_left_out(runs, tmp_path, capsys, damage):
    DAMAGE[damage](runs / "oracle-toy-s17")
    (runs / "msp-toy-s23.partial").mkdir()  # an unfinished run is never read as one
    (runs / "msp-toy-s23.partial" / "metrics.json").write_text("{}")
    out = tmp_path / "board"
    args = ["leaderboard", f"runs={runs}", f"out={out}", "resamples=100"]
    code = main(args)
    _, err = capsys.readouterr()
    assert code == 0, err
    assert f"{runs / 'oracle-toy-s17'} left out" in err and "partial" not in err
    text = (out / "toy" / "README.md").read_text()
    assert "Seeds: 13, 17" in text  # msp's two runs and oracle's remaining one
    # strict=true refuses instead, with nothing written.
    code = main([*args[:2], f"out={tmp_path / 'strict'}", "resamples=100", "strict=true"])
    assert code == 2 and "strict=true" in capsys.readouterr().err
    assert not (tmp_path / "strict").exists()


def test_an_unknown_reference_names_the_methods_present(runs, tmp_path, capsys):
    code = main(["leaderboard", f"runs={runs}", f"out={tmp_path / 'b'}", "reference=nope"])
    err = capsys.readouterr().err
    assert code == 2 and "reference='nope'" in err and "msp, oracle" in err
    (tmp_path / "file").write_text("x")
    code = main(["leaderboard", f"runs={runs}", f"out={tmp_path / 'file'}"])
    assert code == 2 and "is a file" in capsys.readouterr().err
    # Resamples past 100,000 would take gigabytes per run (one took 17 GB before the bound).
    code = main(["leaderboard", f"runs={runs}", f"out={tmp_path / 'b'}", "resamples=" + "9" * 23])
    assert code == 2 and "resamples must be an integer in 100..100,000" in capsys.readouterr().err


def test_every_method_keeps_one_style_and_no_two_share_one():
    from uqbench import registry
    from uqbench.leaderboards.styles import FIXED, style

    first_party = registry.own_names("method")
    assert len(first_party) == 13 and "snapuq" in first_party  # SNAP-UQ and twelve baselines
    assert set(first_party) <= set(FIXED)
    assert len(set(FIXED.values())) == len(FIXED)  # msp and SNAP-UQ's variants never collide
    plugin = style("margin")
    assert plugin == style("margin") and plugin not in set(FIXED.values())


def test_the_pareto_front_keeps_what_nothing_beats():
    from uqbench.leaderboards.plots import pareto_front

    points = {
        "cheap": (1.0, 0.6),
        "dominated": (2.0, 0.55),
        "better": (3.0, 0.8),
        "costly": (9.0, 0.79),
    }
    assert pareto_front(points) == ["cheap", "better"]


def test_a_leaderboard_is_logged_to_wandb_with_its_figures_and_tables(
    runs, tmp_path, capsys, monkeypatch
):
    from uqbench.stages.wandb_run import log_leaderboard

    monkeypatch.setenv("WANDB_MODE", "offline")
    assert main(["leaderboard", f"runs={runs}", f"out={tmp_path / 'out'}", "resamples=100"]) == 0
    folder = tmp_path / "out" / "toy"
    log_leaderboard(folder, "bench-x")
    (offline,) = (folder / "wandb").glob("offline-run-*")
    media = offline / "files" / "media"
    images = {p.name.split("_")[0] for p in (media / "images" / "figures").glob("*.png")}
    assert images == {p.stem.split("_")[0] for p in folder.glob("*.png")}
    tables = list((media / "table" / "tables").glob("*.table.json"))
    assert len(tables) == len(list((folder / "tables").glob("*.csv")))
    assert b"bench-x" in next(offline.glob("run-*.wandb")).read_bytes()
