"""Early-exit ensembles on the device: a linear exit head on each pooled tap, the exits'
softmaxes averaged with the classifier's; the entropy of the mean, or 1 - its maximum."""

from __future__ import annotations

from dataclasses import dataclass

from uqbench.deploy.device_score import DeviceScore, entropy, f32, softmax


@dataclass(frozen=True, eq=False)
class EarlyExit(DeviceScore):
    """``fitted``: ``exit_w_<i>`` [C, D_i] and ``exit_b_<i>`` [C] per tap ``i``."""

    kind = "early_exit"
    entropy: bool = True  # else 1 - max of the mean

    def host(self, outputs, layout):
        c = self.fitted
        mean = softmax(layout[0].dequantize(outputs))
        for i in range(len(self.taps)):
            z = layout[i + 1].dequantize(outputs) @ c[f"exit_w_{i}"].T + c[f"exit_b_{i}"]
            mean = mean + softmax(z.astype(f32))
        mean = (mean / f32(len(self.taps) + 1)).astype(f32)
        score = entropy(mean) if self.entropy else f32(1) - mean.max(1)
        return mean, score.astype(f32)

    def c_body(self, outputs):
        blocks = []
        for i in range(len(self.taps)):
            d = outputs[i + 1].size
            blocks.append(f"""  {{
    float z[UQ_CLASSES], e[UQ_CLASSES];
    for (int c = 0; c < UQ_CLASSES; c++) {{
      float acc = uq_exit_b_{i}[c];
      for (int j = 0; j < {d}; j++) acc += uq_exit_w_{i}[c * {d} + j] * t{i + 1}[j];
      z[c] = acc;
    }}
    uq_softmax(z, e, UQ_CLASSES);
    for (int c = 0; c < UQ_CLASSES; c++) probs[c] += e[c];
  }}""")
        final = (
            "  return uq_entropy(probs, UQ_CLASSES);"
            if self.entropy
            else "  float best = 0.0f;\n  for (int c = 0; c < UQ_CLASSES; c++) "
            "if (probs[c] > best) best = probs[c];\n  return 1.0f - best;"
        )
        mean = f"  for (int c = 0; c < UQ_CLASSES; c++) probs[c] = probs[c] / {len(blocks) + 1}.0f;"
        return "\n".join(["  uq_softmax(t0, probs, UQ_CLASSES);", *blocks, mean, final])
