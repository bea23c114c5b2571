"""``uqbench bench``: a matrix of fits, each cell its own process, resumable, in parallel.

``uqbench bench method=[msp,energy] data=[digits] seed=[13,17,23] deploy=[small-mcu]`` runs
one ``uqbench fit`` per (data, method, seed) cell as a child process, ``bench.jobs`` at a time.
Every other ``key=value`` is passed to every cell. Before any cell runs, every name is checked
(all unknown methods, datamodules and boards listed at once) and every cell's configuration is
resolved as ``uqbench fit`` would (options, data files, toolchain); bad input stops the bench
with nothing run.

Each cell writes ``<bench.out>/<method>-<data>-s<seed>-<hash>/``, the hash taken over the
cell's resolved command line, and its output to ``<bench.out>/logs/<cell>.log``. A cell whose
folder is complete (``metrics.json``, and ``deploy.json`` per board when deploying) is reused,
so a killed bench rerun with the same command runs only what is missing. A cell that fails is
recorded with its error and the command that reproduces it, and the others go on.

At the end ``<bench.out>/bench.json`` records every cell, ``<bench.out>/leaderboard.md``
tabulates the completed runs (mean and standard deviation over seeds, per data set) and
``<bench.out>/leaderboards/<data>/`` holds each data set's leaderboard with 95% bootstrap
intervals, paired differences against ``bench.reference`` and plots (:mod:`uqbench.leaderboards`).
Post-hoc cells of one (data, seed, other overrides) run as one group process
(``uqbench fit method=a,b,...``): one base model and one recorded pass per split for all of
them, as a group fit does; their folders are ``<bench.out>/posthoc-<data>-s<seed>-<hash>-<method>``.
A failure in a group process fails the group's cells that it left incomplete.

Every job is a process of its own. Locally each is forked from a server that imported torch,
Lightning and the matrix's plugins once (``bench.preload=false``: a fresh interpreter per job,
as ``uqbench fit`` starts), see :mod:`uqbench.bench_processes`. Jobs start in the order of
:mod:`uqbench.bench_schedule`: a job whose base model another running job is training waits and
then loads it from the cache, and the longest kinds go first. Locally, a slot with nothing to
start computes finished runs' leaderboard statistics into the cache the leaderboards read.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from uqbench.bench_schedule import Schedule
from uqbench.config import logger_names
from uqbench.errors import ConfigError
from uqbench.run_folder import atomic_write_bytes, atomic_write_json, check_writable_folder

MATRIX_KEYS = ("method", "data", "seed")
BENCH_TYPES: dict[str, Any] = {
    "jobs": int,
    "out": str,
    "reference": str,
    "resamples": int,
    "launcher": Literal["local", "slurm", "submitit-local"],
    "partition": str,
    "gpus": int,
    "time_min": int,
    "preload": bool,
}
BENCH_KEYS = tuple(f"bench.{name}" for name in BENCH_TYPES)
LOG_TAIL = 1500  # characters of a failed cell's log kept in bench.json
MAX_JOBS = 256  # processes at once; each imports torch


def _digest(parts: tuple[str, ...]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Cell:
    """One fit of the matrix: its coordinates and the ``uqbench fit`` overrides it runs with
    (``method=<method>`` first). A post-hoc cell belongs to the ``group`` of its (data, seed,
    other overrides): the group runs as one ``uqbench fit method=a,b,...``, one base model and
    one recorded pass per split, and its run folders are ``<group>-<method>``."""

    method: str
    data: str
    seed: int
    overrides: tuple[str, ...]
    group: str | None = None
    base: str | None = None  # the cached base model's key, for a cell that starts from one
    fresh_process: bool = False  # run in a fresh interpreter, never forked (DDP relaunches)

    @property
    def name(self) -> str:
        if self.group:
            return f"{self.group}-{self.method}"
        return f"{self.method}-{self.data}-s{self.seed}-{_digest(self.overrides)}"

    @property
    def shared(self) -> tuple[str, ...]:
        """The overrides but the method: equal for the cells of one group."""
        return self.overrides[1:]

    @property
    def logger(self) -> str:
        """The cell's ``logger=`` (csv unless it says otherwise)."""
        given = [o.partition("=")[2] for o in self.overrides if o.startswith("logger=")]
        return given[-1] if given else "csv"


@dataclass(frozen=True)
class Job:
    """One ``uqbench fit`` process: a cell, or the missing cells of one post-hoc group."""

    cells: tuple[Cell, ...]

    @property
    def name(self) -> str:
        return self.cells[0].group if len(self.cells) > 1 else self.cells[0].name

    @property
    def base(self) -> str | None:
        """The key of the base model the job loads, or trains and caches (the cells of a group
        share one)."""
        return self.cells[0].base

    @property
    def kind(self) -> tuple[Any, ...]:
        """What makes jobs alike in duration: their methods and data set, not the seed."""
        return tuple(c.method for c in self.cells), self.cells[0].data

    def command(self, out: Path) -> list[str]:
        methods = ",".join(c.method for c in self.cells)
        return [
            "uqbench",
            "fit",
            f"method={methods}",
            *self.cells[0].shared,
            f"out={out}",
            f"name={self.name}",
        ]


@dataclass
class Matrix:
    cells: list[Cell]
    jobs: int
    out: Path
    boards: list[str] = field(default_factory=list)
    reference: str = "msp"  # the leaderboards' paired differences are against this method
    resamples: int = 1000  # bootstrap resamples per run for the intervals
    launcher: Launcher | None = None  # None: child processes on this machine
    preload: bool = True  # local jobs fork from a server that imported torch & co. once


def parse_matrix(overrides: list[str]) -> Matrix:
    """The matrix of ``overrides``: the lists of methods, datamodules and seeds, the bench's own
    options, and everything else passed to every cell. Names are checked against the installed
    plugins, all unknown ones in one error."""
    from uqbench import registry
    from uqbench.config import coerce

    lists: dict[str, list[Any]] = {"method": ["snapuq"], "data": ["digits"], "seed": [13, 17, 23]}
    options: dict[str, Any] = {
        "jobs": 1,
        "out": "runs/bench",
        "reference": "msp",
        "resamples": 1000,
        "launcher": "local",
        "partition": "",
        "gpus": 0,
        "time_min": 60,
        "preload": True,
    }
    passed, boards = [], []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"uqbench bench: {item!r} is not key=value")
        if key in MATRIX_KEYS:  # typed with fit's grammar, as every option below
            lists[key] = coerce(value, list[int] if key == "seed" else list[str], key)
        elif key in BENCH_KEYS:
            name = key.removeprefix("bench.")
            options[name] = coerce(value, BENCH_TYPES[name], key)
        elif key.startswith("bench."):
            raise ConfigError(f"unknown bench option {key!r}; the options: {', '.join(BENCH_KEYS)}")
        elif key in ("out", "name", "run"):
            raise ConfigError(
                f"uqbench bench names its cells itself: {key}= is not accepted "
                f"(bench.out= sets the folder)"
            )
        elif key == "deploy":
            boards = coerce(value, list[str], key)
        else:
            passed.append(item)
    wanted = {
        "method": [*lists["method"], options["reference"]],
        "data": lists["data"],
        "board": boards,
    }
    unknown = [
        f"{kind} {name!r}"
        for kind, names in wanted.items()
        for name in names
        if name not in registry.names(kind)
    ]
    if unknown:
        installed = {kind: ", ".join(registry.names(kind)) for kind in ("method", "data", "board")}
        raise ConfigError(
            f"uqbench bench: unknown {', '.join(unknown)}. Installed: methods "
            f"{installed['method']}; datamodules {installed['data']}; boards {installed['board']}"
        )
    seeds, jobs, resamples = lists["seed"], options["jobs"], options["resamples"]
    gpus, time_min = options["gpus"], options["time_min"]
    launcher = None
    if options["launcher"] != "local":
        launcher = Launcher(options["launcher"], options["partition"], gpus, time_min)
        launcher.check()
    if not 1 <= jobs <= MAX_JOBS:
        raise ConfigError(f"bench.jobs must be in 1..{MAX_JOBS}, got {str(jobs)[:30]}")
    check_writable_folder(Path(options["out"]), "bench.out")
    deploy = [f"deploy={','.join(boards)}"] if boards else []
    cells = [
        Cell(
            method,
            data,
            seed,
            (f"method={method}", f"data={data}", f"seed={seed}", *passed, *deploy),
        )
        for data, seed, method in itertools.product(lists["data"], seeds, lists["method"])
    ]
    if not cells:
        raise ConfigError("uqbench bench: the matrix is empty (a list with no names)")
    return Matrix(
        cells,
        jobs,
        Path(options["out"]),
        boards,
        options["reference"],
        resamples,
        launcher,
        options["preload"],
    )


def check_cells(matrix: Matrix) -> Matrix:
    """Resolve every cell as ``uqbench fit`` would, before any runs: options, data files,
    models, boards and the toolchain. Raises on the first cell that ``uqbench fit`` refuses.
    Returns the matrix with its post-hoc cells (trained base, nothing trained, scored from the
    recorded pass) grouped by (data, seed, other overrides), and each cell's base-model key."""
    import dataclasses

    from uqbench.bootstrap import MAX_RESAMPLES
    from uqbench.config import parse_overrides
    from uqbench.runner import deploy_boards
    from uqbench.stages import base_model, train
    from uqbench.stages.resolve import dry_run, resolve

    # Checked here, not in parse_matrix: its module imports torch, and parsing stays light so
    # that the preloaded server's imports start at once.
    if not 100 <= matrix.resamples <= MAX_RESAMPLES:
        raise ConfigError(
            f"bench.resamples must be in 100..{MAX_RESAMPLES:,} (at least 100 for a 95% "
            f"interval), got {str(matrix.resamples)[:30]}"
        )
    cells = []
    for cell in matrix.cells:
        config = parse_overrides(list(cell.overrides))
        try:
            resolved = resolve(dataclasses.replace(config, method=cell.method))
            dry_run([resolved])
        except ConfigError as exc:
            raise ConfigError(f"cell {cell.name} ({' '.join(cell.overrides)}): {exc}") from None
        needs = resolved.needs
        if needs.base and not needs.trains and needs.scores_from == "record":
            group = f"posthoc-{cell.data}-s{cell.seed}-{_digest(cell.shared)}"
            cell = dataclasses.replace(cell, group=group)
        if needs.base:
            spec = base_model.base_spec(resolved, train.run_device(resolved))
            cell = dataclasses.replace(cell, base=base_model.base_key(spec))
        if "ddp" in str(resolved.trainer_args.get("strategy", "")):
            cell = dataclasses.replace(cell, fresh_process=True)
        cells.append(cell)
    deploy_boards(",".join(matrix.boards) or None)
    return dataclasses.replace(matrix, cells=cells)


def start_workers(matrix: Matrix) -> None:
    """Start the preloaded server that local jobs fork from (:mod:`uqbench.bench_processes`):
    torch, Lightning and the matrix's methods and datamodules, imported once."""
    if matrix.launcher or not matrix.preload:
        return
    from uqbench import registry
    from uqbench.bench_processes import start_preloaded

    modules = {registry.module_of("method", c.method) for c in matrix.cells}
    modules |= {registry.module_of("data", c.data) for c in matrix.cells}
    start_preloaded(sorted(modules))


def jobs_for(cells: list[Cell]) -> list[Job]:
    """The processes that run ``cells``, in their order: one per cell, but one per post-hoc
    group (its place is its first cell's)."""
    buckets: dict[str, list[Cell]] = {}
    for cell in cells:
        buckets.setdefault(cell.group or cell.name, []).append(cell)
    return [Job(tuple(bucket)) for bucket in buckets.values()]


def is_complete(cell: Cell, out: Path, boards: list[str]) -> bool:
    """The cell's run folder is finished and readable and holds a deploy record per board."""
    from uqbench.leaderboards.runs import check_run

    folder = out / cell.name
    return check_run(folder) is None and _deployed(folder, boards)


def _deployed(folder: Path, boards: list[str]) -> bool:
    return all((folder / "deploy" / b / "deploy.json").is_file() for b in boards)


def wait_for_live_cells(job: Job, out: Path, poll_s: float = 1.0) -> None:
    """Wait while another live process (an earlier bench's cell, on this host or another)
    writes one of the job's run folders; the job then reuses what it finished."""
    from uqbench.run_folder import PARTIAL, owner_alive

    partials = [out / f"{cell.name}{PARTIAL}" for cell in job.cells]
    announced = False
    while any(owner_alive(p) for p in partials):
        if not announced:
            print(f"uqbench bench: waiting for a live run writing {job.name}", flush=True)
            announced = True
        time.sleep(poll_s)


def _run_job(job: Job, out: Path, forked: bool = False) -> tuple[int, float, str]:
    """(exit status, seconds, log path) of one job's ``uqbench fit``, in a fork of the
    preloaded server or a fresh interpreter (:mod:`uqbench.bench_processes`); its output is
    appended to the job's log under a header line."""
    from uqbench.bench_processes import run_forked, run_fresh

    log = out / "logs" / f"{job.name}.log"
    run = run_forked if forked and not any(c.fresh_process for c in job.cells) else run_fresh
    status, seconds = run(job.command(out)[1:], log)
    return status, seconds, str(log)


@dataclass(frozen=True)
class Launcher:
    """Cells as jobs of a cluster through submitit: ``slurm`` (``partition``, ``gpus`` per
    job, ``time_min`` limit), or ``submitit-local`` (submitit's local executor: the same path,
    on this machine). Each job runs the cell's ``uqbench fit`` as a child process, so a job's
    failure is a cell's failure, recorded like any other."""

    kind: str
    partition: str
    gpus: int
    time_min: int
    job_ids: dict[str, str] = field(default_factory=dict, compare=False)  # job name -> id

    def check(self) -> None:
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"bench.launcher={self.kind} needs submitit: pip install "
                "submitit (or the project's [slurm] extra)"
            ) from None
        if self.kind == "slurm" and not self.partition:
            raise ConfigError("bench.launcher=slurm needs bench.partition=<your partition>")
        if self.gpus < 0 or self.time_min < 1:
            raise ConfigError("bench.gpus must be >= 0 and bench.time_min >= 1")

    def run(self, job: Job, out: Path) -> tuple[int, float, str]:
        """Submit the job, wait for it, return what :func:`_run_job` returned on the node."""
        import logging

        import submitit

        # Without SLURM's accounting database submitit warns at every poll that it falls back
        # to squeue: noise, since the outcome is read from the job's own output.
        logging.getLogger("submitit").setLevel(logging.ERROR)
        cluster = "slurm" if self.kind == "slurm" else "local"
        executor = submitit.AutoExecutor(folder=out / "submitit", cluster=cluster)
        options = {"slurm_partition": self.partition} if self.kind == "slurm" else {}
        executor.update_parameters(
            timeout_min=self.time_min, gpus_per_node=self.gpus, name=job.name, **options
        )
        submitted = executor.submit(_run_job, job, out)
        self.job_ids[job.name] = str(submitted.job_id)
        log = out / "logs" / f"{job.name}.log"
        try:
            status, seconds, where = self._wait(submitted)
            detail = ""
        except Exception as exc:  # noqa: BLE001 - a lost job is this cell's failure, not the bench's
            status, seconds, where, detail = 1, 0.0, str(log), f"{exc}\n"
        if status != 0:  # say why, from SLURM's own words when it ended the job
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a") as handle:
                handle.write(
                    f"\nthe {self.kind} job {submitted.job_id} was "
                    f"{_why_ended(submitted, self.time_min)}; its own output: "
                    f"{submitted.paths.stdout} and {submitted.paths.stderr}\n{detail}"
                )
        return status, seconds, where

    def _wait(self, submitted: Any) -> Any:
        """The job's result. Without SLURM's accounting database submitit cannot learn that a
        job was cancelled before it wrote a result, and would wait forever: a job that has
        left the queue for ``GONE_GRACE_S`` without a result is an error."""
        gone_since = None
        while not submitted.done():
            if self.kind == "slurm":
                if _in_queue(str(submitted.job_id)):
                    gone_since = None
                elif gone_since is None:
                    gone_since = time.monotonic()
                elif time.monotonic() - gone_since > GONE_GRACE_S:
                    raise RuntimeError(f"job {submitted.job_id} left the queue without a result")
            time.sleep(QUEUE_POLL_S)
        return submitted.result()


QUEUE_POLL_S = 2.0  # how often a waiting bench asks squeue about its job
BASE_POLL_S = 1.0  # how often a free slot checks whether a waited-for base is cached
GONE_GRACE_S = 15.0  # how long a job may be out of the queue before its result must be there


def _in_queue(job_id: str) -> bool:
    """Whether SLURM still lists the job (pending, running or completing)."""
    done = subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True)
    return done.returncode == 0 and bool(done.stdout.strip())


def _why_ended(submitted: Any, time_min: int) -> str:
    """Why a cluster job ended without a result, from its error output (SLURM's own line, or
    submitit's), which needs no accounting database."""
    try:
        stderr = Path(submitted.paths.stderr).read_text(errors="replace")
    except OSError:
        stderr = ""
    # SLURM's kill at the limit, or submitit's handling of the warning signal SLURM sends
    # shortly before it (the job is not checkpointable, so it stops there).
    if "DUE TO TIME LIMIT" in stderr or "timed-out and not checkpointable" in stderr:
        return f"killed by SLURM's time limit (bench.time_min={time_min})"
    if "CANCELLED" in stderr:
        return "cancelled (scancel)"
    return "unsuccessful (the cell's output is above)"


def _progress(
    done: int, failed: int, running: int, total: int, durations: list[float], jobs: int
) -> str:
    waiting = total - done - failed - running
    eta = ""
    if durations and waiting + running:
        seconds = sum(durations) / len(durations) * (waiting + running) / jobs
        eta = f", ETA {int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"[{done} done, {failed} failed, {running} running, {waiting} waiting of {total}{eta}]"


def run(matrix: Matrix) -> dict[str, Any]:
    """Run every missing cell, ``matrix.jobs`` processes at a time (a post-hoc group's missing
    cells in one process), in the order :class:`~uqbench.bench_schedule.Schedule` picks;
    return the bench record. Locally, a slot with no job to start computes a finished run's
    leaderboard statistics ahead (:func:`uqbench.leaderboards.runs.warm`)."""
    from uqbench.stages.base_model import is_cached_key

    matrix.out.mkdir(parents=True, exist_ok=True)
    # Cells that log to W&B share one group per bench (W&B's own variable; a user's wins).
    os.environ.setdefault("WANDB_RUN_GROUP", f"bench-{matrix.out.resolve().name}")
    for job in jobs_for(matrix.cells):
        wait_for_live_cells(job, matrix.out)
    record, todo = _existing(matrix)
    schedule = Schedule(jobs_for(todo), is_cached_key)
    total, durations = len(todo), []
    done = failed = 0
    print(
        f"uqbench bench: {len(matrix.cells)} cells, {len(matrix.cells) - total} complete "
        f"already (reused), {total} to run in {len(schedule.queue)} processes, {matrix.jobs} at "
        "a time"
    )
    forked = matrix.launcher is None and matrix.preload
    launch = matrix.launcher.run if matrix.launcher else functools.partial(_run_job, forked=forked)
    # Finished runs whose leaderboard statistics a free slot computes ahead, one process a job.
    reused = [c for c in matrix.cells if record.get(c.name, {}).get("status") == "reused"]
    ahead = [list(j.cells) for j in jobs_for(reused)] if forked else []
    with ThreadPoolExecutor(max_workers=matrix.jobs) as pool:
        pending: dict[Future, Job | None] = {}  # None: a leaderboard computed ahead
        while schedule.queue or pending or ahead:
            while len(pending) < matrix.jobs:
                job = schedule.next()
                if job is not None:
                    future = pool.submit(launch, job, matrix.out)
                    pending[future] = job
                    schedule.started(future, job)
                elif ahead:
                    pending[pool.submit(_ahead, ahead.pop(0), matrix)] = None
                else:
                    break
            # A free slot with jobs waiting for a base: look again soon, the base may be
            # cached before the job training it ends.
            idle = len(pending) < matrix.jobs and bool(schedule.queue)
            timeout = BASE_POLL_S if idle else None
            finished, _ = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
            for future in finished:
                job = pending.pop(future)
                if job is None:
                    continue
                status, seconds, log = future.result()
                schedule.finished(future, job, seconds)
                durations += [seconds / len(job.cells)] * len(job.cells)
                for cell in job.cells:
                    record[cell.name] = _outcome(cell, job, status, seconds, log, matrix)
                finished_cells = [c for c in job.cells if record[c.name]["status"] == "done"]
                done += len(finished_cells)
                failed += len(job.cells) - len(finished_cells)
                if finished_cells and forked:
                    ahead.append(finished_cells)
                running = sum(len(j.cells) for j in pending.values() if j is not None)
                running += sum(len(j.cells) for j in schedule.queue[: matrix.jobs - len(pending)])
                state = _progress(done, failed, running, total, durations, matrix.jobs)
                statuses = ", ".join(f"{record[c.name]['status']}: {c.name}" for c in job.cells)
                print(f"{state} {statuses} ({seconds:.1f} s)", flush=True)
    for cell in matrix.cells:  # each complete cell's headline numbers, for scripts
        if record[cell.name]["status"] in ("done", "reused"):
            record[cell.name]["headline"] = headline(matrix.out / cell.name, matrix.boards)
    document = {"cells": record, "out": str(matrix.out), "boards": matrix.boards}
    atomic_write_json(matrix.out / "bench.json", document)
    return document


def _existing(matrix: Matrix) -> tuple[dict[str, dict[str, Any]], list[Cell]]:
    """The record of the cells whose folder exists (reused, or damaged: never run over, left
    for the user to look at), and the cells to run."""
    from uqbench.leaderboards.runs import check_run

    record, todo = {}, []
    for cell in matrix.cells:
        folder = matrix.out / cell.name
        damage = check_run(folder) if folder.is_dir() else None
        if damage:
            error = f"{folder} is damaged ({damage}); remove it to run the cell again"
            print(f"uqbench bench: warning: {error}", file=sys.stderr)
            entry = {"status": "failed", "exit_status": None, "error": error, "log": ""}
            record[cell.name] = entry | {"cell": _coordinates(cell), "reproduce": ""}
        elif folder.is_dir() and _deployed(folder, matrix.boards):
            record[cell.name] = {"status": "reused", "cell": _coordinates(cell)}
        else:
            todo.append(cell)
    return record, todo


def _outcome(
    cell: Cell, job: Job, status: int, seconds: float, log: str, matrix: Matrix
) -> dict[str, Any]:
    """The cell's entry in bench.json after its job ended: done, or failed with the end of
    its log and the command that reproduces it."""
    entry: dict[str, Any] = {
        "cell": _coordinates(cell),
        "seconds": round(seconds, 1),
        "log": log,
        "process": job.name,
    }
    if status == 0 and is_complete(cell, matrix.out, matrix.boards):
        entry["status"] = "done"
    else:
        entry |= {
            "status": "failed",
            "exit_status": status,
            "error": Path(log).read_text()[-LOG_TAIL:],
            "reproduce": " ".join(job.command(matrix.out)),
        }
    if matrix.launcher and job.name in matrix.launcher.job_ids:
        entry["job_id"] = matrix.launcher.job_ids[job.name]
    return entry


def _ahead(cells: list[Cell], matrix: Matrix) -> None:
    """Compute finished cells' leaderboard statistics into the cache, in a forked process
    (its output to ``logs/leaderboard-ahead.log``); a failure only means the leaderboard
    computes them itself."""
    from uqbench.bench_processes import run_forked

    log = matrix.out / "logs" / "leaderboard-ahead.log"
    arguments = [str(matrix.resamples), *(str(matrix.out / c.name) for c in cells)]
    run_forked(arguments, log, entry="uqbench.leaderboards.runs:warm")


HEADLINE = {  # bench.json key -> path in metrics.json
    "auroc_id_vs_error": "id_vs_error/auroc",
    "auroc_id_vs_ood": "id_vs_ood/mean/auroc",
    "aurc_id": "selective/id/aurc",
    "ece": "calibration/ece",
    "accuracy_id": "accuracy/id",
    "accuracy_cid": "accuracy/cid_mean",
}


def headline(folder: Path, boards: list[str]) -> dict[str, Any]:
    """A complete run's headline metrics and, per board, its flash, peak RAM and latency."""
    import json

    from uqbench.metric_table import lookup

    metrics = json.loads((folder / "metrics.json").read_text())["metrics"]
    found: dict[str, Any] = {key: lookup(metrics, path) for key, path in HEADLINE.items()}
    for board in boards:
        doc = json.loads((folder / "deploy" / board / "deploy.json").read_text())
        if doc.get("deployable") and doc.get("fits"):
            found[board] = {
                "flash_bytes": doc["flash_bytes"]["total"],
                "peak_ram_bytes": doc["ram_bytes"]["peak"],
                "latency_ms": doc["latency"]["estimated_ms"],
            }
        else:
            found[board] = "not deployable" if not doc.get("deployable") else "OOM"
    return found


def write_leaderboard(matrix: Matrix, document: dict[str, Any], command: str) -> Path:
    """``<out>/leaderboard.md``: per data set, the completed runs' metrics (mean ± standard
    deviation over seeds) and, when deploying, their cost per board; then the failed cells
    with the command that reproduces each."""
    import json
    from datetime import date

    from uqbench.leaderboards.summary import (
        COMPONENTS_LEGEND,
        COST_LEGEND,
        components_table,
        cost_table,
        metrics_table,
    )

    seeds = sorted({c.seed for c in matrix.cells})
    lines = [
        "# uqbench bench",
        "",
        f"Generated by `{command}` on {date.today()} from the run folders in {matrix.out}.",
        f"Seeds {', '.join(map(str, seeds))}; mean ± standard deviation over the seeds whose run "
        "completed. AUROC: higher is better; AURC and ECE: lower is better.",
    ]
    for data in dict.fromkeys(c.data for c in matrix.cells):
        metrics: dict[str, list[dict[str, Any]]] = {}
        costs: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for cell in (c for c in matrix.cells if c.data == data):
            folder = matrix.out / cell.name
            if not is_complete(cell, matrix.out, matrix.boards):
                continue
            metrics.setdefault(cell.method, []).append(
                json.loads((folder / "metrics.json").read_text())["metrics"]
            )
            for board in matrix.boards:
                doc = json.loads((folder / "deploy" / board / "deploy.json").read_text())
                costs.setdefault(cell.method, {}).setdefault(board, []).append(doc)
        lines += ["", f"## {data}", ""]
        lines += metrics_table(metrics) if metrics else ["No completed run."]
        if matrix.boards and costs:
            lines += ["", f"### {data}: cost on the device", "", *COST_LEGEND, ""]
            lines += cost_table(costs, matrix.boards)
            for board in matrix.boards:
                lines += ["", f"#### {data} on {board}: extras by component", ""]
                lines += [*COMPONENTS_LEGEND, "", *components_table(costs, board)]
    failed = {n: e for n, e in document["cells"].items() if e["status"] == "failed"}
    if failed:
        lines += ["", "## Failed cells", ""]
        lines += [
            f"- {name}: exit status {e['exit_status']}; reproduce with `{e['reproduce']}`; "
            f"log {e['log']}"
            for name, e in failed.items()
        ]
    from uqbench.leaderboards import Options, RunRef, write_leaderboards

    complete = [c for c in matrix.cells if is_complete(c, matrix.out, matrix.boards)]
    refs = [RunRef(c.method, c.data, c.seed, matrix.out / c.name) for c in complete]
    if refs:
        options = Options(matrix.reference, matrix.resamples)
        folders = write_leaderboards(refs, matrix.out / "leaderboards", command, options)
        if any("wandb" in logger_names(c.logger) for c in matrix.cells):
            from uqbench.stages.wandb_run import log_leaderboard

            for readme in folders:  # its figures and tables beside the cells' runs
                log_leaderboard(readme.parent, os.environ.get("WANDB_RUN_GROUP"))
        lines += ["", "## Per data set: every task with 95% bootstrap intervals, plots", ""]
        lines += [f"- [{p.parent.name}]({p.relative_to(matrix.out)})" for p in folders]
    path = matrix.out / "leaderboard.md"
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path


def _coordinates(cell: Cell) -> dict[str, Any]:
    return {
        "method": cell.method,
        "data": cell.data,
        "seed": cell.seed,
        "overrides": list(cell.overrides),
    }
