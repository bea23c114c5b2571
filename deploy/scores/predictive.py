"""Scores over several softmaxes: the entropy of their mean, or the mutual information (that
entropy minus their mean entropy).

:class:`EnsembleEntropy`: the outputs are the logits of several networks run one after another
(a deep ensemble's members, MC dropout's passes at the taps). :class:`DropoutHead`: last-layer
MC dropout, the classifier N times on the pooled penultimate vector under the run's N fixed
dropout masks, compiled in."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from uqbench.deploy.device_score import DeviceScore, entropy, f32, softmax


def predictive(passes: list[np.ndarray], mutual_information: bool) -> tuple[np.ndarray, np.ndarray]:
    """(mean, score) of several softmaxes [B, C], in float32 as the device computes them."""
    mean = (sum(passes) / f32(len(passes))).astype(f32)
    score = entropy(mean)
    if mutual_information:
        score = score - sum(entropy(p) for p in passes) / f32(len(passes))
    return mean, score.astype(f32)


def _predictive_c(count: int, mutual_information: bool) -> str:
    """C: ``probs`` holds the sum of ``count`` softmaxes, ``own`` the sum of their entropies."""
    tail = f"h - own / {count}.0f" if mutual_information else "h"
    return (
        f"  for (int c = 0; c < UQ_CLASSES; c++) probs[c] = probs[c] / {count}.0f;\n"
        f"  float h = uq_entropy(probs, UQ_CLASSES);\n  return {tail};"
    )


@dataclass(frozen=True, eq=False)
class EnsembleEntropy(DeviceScore):
    """Every output is one network's logits (no taps)."""

    kind = "ensemble"
    mutual_information: bool = False

    def host(self, outputs, layout):
        members = [softmax(o.dequantize(outputs)) for o in layout]
        return predictive(members, self.mutual_information)

    def c_body(self, outputs):
        # Each member's own entropy only where the score uses it: logf is no free call here.
        own = "    own += uq_entropy(e, UQ_CLASSES);\n" if self.mutual_information else ""
        members = "".join(
            f"  uq_softmax(t{k}, e, UQ_CLASSES);\n"
            f"  for (int c = 0; c < UQ_CLASSES; c++) probs[c] += e[c];\n{own}"
            for k in range(len(outputs))
        )
        return (
            "  float e[UQ_CLASSES], own = 0.0f;\n  (void)own;\n"
            "  for (int c = 0; c < UQ_CLASSES; c++) probs[c] = 0.0f;\n"
            + members
            + _predictive_c(len(outputs), self.mutual_information)
        )


@dataclass(frozen=True, eq=False)
class DropoutHead(DeviceScore):
    """``fitted``: the classifier (``classifier_w`` [C, D], ``classifier_b`` [C]) and ``masks``
    [N, D] (keep / (1 - p)); ``taps``: ``("penultimate",)``."""

    kind = "mc_dropout_head"
    mutual_information: bool = False

    def host(self, outputs, layout):
        c, h = self.fitted, layout[1].dequantize(outputs)
        passes = [
            softmax(((h * mask) @ c["classifier_w"].T + c["classifier_b"]).astype(f32))
            for mask in c["masks"]
        ]
        return predictive(passes, self.mutual_information)

    def c_body(self, outputs):
        d, n = outputs[1].size, self.fitted["masks"].shape[0]
        own = "    own += uq_entropy(e, UQ_CLASSES);\n" if self.mutual_information else ""
        return f"""  float z[UQ_CLASSES], e[UQ_CLASSES], own = 0.0f;
  (void)own;
  for (int c = 0; c < UQ_CLASSES; c++) probs[c] = 0.0f;
  for (int s = 0; s < {n}; s++) {{  /* one pass: the classifier on the masked pooled vector */
    for (int c = 0; c < UQ_CLASSES; c++) {{
      float acc = uq_classifier_b[c];
      for (int j = 0; j < {d}; j++)
        acc += uq_classifier_w[c * {d} + j] * (t1[j] * uq_masks[s * {d} + j]);
      z[c] = acc;
    }}
    uq_softmax(z, e, UQ_CLASSES);
    for (int c = 0; c < UQ_CLASSES; c++) probs[c] += e[c];
{own}  }}
""" + _predictive_c(n, self.mutual_information)
