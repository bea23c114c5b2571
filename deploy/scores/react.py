"""ReAct on the device: the pooled penultimate vector clipped, the classifier, energy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from uqbench.deploy.device_score import DeviceScore, c_float, f32
from uqbench.deploy.scores.classifier import classifier_energy, classifier_energy_c


@dataclass(frozen=True, eq=False)
class ReAct(DeviceScore):
    """``fitted``: the classifier (``classifier_w`` [C, D], ``classifier_b`` [C]); ``taps``:
    ``("penultimate",)``."""

    kind = "react"
    threshold: float = 1.0

    def host(self, outputs, layout):
        clipped = np.minimum(layout[1].dequantize(outputs), f32(self.threshold))
        return classifier_energy(clipped, self.fitted)

    def c_body(self, outputs):
        t = c_float(self.threshold)
        return classifier_energy_c(outputs[1].size, f"(t1[j] < {t} ? t1[j] : {t})")
