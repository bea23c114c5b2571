"""The backbone's linear classifier rerun in float32 on the device (ReAct, ASH, last-layer MC
dropout): its constants, and the classifier followed by softmax and energy on host and in C."""

from __future__ import annotations

import numpy as np
from uqbench.deploy.device_score import f32, softmax


def linear_head(backbone) -> dict[str, np.ndarray] | None:
    """The classifier's weight and bias when the backbone's head is its ``classifier`` linear
    layer (checked on a random vector), else None."""
    import torch

    linear = getattr(backbone, "classifier", None)
    if not isinstance(linear, torch.nn.Linear):
        return None
    probe = torch.randn(2, linear.in_features)
    with torch.no_grad():
        if not torch.allclose(backbone.forward_head(probe), linear(probe)):
            return None
    return {
        "classifier_w": linear.weight.detach().float().numpy(),
        "classifier_b": linear.bias.detach().float().numpy(),
    }


def classifier_energy(
    features: np.ndarray, constants: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The classifier in float32 on ``features`` [B, D], then (softmax, energy)."""
    z = (features @ constants["classifier_w"].T + constants["classifier_b"]).astype(f32)
    top = z.max(1)
    total = np.exp(z - top[:, None], dtype=f32).sum(1, dtype=f32)
    return softmax(z), (-(top + np.log(total, dtype=f32))).astype(f32)


def classifier_energy_c(d: int, feature: str) -> str:
    """C: the classifier on ``feature`` (an expression in ``j``, the input index, of ``d``
    inputs), its softmax into ``probs`` and the energy returned (host:
    :func:`classifier_energy`)."""
    return f"""  float z[UQ_CLASSES], top2 = -INFINITY, total2 = 0.0f;
  for (int c = 0; c < UQ_CLASSES; c++) {{
    float acc = uq_classifier_b[c];
    for (int j = 0; j < {d}; j++) acc += uq_classifier_w[c * {d} + j] * {feature};
    z[c] = acc;
    if (acc > top2) top2 = acc;
  }}
  for (int c = 0; c < UQ_CLASSES; c++) {{ probs[c] = expf(z[c] - top2); total2 += probs[c]; }}
  for (int c = 0; c < UQ_CLASSES; c++) probs[c] = probs[c] / total2;
  return -(top2 + logf(total2));"""
