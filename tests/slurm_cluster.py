"""A one-node SLURM cluster on this machine for the tests: Debian's slurm-wlm and munge,
installed when missing, configured in a private folder (this host, its cores and memory),
started, and stopped with nothing left running. What the README's SLURM section runs."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("slurmctld", "slurmd", "munged")


class ClusterError(RuntimeError):
    pass


def install() -> None:
    """apt-get install the packages (as root, or through sudo) unless they are there."""
    if all(shutil.which(d) for d in DAEMONS):
        return
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
    ):
        done = subprocess.run([*sudo, *command], capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise ClusterError(
                f"cannot install {' '.join(PACKAGES)} ({' '.join(command)} exited "
                f"{done.returncode}: {done.stderr[-500:]}); install them, as root, to run the "
                f"SLURM tests"
            )


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise ClusterError("no MemTotal in /proc/meminfo")


class Cluster:
    """``with Cluster(folder) as env:`` starts munged, slurmctld and slurmd, waits until the
    node is idle and gives the environment that points SLURM's commands at it."""

    def __init__(self, folder: Path, partition: str = "debug") -> None:
        self.folder, self.partition = Path(folder), partition
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.folder / "slurm.conf"
        self.env = os.environ | {"SLURM_CONF": str(self.conf)}

    def _write(self) -> None:
        munge = self.folder / "munge"
        for sub in ("munge", "spool", "state", "log"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        munge.chmod(0o700)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        memory = max(1024, _memory_mb() - 2048)
        f = self.folder
        self.conf.write_text(
            f"""ClusterName=uqbench-tests
SlurmctldHost={self.host}
AuthType=auth/munge
AuthInfo=socket={munge}/munge.socket.2
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
SlurmctldPidFile={f}/slurmctld.pid
SlurmdPidFile={f}/slurmd.pid
SlurmdSpoolDir={f}/spool
StateSaveLocation={f}/state
SlurmctldLogFile={f}/log/slurmctld.log
SlurmdLogFile={f}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
KillWait=5
OverTimeLimit=0
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
NodeName={self.host} CPUs={os.cpu_count()} RealMemory={memory} State=UNKNOWN
PartitionName={self.partition} Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
"""
        )

    def _run(self, *command: str) -> None:
        done = subprocess.run(command, capture_output=True, text=True, env=self.env)
        if done.returncode != 0:
            raise ClusterError(f"{' '.join(command)} failed: {done.stderr[-800:]}")

    def __enter__(self) -> dict[str, str]:
        if os.geteuid() != 0:
            raise ClusterError("the test cluster's daemons run as root; run the tests as root")
        install()
        self._write()
        munge = self.folder / "munge"
        self._run(
            "munged",
            f"--key-file={munge}/munge.key",
            f"--socket={munge}/munge.socket.2",
            f"--pid-file={munge}/munged.pid",
            f"--log-file={munge}/munged.log",
            f"--seed-file={munge}/munged.seed",
            "--force",
        )
        self._run("slurmctld")
        self._run("slurmd")
        deadline = time.monotonic() + 60
        state = ""
        while time.monotonic() < deadline:
            done = subprocess.run(
                ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=self.env
            )
            state = done.stdout.strip()
            if state == "idle":
                return self.env
            time.sleep(0.5)
        self.__exit__(None, None, None)
        log = (self.folder / "log" / "slurmctld.log").read_text()[-800:]
        raise ClusterError(f"the node did not become idle in 60 s (sinfo: {state!r}); {log}")

    def __exit__(self, *exc: object) -> None:
        subprocess.run(
            ["scancel", "--full", "--partition", self.partition], env=self.env, capture_output=True
        )
        subprocess.run(["scontrol", "shutdown"], env=self.env, capture_output=True)
        for pid_file in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid"):
            path = self.folder / pid_file
            _stop(int(path.read_text()) if path.is_file() else None)


def _stop(pid: int | None, wait: float = 10.0) -> None:
    if pid is None:
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def running(env: dict[str, str]) -> list[str]:
    """The ids of the cluster's queued or running jobs."""
    done = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, env=env)
    return done.stdout.split()
