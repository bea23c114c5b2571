"""Evidential deep learning on the device: Dirichlet parameters alpha = eta softplus(z) + 1
from the logits; probabilities E[p] = alpha / S; score C / S (vacuity) or 1 - max E[p]."""

from __future__ import annotations

from dataclasses import dataclass

from uqbench.deploy.device_score import DeviceScore, c_float, f32, softplus


@dataclass(frozen=True, eq=False)
class Evidential(DeviceScore):
    kind = "evidential"
    eta: float = 1.0
    vacuity: bool = False

    def host(self, outputs, layout):
        logits = layout[0].dequantize(outputs)
        alpha = (f32(self.eta) * softplus(logits) + f32(1)).astype(f32)
        total = alpha.sum(1, dtype=f32)
        expected = (alpha / total[:, None]).astype(f32)
        if self.vacuity:
            return expected, (f32(logits.shape[1]) / total).astype(f32)
        return expected, (f32(1) - expected.max(1)).astype(f32)

    def c_body(self, outputs):
        tail = (
            "  return (float)UQ_CLASSES / s;"
            if self.vacuity
            else "  float best = 0.0f;\n  for (int c = 0; c < UQ_CLASSES; c++) "
            "if (probs[c] > best) best = probs[c];\n  return 1.0f - best;"
        )
        return f"""  float s = 0.0f;
  for (int c = 0; c < UQ_CLASSES; c++) {{
    float soft = t0[c] > 20.0f ? t0[c] : log1pf(expf(t0[c]));
    probs[c] = {c_float(self.eta)} * soft + 1.0f;
    s += probs[c];
  }}
  for (int c = 0; c < UQ_CLASSES; c++) probs[c] = probs[c] / s;
{tail}"""
