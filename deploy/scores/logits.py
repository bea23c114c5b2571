"""Scores of the logits alone, with a temperature: MSP (1 - max p), entropy and energy.

On the device the int8 logits are dequantized, divided by the temperature and passed through a
softmax in float32 (the boards' cores have an FPU)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from uqbench.deploy.device_score import DeviceScore, Output, c_float, entropy, f32

_TEMPERED = """  float z[UQ_CLASSES], top = -INFINITY, total = 0.0f;
  for (int i = 0; i < UQ_CLASSES; i++) {{
    z[i] = t0[i] / {t};
    if (z[i] > top) top = z[i];
  }}
  for (int i = 0; i < UQ_CLASSES; i++) {{ probs[i] = expf(z[i] - top); total += probs[i]; }}
  for (int i = 0; i < UQ_CLASSES; i++) probs[i] = probs[i] / total;
"""


@dataclass(frozen=True, eq=False)
class _TemperedLogits(DeviceScore):
    """softmax(z / T) of the dequantized logits; subclasses say what score it gives."""

    tolerance = 1e-5
    temperature: float = 1.0

    def tempered(self, outputs: np.ndarray, layout: Sequence[Output]):
        """(z / T, its row maximum [B], the sum of exp(z / T - max) [B], probabilities)."""
        z = layout[0].dequantize(outputs) / f32(self.temperature)
        top = z.max(1)
        e = np.exp(z - top[:, None], dtype=f32)
        total = e.sum(1, dtype=f32)
        return z, top, total, (e / total[:, None]).astype(f32)

    def c_tempered(self) -> str:
        return _TEMPERED.format(t=c_float(self.temperature))


@dataclass(frozen=True, eq=False)
class MSP(_TemperedLogits):
    """1 - max softmax(z / T): MSP, and temperature scaling with its fitted T."""

    kind = "msp"

    def host(self, outputs, layout):
        *_, probs = self.tempered(outputs, layout)
        return probs, (f32(1) - probs.max(1)).astype(f32)

    def c_body(self, outputs):
        return self.c_tempered() + (
            "  float best = 0.0f;\n"
            "  for (int i = 0; i < UQ_CLASSES; i++) if (probs[i] > best) best = probs[i];\n"
            "  return 1.0f - best;"
        )


@dataclass(frozen=True, eq=False)
class Entropy(_TemperedLogits):
    """The entropy of softmax(z / T)."""

    kind = "entropy"

    def host(self, outputs, layout):
        *_, probs = self.tempered(outputs, layout)
        return probs, entropy(probs)

    def c_body(self, outputs):
        return self.c_tempered() + "  return uq_entropy(probs, UQ_CLASSES);"


@dataclass(frozen=True, eq=False)
class Energy(_TemperedLogits):
    """The free energy -T logsumexp(z / T)."""

    kind = "energy"

    def host(self, outputs, layout):
        _, top, total, probs = self.tempered(outputs, layout)
        t = f32(self.temperature)
        return probs, (-t * (top + np.log(total, dtype=f32))).astype(f32)

    def c_body(self, outputs):
        return self.c_tempered() + f"  return -{c_float(self.temperature)} * (top + logf(total));"
