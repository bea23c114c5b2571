"""How Lightning speaks during a run: the report is the run's output, so Lightning's info lines
and tips go to debug. Its own module, below every stage that builds a Trainer."""

from __future__ import annotations

import logging
import warnings


def quiet_lightning() -> None:
    """Keep the run's output to the report: Lightning's info lines and tips go to debug."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*number of training batches.*")
    # On a machine with SLURM installed Lightning suggests srun for every fit, bench cells too.
    warnings.filterwarnings("ignore", message=".*The `srun` command is available.*")
