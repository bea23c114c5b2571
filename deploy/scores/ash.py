"""ASH on the device: the top k activations kept (ties to the lower index), shaped by mode
(p: as they are, b: sum / k, s: scaled by exp(sum / kept sum)), then the classifier and energy.

:class:`ASH` shapes the pooled penultimate vector; :class:`ASHMaps` the whole int8 penultimate
map, which the graph outputs unpooled: the k largest codes are found with a 256-bin count and
read in place (no float copy of the map), ties to the lower index in NCHW order (the float
method's), then the shaped map is pooled."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from uqbench.deploy.device_score import DeviceScore, f32
from uqbench.deploy.scores.classifier import classifier_energy, classifier_energy_c


def shape(h: np.ndarray, k: int, mode: str) -> np.ndarray:
    """ASH on each row of ``h`` [B, n] in float32, as the device does it."""
    order = np.argsort(-h, axis=1, kind="stable")[:, :k]
    kept = np.zeros_like(h, dtype=bool)
    np.put_along_axis(kept, order, True, axis=1)
    shaped = np.where(kept, h, f32(0)).astype(f32)
    if mode == "b":
        return np.where(kept, (h.sum(1, dtype=f32) / f32(k))[:, None], f32(0)).astype(f32)
    if mode == "s":
        total, kept_sum = h.sum(1, dtype=f32), shaped.sum(1, dtype=f32)
        factor = np.exp(total / np.maximum(kept_sum, f32(1e-12)), dtype=f32)
        return (shaped * factor[:, None]).astype(f32)
    return shaped


@dataclass(frozen=True, eq=False)
class ASH(DeviceScore):
    """``fitted``: the classifier; ``taps``: ``("penultimate",)``; ``k`` kept of the D."""

    kind = "ash"
    k: int = 1
    mode: str = "p"

    def scratch_floats(self, outputs):
        return outputs[1].size  # the shaped vector

    def host(self, outputs, layout):
        return classifier_energy(
            shape(layout[1].dequantize(outputs), self.k, self.mode), self.fitted
        )

    def c_body(self, outputs):
        d, k = outputs[1].size, self.k
        value = {"p": "t1[j]", "b": f"sum / (float){k}", "s": "t1[j] * factor"}[self.mode]
        return f"""  float sum = 0.0f, kept_sum = 0.0f, *shaped = uq_work;
  for (int j = 0; j < {d}; j++) sum += t1[j];
  for (int j = 0; j < {d}; j++) {{  /* kept when fewer than k rank above it (ties: lower index) */
    int above = 0;
    for (int i = 0; i < {d}; i++) above += t1[i] > t1[j] || (t1[i] == t1[j] && i < j);
    shaped[j] = above < {k} ? 1.0f : 0.0f;
    if (above < {k}) kept_sum += t1[j];
  }}
  float factor = expf(sum / (kept_sum > 1e-12f ? kept_sum : 1e-12f));
  (void)factor;
  for (int j = 0; j < {d}; j++) shaped[j] = shaped[j] > 0.0f ? {value} : 0.0f;
""" + classifier_energy_c(d, "shaped[j]")


@dataclass(frozen=True, eq=False)
class ASHMaps(DeviceScore):
    """``fitted``: the classifier; ``taps``: ``("penultimate:map",)``; ``k`` kept of the
    H * W * C map values; ``channels``: C."""

    kind = "ash_maps"
    k: int = 1
    mode: str = "p"
    channels: int = 1

    def scratch_floats(self, outputs):
        return self.channels + 256  # the pooled shaped map, then a 256-bin count (int32)

    def host(self, outputs, layout):
        h = layout[1].dequantize(outputs)  # NHWC
        planes = h.reshape(len(h), -1, self.channels).transpose(0, 2, 1)  # [B, C, H * W]
        shaped = shape(planes.reshape(len(h), -1), self.k, self.mode).reshape(planes.shape)
        pooled = (shaped.sum(2, dtype=f32) / f32(planes.shape[2])).astype(f32)
        return classifier_energy(pooled, self.fitted)

    def c_body(self, outputs):
        n, k, channels = outputs[1].size, self.k, self.channels
        value = {"p": "x", "b": f"sum / (float){k}", "s": "x * factor"}[self.mode]
        return f"""  const int8_t *map = out + UQ_OUT1_AT; /* NHWC: {n // channels} x {channels} */
  int32_t *count = (int32_t *)(uq_work + {channels});  /* 256 bins, int32 as wide as float */
  for (int i = 0; i < 256; i++) count[i] = 0;
  float sum = 0.0f;
  for (int j = 0; j < {n}; j++) {{
    count[map[j] + 128]++;
    sum += (float)(map[j] - uq_zero1) * uq_scale1;
  }}
  /* the threshold code v: fewer than k codes above it, at least k at or above it; of the
   * codes equal to v the first `ties` in NCHW order (the float method's) are kept */
  int v = 255, above = 0;
  while (above + count[v] < {k}) above += count[v--];
  int ties = {k} - above, seen = 0;
  float kept_sum = 0.0f;
  for (int c = 0; c < {channels}; c++)
    for (int j = c; j < {n}; j += {channels}) {{
      int code = map[j] + 128;
      if (code > v || (code == v && seen++ < ties))
        kept_sum += (float)(map[j] - uq_zero1) * uq_scale1;
    }}
  float factor = expf(sum / (kept_sum > 1e-12f ? kept_sum : 1e-12f));
  (void)factor;
  float *pooled = uq_work;
  seen = 0;
  for (int c = 0; c < {channels}; c++) {{
    pooled[c] = 0.0f;
    for (int j = c; j < {n}; j += {channels}) {{
      int code = map[j] + 128;
      if (code > v || (code == v && seen++ < ties)) {{
        float x = (float)(map[j] - uq_zero1) * uq_scale1;
        pooled[c] += {value};
      }}
    }}
    pooled[c] = pooled[c] / {n // channels}.0f;
  }}
""" + classifier_energy_c(channels, "pooled[j]")
