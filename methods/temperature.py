"""``temperature``: temperature scaling (Guo et al., 2017).

Probabilities ``softmax(z / T)`` with one scalar ``T > 0`` fitted on the clean dev split to
minimize NLL, either by L-BFGS on ``log T`` (``fit=lbfgs``, from T = 1) or by the paper's grid
{0.5, 0.75, 1, 1.25, 1.5, 2, 3} (``fit=grid``, searched by the shared tuning loop with dev NLL
as its objective). ``method.temperature=1.5`` fixes T. Score ``1 - max softmax(z / T)``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F

from uqbench.backbones.base import BackboneOutput
from uqbench.calibration import GRID, fit_temperature
from uqbench.errors import CalibrationError
from uqbench.method import CostFacts, Objective, PostHocMethod, UQOutput

DEV_NLL = Objective("NLL on dev", higher_is_better=False)


class Temperature(PostHocMethod):
    """Args: ``fit``: ``lbfgs`` or ``grid``; ``temperature``: fixes T (no fit)."""

    objective = DEV_NLL

    def __init__(
        self,
        backbone,
        fit: Literal["lbfgs", "grid"] = "lbfgs",
        temperature: float | None = None,
        **kwargs,
    ) -> None:
        super().__init__(backbone, **kwargs)
        if temperature is not None and not temperature > 0:
            raise CalibrationError(f"method.temperature must be > 0, got {temperature}")
        self.fit, self.fixed = fit, temperature
        self.register_buffer("temperature", torch.tensor(1.0))

    def search_space(self) -> dict[str, tuple[Any, ...]]:
        if self.fixed is not None:
            return {"temperature": (self.fixed,)}
        return {"temperature": GRID} if self.fit == "grid" else {}

    def tuning_scorer(self, data):
        dev = data.record("dev")
        logits, labels = dev.out.logits.double(), dev.labels
        return lambda c: float(F.cross_entropy(logits / c["temperature"], labels))

    def apply(self, choice: dict[str, Any]) -> None:
        self.temperature.fill_(choice["temperature"])

    def calibrate(self, data) -> None:
        if self.search_space():
            return  # the tuning loop sets T
        dev = data.record("dev")
        t = fit_temperature(dev.out.logits, dev.labels, "lbfgs")
        if not t > 0:
            raise CalibrationError(f"temperature fit failed (T = {t}); try method.fit=grid")
        self.temperature.fill_(t)

    def output(self, out: BackboneOutput) -> UQOutput:
        probs = (out.logits / self.temperature).softmax(-1)
        return UQOutput(out.logits, 1.0 - probs.amax(-1), probs)

    def tuned(self) -> dict:
        return {"temperature": float(self.temperature), "fit": self.fit}

    def cost_facts(self) -> CostFacts:
        return CostFacts(extra_params=1, exports=("temperature T",))

    def device_export(self):
        from uqbench.deploy.scores.logits import MSP as DeviceMSP

        return DeviceMSP(temperature=float(self.temperature))
