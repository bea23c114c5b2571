"""uqbench: single-pass uncertainty for tiny networks, benchmarked and deployed.

The public API is small and stable::

    from uqbench import UQMethod, PostHocMethod, Needs, UQOutput, CostFacts, UQDataModule, Backbone

Names are imported lazily so that ``uqbench --help`` does not pay for torch and Lightning.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "UQMethod": "uqbench.method",
    "UQOutput": "uqbench.method",
    "PostHocMethod": "uqbench.method",
    "BaseClassifier": "uqbench.method",
    "Needs": "uqbench.method",
    "Objective": "uqbench.method",
    "CostFacts": "uqbench.method",
    "DevData": "uqbench.dev_data",
    "calibrate_method": "uqbench.stages.calibrate",
    "UQDataModule": "uqbench.datamodule",
    "EvalSet": "uqbench.datamodule",
    "Backbone": "uqbench.backbones.base",
    "BackboneOutput": "uqbench.backbones.base",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'uqbench' has no attribute {name!r}")
