"""Mahalanobis distances on the device, in float32 on pooled taps.

:class:`Mahalanobis` (the paper variant): per tap, class means and diagonal variances; the
tap-weighted mean squared standardized distance, minimum over classes. :class:`MahalanobisMDS`
(MDS): the pooled penultimate vector whitened by ``W`` (``W^T W`` the shared precision), then
the nearest whitened class mean: ``d^2 + C d`` MACs instead of ``C (d^2 + d)``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from uqbench.deploy.device_score import DeviceScore, c_float, f32, softmax


@dataclass(frozen=True, eq=False)
class Mahalanobis(DeviceScore):
    """``fitted``: ``means_<i>`` [C, D_i], ``variance_<i>`` [D_i] per tap ``i`` and
    ``tap_weights`` [taps]; ``shrinkage`` is added to every variance."""

    kind = "mahalanobis"
    shrinkage: float = 0.0

    def host(self, outputs, layout):
        c = self.fitted
        total = np.zeros((len(outputs), c["means_0"].shape[0]), dtype=f32)
        for i in range(len(self.taps)):
            feature = layout[i + 1].dequantize(outputs)
            diff = feature[:, None, :] - c[f"means_{i}"][None]
            distance = diff * diff / (c[f"variance_{i}"] + f32(self.shrinkage))
            total += c["tap_weights"][i] * distance.mean(-1, dtype=f32)
        return softmax(layout[0].dequantize(outputs)), total.min(1).astype(f32)

    def c_body(self, outputs):
        shrink = c_float(self.shrinkage)
        terms = []
        for i in range(len(self.taps)):
            d = outputs[i + 1].size
            terms.append(
                f"    {{ float acc = 0.0f;\n"
                f"      for (int j = 0; j < {d}; j++) {{ float diff = t{i + 1}[j] - "
                f"uq_means_{i}[c * {d} + j]; acc += diff * diff / (uq_variance_{i}[j] + "
                f"{shrink}); }}\n"
                f"      total_c += uq_tap_weights[{i}] * (acc / {d}.0f); }}"
            )
        return (
            "  uq_softmax(t0, probs, UQ_CLASSES);\n"
            "  float best = INFINITY;\n  for (int c = 0; c < UQ_CLASSES; c++) {\n"
            "    float total_c = 0.0f;\n" + "\n".join(terms) + "\n"
            "    if (total_c < best) best = total_c;\n  }\n  return best;"
        )


@dataclass(frozen=True, eq=False)
class MahalanobisMDS(DeviceScore):
    """``fitted``: ``whiten`` [D, D] and ``whitened_means`` [C, D]; ``taps``:
    ``("penultimate",)``."""

    kind = "mahalanobis_mds"

    def scratch_floats(self, outputs):
        return outputs[1].size  # the whitened vector

    def host(self, outputs, layout):
        whitened = (layout[1].dequantize(outputs) @ self.fitted["whiten"].T).astype(f32)
        diff = whitened[:, None, :] - self.fitted["whitened_means"][None]
        score = (diff * diff).sum(-1, dtype=f32).min(1).astype(f32)
        return softmax(layout[0].dequantize(outputs)), score

    def c_body(self, outputs):
        d = outputs[1].size
        return f"""  uq_softmax(t0, probs, UQ_CLASSES);
  float *g = uq_work, best = INFINITY;
  for (int i = 0; i < {d}; i++) {{  /* whitened features: W f */
    float acc = 0.0f;
    for (int j = 0; j < {d}; j++) acc += uq_whiten[i * {d} + j] * t1[j];
    g[i] = acc;
  }}
  for (int c = 0; c < UQ_CLASSES; c++) {{
    float acc = 0.0f;
    for (int i = 0; i < {d}; i++) {{ float diff = g[i] - uq_whitened_means[c * {d} + i];
      acc += diff * diff; }}
    if (acc < best) best = acc;
  }}
  return best;"""
