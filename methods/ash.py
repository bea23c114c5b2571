"""``ash``: activation shaping (Djurisic et al., 2023), then the energy score.

Per example, of the ``n`` activations keep the top ``k = n - round(n p / 100)`` and zero the rest:

- ``ASH-P`` (``mode=p``): keep the kept values as they are;
- ``ASH-B`` (``mode=b``): set every kept value to ``sum(x) / k`` (binarize, preserving the sum);
- ``ASH-S`` (``mode=s``): scale the kept values by ``exp(sum(x) / sum(kept))``.

``on=pooled`` (the default) shapes the pooled penultimate vector, as ASH's official code and
OpenOOD do (ASH-B at p = 90); ``on=maps`` shapes the penultimate feature maps before pooling
(pytorch-ood's default, with ASH-S at 65%). The classifier reads the shaped features and the score
is ``-logsumexp(z)`` (energy at T = 1).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from uqbench.methods.energy import energy

from uqbench.backbones.base import BackboneOutput
from uqbench.method import CostFacts, PostHocMethod, UQOutput
from uqbench.recorded_pass import TapRequest
from uqbench.tuning import check_range


def ash(x: Tensor, percentile: float, mode: Literal["b", "p", "s"]) -> Tensor:
    """Shape each row of ``x`` [B, ...] (flattened per example); see the module docstring."""
    flat = x.flatten(1)
    n = flat.shape[1]
    k = max(n - round(n * percentile / 100.0), 1)
    # The k largest, ties to the lower index (a stable sort), as the device keeps them: with
    # int8 activations ties are common, and topk breaks them in no stated order.
    values, index = flat.sort(dim=1, descending=True, stable=True)
    values, index = values[:, :k], index[:, :k]
    if mode == "b":
        values = (flat.sum(1, keepdim=True) / k).expand_as(values)
    elif mode == "s":
        total, kept = flat.sum(1, keepdim=True), values.sum(1, keepdim=True)
        values = values * torch.exp(total / kept.clamp_min(1e-12))
    shaped = torch.zeros_like(flat).scatter(1, index, values)
    return shaped.view_as(x)


class ASH(PostHocMethod):
    """Args: ``mode``: ``b`` | ``p`` | ``s``; ``percentile`` in (0, 100); ``on``: ``pooled`` |
    ``maps``."""

    def __init__(
        self,
        backbone,
        mode: Literal["b", "p", "s"] = "b",
        percentile: float = 90.0,
        on: Literal["pooled", "maps"] = "pooled",
        **kwargs,
    ) -> None:
        super().__init__(backbone, **kwargs)
        check_range((percentile,), "method.percentile", 0.0, 100.0)
        self.mode, self.percentile, self.on = mode, percentile, on

    def record_request(self) -> TapRequest:
        return TapRequest(maps=frozenset({"penultimate"}) if self.on == "maps" else frozenset())

    def output(self, out: BackboneOutput) -> UQOutput:
        if self.on == "maps":
            shaped = self.backbone.pool(ash(out.taps["penultimate"], self.percentile, self.mode))
        else:
            shaped = ash(out.pooled, self.percentile, self.mode)
        logits = self.backbone.forward_head(shaped)
        return UQOutput(logits, energy(logits))

    def cost_facts(self) -> CostFacts:
        return CostFacts(
            exports=("top-k shaping", "logsumexp"),
            details={"mode": self.mode, "percentile": self.percentile, "on": self.on},
        )

    def device_export(self):
        """ASH with the classifier in float32: on the pooled vector (``on=pooled``), or on the
        whole int8 penultimate map (``on=maps``: the graph outputs the map, the device shapes
        it and pools it)."""
        from uqbench.deploy.device_score import MAP
        from uqbench.deploy.scores.ash import ASH as DeviceASH
        from uqbench.deploy.scores.ash import ASHMaps
        from uqbench.deploy.scores.classifier import linear_head

        constants = linear_head(self.backbone)
        if constants is None:
            return None
        if self.on == "maps":
            c, h, w = self.backbone.tap_shapes()["penultimate"]
            n = c * h * w
            k = max(n - round(n * self.percentile / 100.0), 1)
            return ASHMaps(("penultimate" + MAP,), constants, k=k, mode=self.mode, channels=c)
        n = constants["classifier_w"].shape[1]
        k = max(n - round(n * self.percentile / 100.0), 1)
        return DeviceASH(("penultimate",), constants, k=k, mode=self.mode)

    def device_export_reason(self) -> str:
        return "ASH is exported with a linear classifier (backbone.classifier) only"
