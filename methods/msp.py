"""``msp``: maximum softmax probability, the paper's BASE (Hendrycks & Gimpel, 2017).

A classifier trained with cross-entropy; uncertainty ``1 - max_c softmax(z)_c`` in [0, 1 - 1/C].
Post-hoc: it reuses the cached base classifier for the same backbone, data, seed and training
configuration.
"""

from __future__ import annotations

from torch import Tensor

from uqbench.backbones.base import BackboneOutput
from uqbench.method import PostHocMethod


class MSP(PostHocMethod):
    def score(self, out: BackboneOutput) -> Tensor:
        return 1.0 - out.logits.softmax(dim=-1).amax(dim=-1)

    def device_export(self):
        from uqbench.deploy.scores.logits import MSP as DeviceMSP

        return DeviceMSP()
