"""``uqbench bench``: a matrix of fits as child processes, checked before any cell runs,
resumable, parallel, failures recorded with the command that reproduces them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from uqbench.bench import check_cells, jobs_for, parse_matrix
from uqbench.cli import main


def test_unknown_names_are_all_listed_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(
        [
            "bench",
            "method=[msp,nope,bad]",
            "data=[digits,cifar11]",
            "deploy=[tiny-mcu]",
            f"bench.out={out}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    for name in ("method 'nope'", "method 'bad'", "data 'cifar11'", "board 'tiny-mcu'"):
        assert name in err


@pytest.mark.parametrize(
    "option, message",
    [
        ("method.no_such_option=1", "no_such_option"),
        ("bench.workers=2", "unknown bench option 'bench.workers'"),
        ("name=x", "names its cells itself"),
        ("bench.jobs=0", "bench.jobs must be in 1..256"),
        ("bench.jobs=99999999999999999999", "bench.jobs must be in 1..256"),
        ("bench.resamples=99999999999999999999", "bench.resamples must be in 100..100,000"),
    ],
)
def test_a_cell_uqbench_fit_would_refuse_stops_the_bench_first(tmp_path, capsys, option, message):
    out = tmp_path / "bench"
    code = main(["bench", "method=[msp,energy]", option, f"bench.out={out}"])
    assert code == 2 and message in capsys.readouterr().err
    assert not (out / "logs").exists()  # no cell ran


@pytest.mark.slow
def test_cells_run_in_parallel_resume_and_fail_alone(tmp_path, capsys):
    out = tmp_path / "bench"
    args = [
        "bench",
        "method=[msp,energy,evidential]",
        "seed=[13,17]",
        "trainer.max_epochs=1",
        "bench.jobs=2",
        f"bench.out={out}",
    ]
    cells = parse_matrix(args[1:]).cells
    assert [c.name.rsplit("-", 1)[0] for c in cells] == [
        "msp-digits-s13",
        "energy-digits-s13",
        "evidential-digits-s13",
        "msp-digits-s17",
        "energy-digits-s17",
        "evidential-digits-s17",
    ]
    # The post-hoc cells of a seed are one group: one process, one recorded pass per split.
    cells = check_cells(parse_matrix(args[1:])).cells
    assert [c.group is not None for c in cells] == [True, True, False] * 2
    assert [len(j.cells) for j in jobs_for(cells)] == [2, 1, 2, 1]
    assert cells[0].name.startswith("posthoc-digits-s13-") and cells[0].name.endswith("-msp")
    # The trained method's run folder is taken by a file: that cell fails, the others go on.
    out.mkdir()
    (out / cells[5].name).write_text("in the way")
    assert main(args) == 1
    printed = capsys.readouterr().out
    assert "5 done, 1 failed" in printed and cells[5].name in printed
    record = json.loads((out / "bench.json").read_text())["cells"]
    assert [record[c.name]["status"] for c in cells] == ["done"] * 5 + ["failed"]
    assert record[cells[0].name]["process"] == record[cells[1].name]["process"] == cells[0].group
    assert "one recorded pass per split" in Path(record[cells[0].name]["log"]).read_text()
    failed = record[cells[5].name]
    assert failed["reproduce"].startswith("uqbench fit method=evidential data=digits seed=17")
    assert "error" in failed["error"]
    board = (out / "leaderboard.md").read_text()
    assert "| msp | " in board and "| energy | " in board and "## Failed cells" in board
    # Each data set's leaderboard with bootstrap intervals, linked from the summary.
    assert "[digits](leaderboards/digits/README.md)" in board
    per_data = (out / "leaderboards" / "digits" / "README.md").read_text()
    assert "## Paired differences against msp" in per_data and "energy" in per_data
    # Rerun after clearing the obstacle: only the failed cell runs.
    (out / cells[5].name).unlink()
    assert main(args) == 0
    record = json.loads((out / "bench.json").read_text())["cells"]
    assert [record[c.name]["status"] for c in cells] == ["reused"] * 5 + ["done"]
    # Each complete cell carries its headline numbers, equal to its run folder's.
    metrics = json.loads((out / cells[0].name / "metrics.json").read_text())["metrics"]
    assert record[cells[0].name]["headline"]["auroc_id_vs_error"] == metrics["id_vs_error"]["auroc"]
    assert record[cells[0].name]["headline"]["accuracy_id"] == metrics["accuracy"]["id"]
    assert "## Failed cells" not in (out / "leaderboard.md").read_text()


def test_a_failing_group_process_fails_the_cells_it_left_incomplete(tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["bench", "method=[msp,energy]", "seed=[13]", "trainer.max_epochs=1", f"bench.out={out}"]
    cells = check_cells(parse_matrix(args[1:])).cells
    out.mkdir()
    (out / cells[1].name).write_text("in the way")  # the group's second folder
    assert main(args) == 1
    record = json.loads((out / "bench.json").read_text())["cells"]
    assert [record[c.name]["status"] for c in cells] == ["failed", "failed"]
    assert record[cells[0].name]["reproduce"].startswith("uqbench fit method=msp,energy ")


def test_the_slurm_launcher_needs_a_partition_and_its_options_are_checked(tmp_path, capsys):
    out = tmp_path / "bench"
    for option, message in [
        (["bench.launcher=slurm"], "needs bench.partition"),
        (["bench.launcher=pbs"], "expected one of local, slurm, submitit-local, got 'pbs'"),
        (["bench.launcher=slurm", "bench.partition=gpu", "bench.gpus=-1"], "bench.gpus must be"),
    ]:
        assert main(["bench", "method=[msp]", *option, f"bench.out={out}"]) == 2
        assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_cells_run_as_submitit_jobs(tmp_path, capsys):
    """The cluster path end to end with submitit's local executor: each cell a submitted job
    (its pickled call and result in bench.out/submitit), one made to fail."""
    out = tmp_path / "bench"
    args = [
        "bench",
        "method=[msp,evidential]",
        "seed=[13]",
        "trainer.max_epochs=1",
        "bench.jobs=2",
        "bench.launcher=submitit-local",
        "bench.time_min=10",
        f"bench.out={out}",
    ]
    cells = check_cells(parse_matrix(args[1:])).cells
    out.mkdir()
    (out / cells[1].name).write_text("in the way")
    assert main(args) == 1
    record = json.loads((out / "bench.json").read_text())["cells"]
    assert [record[c.name]["status"] for c in cells] == ["done", "failed"]
    assert record[cells[1].name]["reproduce"].startswith("uqbench fit method=evidential")
    assert any((out / "submitit").glob("*_result.pkl"))  # it went through submitit
    assert (out / "leaderboards" / "digits" / "README.md").is_file()


def test_the_default_seeds_are_the_papers():
    assert [c.seed for c in parse_matrix(["method=[msp]"]).cells] == [13, 17, 23]


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead; /proc tells it from a running process.
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_killed_bench_leaves_no_orphan_and_a_rerun_finishes_the_cell(tmp_path, how):
    """Real processes: the bench is killed while its cell trains; the cell's fit dies with it,
    and the rerun runs the cell (not refused as another live run's) and appends to its log."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "bench"
    command = [
        sys.executable,
        "-m",
        "uqbench",
        "bench",
        "method=msp",
        "seed=13",
        "trainer.max_epochs=3",
        f"bench.out={out}",
    ]
    env = os.environ | {"UQBENCH_CACHE": str(tmp_path / "cache")}
    bench = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(out.glob("*.partial/.owner")) and time.time() < deadline:
        time.sleep(0.2)
    (owner,) = out.glob("*.partial/.owner")
    child = json.loads(owner.read_text())["pid"]
    bench.send_signal(getattr(signal, how))
    bench.wait()
    deadline = time.time() + 20
    while _alive(child) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(child), "the cell's fit outlived the bench"
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    (log,) = (out / "logs").glob("posthoc-*.log")  # the group of msp
    assert log.read_text().count("=== ") == 2  # the killed attempt's log is kept
    record = json.loads((out / "bench.json").read_text())
    assert [c["status"] for c in record["cells"].values()] == ["done"]


def test_a_rerun_waits_for_a_live_cell_instead_of_failing_it(tmp_path, capsys):
    import socket
    import subprocess
    import sys
    import threading

    from uqbench.bench import Cell, Job, wait_for_live_cells

    cell = Cell("msp", "digits", 13, ("method=msp",))
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    partial = tmp_path / f"{cell.name}.partial"
    partial.mkdir()
    owner = {"host": socket.gethostname(), "pid": live.pid}
    (partial / ".owner").write_text(json.dumps(owner))
    waiter = threading.Thread(target=wait_for_live_cells, args=(Job((cell,)), tmp_path, 0.05))
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive()  # still waiting while the other run lives
    live.kill()
    live.wait()
    waiter.join(5)
    assert not waiter.is_alive() and "waiting for a live run" in capsys.readouterr().out


def test_a_damaged_cell_folder_is_recorded_failed_and_left_alone(tmp_path, capsys):
    from uqbench.bench import Matrix, run

    cell = parse_matrix(["method=msp", "seed=13", f"bench.out={tmp_path}"]).cells[0]
    folder = tmp_path / cell.name
    folder.mkdir()
    (folder / "metrics.json").write_text('{"method": "ms')  # truncated
    (folder / "scores.npz").write_bytes(b"garbage")
    record = run(Matrix([cell], 1, tmp_path))
    entry = record["cells"][cell.name]
    assert entry["status"] == "failed" and "metrics.json is unreadable" in entry["error"]
    assert "is damaged" in capsys.readouterr().err
    assert (folder / "scores.npz").read_bytes() == b"garbage"  # never run over
    assert not (tmp_path / "logs").exists()  # no cell process was started


@pytest.mark.slow
def test_forked_and_fresh_jobs_give_the_same_numbers_and_train_each_base_once(
    tmp_path, monkeypatch
):
    """ODIN starts from the base model the post-hoc group trains: with two slots it waits for
    it (evidential runs meanwhile) and loads it; forked or fresh, every number is the same."""
    matrix = ["method=[msp,odin,evidential]", "seed=[13]", "trainer.max_epochs=1"]
    matrix += ["bench.jobs=2", "bench.resamples=100"]
    metrics = {}
    for preload in ("true", "false"):
        cache, out = tmp_path / f"cache-{preload}", tmp_path / f"bench-{preload}"
        monkeypatch.setenv("UQBENCH_CACHE", str(cache))
        assert main(["bench", *matrix, f"bench.preload={preload}", f"bench.out={out}"]) == 0
        record = json.loads((out / "bench.json").read_text())["cells"]
        runs = {name: json.loads((out / name / "metrics.json").read_text()) for name in record}
        odin = next(doc for doc in runs.values() if doc["method"] == "odin")
        group = next(doc for doc in runs.values() if doc["method"] == "msp")
        assert odin["training"]["base_reused"] and not group["training"]["base_reused"]
        assert len(list((cache / "base").glob("*.pt"))) == 1
        metrics[preload] = {name: doc["metrics"] for name, doc in runs.items()}
        # The leaderboard's statistics were computed ahead, into the cache, by free slots.
        assert ("leaderboard-ahead.log" in os.listdir(out / "logs")) == (preload == "true")
    assert metrics["true"] == metrics["false"]
