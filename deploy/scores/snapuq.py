"""SNAP-UQ on the device (paper section 3 and appendix C.5): per tap pair, the int8 projector's
dot product exact in int32 on the int8 pooled predecessor tap, the int8 mean and log-variance
heads accumulated in float32, exp(-log sigma^2) looked up in a 256-entry table at the nearest
of 256 log-variance levels (as the paper's QAT rounds it), the dimension-normalized surprisal,
tap weights, the confidence blend and the logistic map."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from uqbench.deploy.device_score import DeviceScore, Output, c_float, f32, softmax, softplus


@dataclass(frozen=True, eq=False)
class SNAPUQ(DeviceScore):
    """``taps``: for each head ``h`` its predecessor tap then its tap (outputs ``2h + 1`` and
    ``2h + 2``, pooled). ``fitted``: per head ``project_q_<h>`` [r, C_in] int8,
    ``project_scale_<h>`` [r] (the weights' per-row scales), ``project_b_<h>`` [r],
    ``heads_q_<h>`` [2 d, r] int8, ``heads_scale_<h>`` [2 d], ``heads_b_<h>`` [2 d]; and
    ``tap_weights`` [heads], ``map`` [3] (logistic map b0 + b1 S + b2 m), ``lut`` [256]."""

    kind = "snapuq"
    heads: int = 1
    alpha: float = 0.5
    eps2: float = 1e-8
    logvar_min: float = -8.0
    logvar_max: float = 8.0
    step: float = 16.0 / 255

    def constants(self, outputs: Sequence[Output]) -> dict[str, np.ndarray]:
        """The projector reads the int8 pooled tap directly: its input scale joins the per-row
        weight scales (one float32 multiplier per row, on host and device)."""
        constants = dict(self.fitted)
        for h in range(self.heads):
            folded = self.fitted[f"project_scale_{h}"].astype(np.float64) * outputs[2 * h + 1].scale
            constants[f"project_scale_{h}"] = folded.astype(f32)
        return constants

    def dequantized(self, outputs):
        return [0, *(2 * h + 2 for h in range(self.heads))]  # predecessors are read as codes

    def scratch_floats(self, outputs):
        return max(self.fitted[f"project_b_{h}"].shape[0] for h in range(self.heads))  # z

    def host(self, outputs, layout):
        c = self.constants(layout)
        probs = softmax(layout[0].dequantize(outputs))
        snap = f32(0)
        for h in range(self.heads):
            previous, tap = layout[2 * h + 1], layout[2 * h + 2]
            centred = (previous.codes(outputs) - previous.zero_point).astype(np.int64)
            acc = centred @ c[f"project_q_{h}"].astype(np.int64).T  # exact, as on the device
            z = (acc.astype(f32) * c[f"project_scale_{h}"] + c[f"project_b_{h}"]).astype(f32)
            y = z @ c[f"heads_q_{h}"].astype(f32).T * c[f"heads_scale_{h}"] + c[f"heads_b_{h}"]
            target = tap.dequantize(outputs)
            d = target.shape[1]
            mu, xi = y[:, :d].astype(f32), y[:, d:].astype(f32)
            logvar = np.log(softplus(xi) + f32(self.eps2))
            logvar = np.clip(logvar, self.logvar_min, self.logvar_max).astype(f32)
            position = (logvar - f32(self.logvar_min)) / f32(self.step) + f32(0.5)
            level = np.floor(position).astype(np.int64).clip(0, len(c["lut"]) - 1)
            e = ((target - mu) ** 2 * c["lut"][level]).sum(1, dtype=f32)
            snap = snap + c["tap_weights"][h] * (e / f32(d))
        top2 = -np.sort(-probs, 1)[:, :2]
        alpha = f32(self.alpha)
        m = alpha * (1 - top2[:, 0]) + (1 - alpha) * (1 - (top2[:, 0] - top2[:, 1]))
        b0, b1, b2 = (f32(v) for v in c["map"])
        return probs, (b0 + b1 * snap + b2 * m).astype(f32)

    def c_body(self, outputs):
        eps2, low, high = c_float(self.eps2), c_float(self.logvar_min), c_float(self.logvar_max)
        step, levels = c_float(self.step), len(self.fitted["lut"])
        parts = []
        for h in range(self.heads):
            previous, target = 2 * h + 1, 2 * h + 2
            c_in, d = outputs[previous].size, outputs[target].size
            rank = self.fitted[f"project_b_{h}"].shape[0]
            parts.append(f"""  {{
    float *z = uq_work, e = 0.0f;
    for (int r = 0; r < {rank}; r++) {{  /* int8 projector: exact int32 dot product */
      int32_t acc = 0;
      for (int i = 0; i < {c_in}; i++)
        acc += uq_project_q_{h}[r * {c_in} + i] *
          (out[UQ_OUT{previous}_AT + i] - uq_zero{previous});
      z[r] = (float)acc * uq_project_scale_{h}[r] + uq_project_b_{h}[r];
    }}
    for (int j = 0; j < {d}; j++) {{  /* int8 heads, float32 accumulation */
      float mu = 0.0f, xi = 0.0f;
      for (int r = 0; r < {rank}; r++) {{
        mu += (float)uq_heads_q_{h}[j * {rank} + r] * z[r];
        xi += (float)uq_heads_q_{h}[({d} + j) * {rank} + r] * z[r];
      }}
      mu = mu * uq_heads_scale_{h}[j] + uq_heads_b_{h}[j];
      xi = xi * uq_heads_scale_{h}[{d} + j] + uq_heads_b_{h}[{d} + j];
      float soft = xi > 20.0f ? xi : log1pf(expf(xi));
      float logvar = logf(soft + {eps2});
      if (logvar < {low}) logvar = {low};
      if (logvar > {high}) logvar = {high};
      int level = (int)floorf((logvar - {low}) / {step} + 0.5f);
      level = level < 0 ? 0 : (level > {levels - 1} ? {levels - 1} : level);
      float v = t{target}[j] - mu;
      e += v * v * uq_lut[level];  /* exp(-log sigma^2), 256 entries */
    }}
    snap += uq_tap_weights[{h}] * (e / {d}.0f);
  }}""")
        alpha = c_float(self.alpha)
        return (
            "  uq_softmax(t0, probs, UQ_CLASSES);\n  float snap = 0.0f;\n"
            + "\n".join(parts)
            + "\n  float p1 = 0.0f, p2 = 0.0f;\n"
            "  for (int i = 0; i < UQ_CLASSES; i++) {\n"
            "    if (probs[i] > p1) { p2 = p1; p1 = probs[i]; }\n"
            "    else if (probs[i] > p2) p2 = probs[i];\n"
            "  }\n"
            f"  float m = {alpha} * (1.0f - p1) + (1.0f - {alpha}) * (1.0f - (p1 - p2));\n"
            "  return uq_map[0] + uq_map[1] * snap + uq_map[2] * m;"
        )
