"""``react``: rectified activations (Sun et al., 2021), then the energy score.

The pooled penultimate vector is clipped at ``c``, the ``percentile`` (default 90, OpenOOD's)
of all dev activations flattened; the classifier reads the clipped vector, and the score is
``-logsumexp(z_clipped)`` (energy at T = 1). Predictions come from the clipped logits too, as
in OpenOOD.
"""

from __future__ import annotations

import torch
from uqbench.methods.energy import energy

from uqbench.backbones.base import BackboneOutput
from uqbench.method import CostFacts, PostHocMethod, UQOutput
from uqbench.tuning import check_range


class ReAct(PostHocMethod):
    """Args: ``percentile``: the clip threshold's percentile of dev activations, in (0, 100)."""

    def __init__(self, backbone, percentile: float = 90.0, **kwargs) -> None:
        super().__init__(backbone, **kwargs)
        check_range((percentile,), "method.percentile", 0.0, 100.0)
        self.percentile = percentile
        self.register_buffer("threshold", torch.tensor(float("inf")))

    def calibrate(self, data) -> None:
        values = data.record("dev").out.pooled.flatten().double()
        self.threshold.fill_(float(torch.quantile(values, self.percentile / 100.0)))

    def output(self, out: BackboneOutput) -> UQOutput:
        clipped = out.pooled.clamp(max=float(self.threshold))
        logits = self.backbone.forward_head(clipped)
        return UQOutput(logits, energy(logits))

    def tuned(self) -> dict:
        return {"threshold": float(self.threshold), "percentile": self.percentile}

    def cost_facts(self) -> CostFacts:
        return CostFacts(extra_params=1, exports=("clip threshold", "logsumexp"))

    def device_export(self):
        """The clip and the classifier in float32 on the pooled penultimate vector."""
        from uqbench.deploy.scores.classifier import linear_head
        from uqbench.deploy.scores.react import ReAct as DeviceReAct

        constants = linear_head(self.backbone)
        if constants is None:
            return None
        return DeviceReAct(("penultimate",), constants, threshold=float(self.threshold))

    def device_export_reason(self) -> str:
        return "the backbone's head is not one linear classifier (backbone.classifier)"
