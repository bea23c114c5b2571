"""Data-parallel training on the CPU: `trainer.strategy=ddp` with two gloo processes runs a fit
end to end, rank 0 alone writes, and a rank that dies leaves nothing that looks complete."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

DDP = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]


def _uqbench(*args: str, env: dict[str, str], **kwargs) -> subprocess.Popen:
    # Lightning's launcher starts rank 1 by running this command line again.
    return subprocess.Popen(
        [sys.executable, "-m", "uqbench", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def _succeeds(*args: str, tmp_path: Path) -> str:
    """Run ``uqbench <args>`` to its end and assert it succeeded; its output."""
    done = _uqbench(*args, env=_env(tmp_path))
    log, _ = done.communicate(timeout=600)
    assert done.returncode == 0, log[-3000:]
    return log


def _env(tmp_path: Path) -> dict[str, str]:
    return os.environ | {"UQBENCH_CACHE": str(tmp_path / "cache"), "TMPDIR": str(tmp_path)}


def _rank_temp(tmp_path: Path) -> list[Path]:
    return list(tmp_path.glob("uqbench-rank-*"))


@pytest.mark.slow
def test_a_ddp_fit_runs_on_two_processes_and_rank_0_alone_writes(tmp_path):
    out = tmp_path / "runs"
    _succeeds(
        "fit",
        "method=snapuq",
        "trainer.max_epochs=5",
        *DDP,
        f"out={out}",
        "name=d",
        tmp_path=tmp_path,
    )
    assert sorted(p.name for p in out.iterdir()) == ["d"]  # no .partial, no .resume
    folder = out / "d"
    config = json.loads((folder / "config.json").read_text())
    assert config["trainer_args"]["strategy"] == "ddp" and config["trainer_args"]["devices"] == 2
    assert not _rank_temp(tmp_path)  # rank 1's private folder is gone
    # A valid run: close to one process with the same effective batch (2 x 64). Not equal:
    # each rank sees its half of every epoch in another order (DistributedSampler), and batch
    # norm's statistics are per rank (64 examples, no SyncBatchNorm).
    _succeeds(
        "fit",
        "method=snapuq",
        "trainer.max_epochs=5",
        "data.batch_size=128",
        f"out={out}",
        "name=one",
        tmp_path=tmp_path,
    )
    ddp, single = (
        json.loads((out / n / "metrics.json").read_text())["metrics"] for n in "d one".split()
    )
    assert abs(ddp["accuracy"]["id"] - single["accuracy"]["id"]) < 0.1
    assert ddp["id_vs_error"]["auroc"] > 0.6


@pytest.mark.slow
@pytest.mark.parametrize(
    "method", [["method=snapuq", "method.posthoc=true"], ["method=deep_ensemble"]]
)
def test_a_run_that_would_train_twice_under_ddp_is_refused_up_front(tmp_path, method):
    done = _uqbench("fit", *method, *DDP, f"out={tmp_path / 'runs'}", env=_env(tmp_path))
    log, _ = done.communicate(timeout=300)
    assert done.returncode == 2 and "a run trains one module" in log
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.slow
def test_a_killed_rank_leaves_nothing_that_looks_complete(tmp_path):
    out = tmp_path / "runs"
    run = _uqbench(
        "fit",
        "method=snapuq",
        "trainer.max_epochs=200",
        *DDP,
        f"out={out}",
        "name=k",
        env=_env(tmp_path),
    )
    rank1 = None
    deadline = time.monotonic() + 120
    while rank1 is None and time.monotonic() < deadline:
        for pid in os.listdir("/proc"):
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes()
            except (OSError, ValueError):
                continue
            if b"LOCAL_RANK=1\x00" in environ and str(tmp_path).encode() in environ:
                rank1 = int(pid)
        time.sleep(0.5)
    assert rank1 is not None, "rank 1 never started"
    time.sleep(5)  # into training
    os.kill(rank1, signal.SIGKILL)
    log, _ = run.communicate(timeout=300)
    assert run.returncode != 0, log[-2000:]
    assert not (out / "k").exists()  # nothing complete-looking
    assert not list(out.glob("*.partial")) and not list(out.glob(".*.partial*"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "methods",
    [
        "msp,energy,mahalanobis",
        "temperature",
        "odin",
        "deep_ensemble",
        "mc_dropout",
        "evidential",
        "early_exit",
    ],
    ids=lambda methods: "posthoc-group" if "," in methods else methods,
)
def test_each_method_family_runs_under_ddp(tmp_path, methods):
    """A post-hoc group (its base trained under DDP), temperature scaling and ODIN (which
    differentiates its input) on their own, an ensemble, MC dropout, a trained head and early
    exits: each trains on two ranks and rank 0 writes every run of the group. The
    ensemble's member 0 is the cached base, trained first (by msp) as the refusal says."""
    out = tmp_path / "runs"
    if methods == "deep_ensemble":
        base = ["method=msp", "trainer.max_epochs=2", *DDP, f"out={tmp_path / 'base'}"]
        _succeeds("fit", *base, tmp_path=tmp_path)
    _succeeds(
        "fit",
        f"method={methods}",
        "trainer.max_epochs=2",
        *DDP,
        f"out={out}",
        "name=f",
        tmp_path=tmp_path,
    )
    names = methods.split(",")
    expected = ["f"] if len(names) == 1 else [f"f-{m}" for m in names]
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    for name, method in zip(sorted(expected), sorted(names), strict=True):
        document = json.loads((out / name / "metrics.json").read_text())
        assert document["method"] == method and 0.0 <= document["metrics"]["accuracy"]["id"] <= 1
    assert not _rank_temp(tmp_path)


@pytest.mark.slow
def test_a_bench_cell_under_ddp_runs_in_a_fresh_interpreter(tmp_path):
    """Lightning starts rank 1 by running the command line again, which a job forked from the
    bench's preloaded server does not have: such cells get a fresh ``uqbench fit``."""
    out = tmp_path / "bench"
    _succeeds(
        "bench",
        "method=evidential",
        "seed=13",
        "trainer.max_epochs=2",
        *DDP,
        f"bench.out={out}",
        "bench.resamples=100",
        tmp_path=tmp_path,
    )
    (cell,) = json.loads((out / "bench.json").read_text())["cells"].values()
    assert cell["status"] == "done"
    header = Path(cell["log"]).read_text().splitlines()[0]
    assert f"{sys.executable} -m uqbench fit method=evidential" in header
