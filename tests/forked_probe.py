"""Entry points for the forked-job tests (imported in the job, from the tests' folder)."""

from __future__ import annotations

import os
import signal
import sys

STATE = "as imported"


def report(arguments: list[str]) -> int:
    """Print what the job sees; the exit status is the first argument."""
    import torch

    print(f"env={os.environ.get('UQBENCH_PROBE')} cwd={os.getcwd()} argv={sys.argv[1:]}")
    print(f"state={STATE} threads={torch.get_num_threads()} seed={torch.initial_seed()}")
    return int(arguments[0])


def dirty(arguments: list[str]) -> int:
    """Change what a later job must not see: a module global, torch's threads and seed."""
    import torch

    global STATE
    STATE = "changed by an earlier job"
    torch.set_num_threads(1)
    torch.manual_seed(1234)
    return 0


def crash(arguments: list[str]) -> int:
    """Die the way a segfault in a kernel would."""
    os.kill(os.getpid(), signal.SIGSEGV)
    return 0
