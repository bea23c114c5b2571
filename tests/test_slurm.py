"""`uqbench bench bench.launcher=slurm` against a live one-node SLURM cluster started on this
machine (tests/slurm_cluster.py): jobs through sbatch, failures with their job ids, scancel
and a rerun that runs only what is missing, SLURM's time limit reported as such. When the
cluster cannot start the tests fail, naming why: they never skip."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurm_cluster import Cluster, ClusterError, running

pytestmark = pytest.mark.slow

SLURM = ["bench.launcher=slurm", "bench.partition=debug", "trainer.max_epochs=1"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    try:
        with Cluster(tmp_path_factory.mktemp("slurm")) as env:
            yield env
    except ClusterError as exc:
        pytest.fail(f"the test SLURM cluster did not start: {exc}")


def _bench(env: dict[str, str], *args: str, wait: bool = True):
    command = [sys.executable, "-m", "uqbench", "bench", *args]
    if not wait:
        return subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)


def _cells(out: Path) -> dict:
    return json.loads((out / "bench.json").read_text())["cells"]


def test_a_bench_runs_post_hoc_and_trained_cells_as_slurm_jobs(cluster, tmp_path):
    out = tmp_path / "bench"
    done = _bench(
        cluster,
        "method=[msp,energy,evidential]",
        "seed=[13,17]",
        "bench.jobs=2",
        f"bench.out={out}",
        *SLURM,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    cells = _cells(out)
    assert len(cells) == 6 and {c["status"] for c in cells.values()} == {"done"}
    assert all(c["job_id"].isdigit() for c in cells.values())  # each ran as a SLURM job
    for name in cells:
        assert (out / name / "metrics.json").is_file()
    assert (out / "leaderboard.md").is_file()
    assert (out / "leaderboards" / "digits" / "README.md").is_file()
    assert running(cluster) == []


def test_a_failing_cell_is_recorded_with_its_job_id_and_log(cluster, tmp_path):
    out = tmp_path / "bench"
    args = ["method=[evidential]", "seed=[13]", f"bench.out={out}", *SLURM]
    from uqbench.bench import check_cells, parse_matrix

    (cell,) = check_cells(parse_matrix(args)).cells
    out.mkdir()
    (out / cell.name).write_text("in the way")  # the run folder's name is taken by a file
    done = _bench(cluster, *args)
    assert done.returncode == 1
    entry = _cells(out)[cell.name]
    assert entry["status"] == "failed" and entry["job_id"].isdigit()
    assert f"{cell.name} already exists; choose another name=" in Path(entry["log"]).read_text()


def test_scancel_then_a_rerun_runs_only_what_is_missing(cluster, tmp_path):
    out = tmp_path / "bench"
    args = [
        "method=[msp,snapuq]",
        "seed=[13]",
        f"bench.out={out}",
        "bench.jobs=2",
        "bench.launcher=slurm",
        "bench.partition=debug",
        "trainer.max_epochs=40",
    ]
    from uqbench.bench import check_cells, parse_matrix

    trained = next(c.name for c in check_cells(parse_matrix(args)).cells if c.method == "snapuq")
    bench = _bench(cluster, *args, wait=False)
    deadline = time.monotonic() + 120  # the trained cell's job running: cancel that one
    while time.monotonic() < deadline:
        names = subprocess.run(
            ["squeue", "-h", "-t", "R", "-o", "%j"], env=cluster, capture_output=True, text=True
        ).stdout.split()
        if trained in names:
            break
        time.sleep(0.5)
    subprocess.run(["scancel", f"--name={trained}"], env=cluster, check=True)
    log, _ = bench.communicate(timeout=300)
    cells = _cells(out)
    cancelled = [n for n, c in cells.items() if c["status"] == "failed"]
    assert cancelled, log[-2000:]
    for name in cancelled:
        assert "cancelled (scancel)" in Path(cells[name]["log"]).read_text()
    finished = [n for n, c in cells.items() if c["status"] == "done"]
    again = _bench(cluster, *args)
    assert again.returncode == 0, again.stdout[-2000:]
    rerun = _cells(out)
    assert all(rerun[n]["status"] == "reused" for n in finished)
    assert all(rerun[n]["status"] == "done" for n in cancelled)


def test_a_job_killed_by_the_time_limit_is_reported_as_such(cluster, tmp_path):
    out = tmp_path / "bench"
    done = _bench(
        cluster,
        "method=[snapuq]",
        "seed=[13]",
        f"bench.out={out}",
        "bench.launcher=slurm",
        "bench.partition=debug",
        "bench.time_min=1",
        "trainer.max_epochs=1000",
    )
    assert done.returncode == 1
    (entry,) = _cells(out).values()
    assert entry["status"] == "failed"
    assert "killed by SLURM's time limit (bench.time_min=1)" in Path(entry["log"]).read_text()
    assert running(cluster) == []
