"""How ``uqbench bench`` runs one job's ``uqbench fit``: as a fork of a preloaded server, or in a
fresh interpreter.

Either way every job is a process of its own, so a cell's seeds, threads, global state and
failures (a crash included) stay its own. A fresh interpreter pays the imports every time:
torch, Lightning, torchmetrics and the plugins take 5-6 s on the development machine, and a
digits cell trains for 10-45 s. The preloaded server (multiprocessing's ``forkserver``) is a
separate, single-threaded process that imports them once and runs nothing else; each job is a
fork of it, so it starts where a fresh interpreter would be after its imports, in
milliseconds. The job then gets the bench's environment, working folder and command line, and
its output goes to the job's log as before.

A job that Lightning would launch again as a command (``trainer.strategy=ddp``) runs in a fresh
interpreter: its other ranks rerun ``sys.argv``, which only a real ``uqbench`` command has.
As with any multiprocessing child, a job first imports the bench's ``__main__`` module under
another name: the ``uqbench`` command and ``python -m`` are safe, a script that starts a bench
must keep its own work under ``if __name__ == "__main__":`` (or use ``bench.preload=false``).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from multiprocessing import forkserver
from pathlib import Path

PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies
# What every job imports; the matrix's own plugins are added by the bench.
CORE_MODULES = (
    "uqbench.cli",
    "uqbench.runner",
    "uqbench.report",
    "uqbench.stages.deploy",
    "uqbench.leaderboards.runs",
    "lightning.pytorch",
    "torchmetrics",
)


def die_with_parent() -> None:
    """In the child, before it runs: ask Linux to send SIGTERM when its parent dies (SIGKILL
    included), so no cell outlives the bench that started it. Elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _open_log(log: Path, command: list[str]) -> int:
    """The log's descriptor for appending, after a header line naming the attempt."""
    log.parent.mkdir(parents=True, exist_ok=True)
    header = f"=== {datetime.now().isoformat(timespec='seconds')} {' '.join(command)}\n"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, header.encode())
    return fd


def run_fresh(arguments: list[str], log: Path) -> tuple[int, float]:
    """(exit status, seconds) of ``python -m uqbench <arguments>`` as a child process that
    dies with the bench, its output appended to ``log``."""
    command = [sys.executable, "-m", "uqbench", *arguments]
    started = time.perf_counter()
    fd = _open_log(log, command)
    try:
        status = subprocess.run(
            command, stdout=fd, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        ).returncode
    finally:
        os.close(fd)
    return status, time.perf_counter() - started


def start_preloaded(modules: list[str]) -> None:
    """Start the server that imports ``modules`` once (torch, Lightning, the plugins) and forks
    the jobs. Returns at once: the imports run beside whatever the bench does next, and the
    first :func:`run_forked` waits for them. Modules that fail to import are left to each job
    to import (and report) itself."""
    multiprocessing.set_forkserver_preload([*CORE_MODULES, *modules])
    forkserver.ensure_running()


def run_forked(
    arguments: list[str], log: Path, entry: str = "uqbench.cli:main"
) -> tuple[int, float]:
    """(exit status, seconds) of ``entry(arguments)`` (``module:function``, by default the
    ``uqbench`` command) in a fork of the preloaded server, its output appended to ``log``. The
    status is what ``entry`` returns; a job killed by a signal gives minus that signal, as
    :func:`subprocess.run` does."""
    started = time.perf_counter()
    command = ["uqbench"] if entry == "uqbench.cli:main" else [entry]
    os.close(_open_log(log, [*command, *arguments]))
    context = multiprocessing.get_context("forkserver")
    job = context.Process(
        target=_job_main,
        args=(entry, arguments, str(log), dict(os.environ), os.getcwd()),
        name=f"uqbench-{log.stem}",
    )
    job.start()
    job.join()
    return job.exitcode if job.exitcode is not None else 1, time.perf_counter() - started


def _let_go_of_the_bench() -> None:
    """Close this process's copy of the pipe whose closing tells the server that the bench is
    gone. multiprocessing hands it to every child (so that a child can start processes of its
    own through the server); a job holding it would keep the server alive after the bench is
    killed, and the job with it, since its parent-death signal comes from the server."""
    server = forkserver._forkserver
    if server._forkserver_alive_fd is not None:
        os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = None  # a process this job starts gets a server of its own


def _job_main(
    entry: str, arguments: list[str], log: str, environ: dict[str, str], cwd: str
) -> None:
    """The job, in the forked process: the bench's environment, folder and command line, its
    output to the log, then ``entry``; what it returns is the exit status."""
    import importlib

    die_with_parent()
    _let_go_of_the_bench()
    os.environ.clear()
    os.environ.update(environ)
    os.chdir(cwd)
    sys.argv = ["uqbench", *arguments]
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    module, _, function = entry.partition(":")
    sys.exit(getattr(importlib.import_module(module), function)(arguments))
