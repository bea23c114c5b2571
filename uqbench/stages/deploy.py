"""The deploy stage: a finished run as int8 firmware per board, checked and measured.

For a run folder and boards it writes ``deploy/<board>/`` inside the run folder (see
:func:`uqbench.deploy.pipeline.deploy` for the steps):

- ``model.tflite``: the backbone as a standard int8 TFLite model;
- ``project/``: the standalone C project (``model.c``/``model.h``, the kernels, ``uq_score.c``,
  a ``Makefile`` and a ``README.md``) a user builds for a real board;
- ``firmware.elf`` builds: the emulation firmware (the project plus a test harness);
- ``deploy.json``: sizes, OOM, instructions, MACs, the latency estimate and its model, the
  extras by component, the bit-exact checks, int8 against float quality on every set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def deploy_run(run: Path, boards: list[Any]) -> dict[str, Any]:
    """Deploy the run at ``run`` (rebuilt, its checkpoint loaded with ``weights_only=True``)
    to ``boards`` (:class:`~uqbench.deploy.boards.Board`); returns ``{board: deploy.json}``."""
    from uqbench.deploy.firmware import check_toolchain
    from uqbench.deploy.pipeline import deploy
    from uqbench.stages.rebuild import load_run

    check_toolchain()
    resolved, method, datamodule, _ = load_run(run)
    about = {"method": resolved.config.method, "backbone": resolved.backbone}
    return deploy(method, datamodule, boards, run / "deploy", about)
