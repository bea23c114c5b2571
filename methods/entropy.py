"""``entropy``: predictive entropy ``-sum_c p_c log p_c`` of the base classifier's softmax, in
nats, in [0, log C]; higher = more uncertain. Post-hoc, no parameters."""

from __future__ import annotations

import torch
from torch import Tensor

from uqbench.backbones.base import BackboneOutput
from uqbench.method import PostHocMethod


def entropy(probs: Tensor) -> Tensor:
    """Shannon entropy [B] of probability rows [B, C], with 0 log 0 = 0."""
    return -(probs * torch.log(probs.clamp_min(1e-30))).sum(-1)


class Entropy(PostHocMethod):
    def score(self, out: BackboneOutput) -> Tensor:
        return entropy(out.logits.softmax(-1))

    def device_export(self):
        from uqbench.deploy.scores.logits import Entropy as DeviceEntropy

        return DeviceEntropy()
