"""A third-party uqbench method: one minus the softmax margin (top-1 minus top-2 probability),
with its device score, so that `uqbench deploy` runs it on a microcontroller."""

from dataclasses import dataclass

import numpy as np
from torch import Tensor
from uqbench.deploy.device_score import DeviceScore, c_float, f32

from uqbench import BackboneOutput, PostHocMethod


class Margin(PostHocMethod):
    """Scores 1 - (p_(1) - p_(2)) of softmax(z / temperature); higher = more uncertain."""

    def __init__(self, backbone, temperature: float = 1.0, **kwargs) -> None:
        super().__init__(backbone, **kwargs)
        self.temperature = temperature

    def score(self, out: BackboneOutput) -> Tensor:
        top2 = (out.logits / self.temperature).softmax(-1).topk(2, dim=-1).values
        return 1.0 - (top2[:, 0] - top2[:, 1])

    def device_export(self) -> "MarginScore":
        return MarginScore(temperature=float(self.temperature))


@dataclass(frozen=True, eq=False)
class MarginScore(DeviceScore):
    """The margin on the device: the int8 logits dequantized (``t0``), softmax(z / T) in
    float32, then 1 - (p_(1) - p_(2)). The host reference and the C body compute the same
    float32 operations in the same order."""

    kind = "margin"  # its name in the uqbench.device_scores entry-point group
    tolerance = 1e-5  # relative, firmware against host: one expf per class
    # (abs_tolerance, 1e-6 by default, covers 1 - (p1 - p2) near 0, where relative error is
    # no measure)
    temperature: float = 1.0

    def host(self, outputs, layout):
        z = layout[0].dequantize(outputs) / f32(self.temperature)
        e = np.exp(z - z.max(1, keepdims=True), dtype=f32)
        probs = (e / e.sum(1, keepdims=True, dtype=f32)).astype(f32)
        top2 = -np.sort(-probs, axis=1)[:, :2]
        return probs, (f32(1) - (top2[:, 0] - top2[:, 1])).astype(f32)

    def c_body(self, outputs):
        return f"""  float z[UQ_CLASSES], p1 = 0.0f, p2 = 0.0f;
  for (int i = 0; i < UQ_CLASSES; i++) z[i] = t0[i] / {c_float(self.temperature)};
  uq_softmax(z, probs, UQ_CLASSES);
  for (int i = 0; i < UQ_CLASSES; i++) {{
    if (probs[i] > p1) {{ p2 = p1; p1 = probs[i]; }}
    else if (probs[i] > p2) p2 = probs[i];
  }}
  return 1.0f - (p1 - p2);"""
