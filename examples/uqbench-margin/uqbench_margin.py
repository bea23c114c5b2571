"""A third-party uqbench method: one minus the softmax margin (top-1 minus top-2 probability)."""

from torch import Tensor

from uqbench import BackboneOutput, PostHocMethod


class Margin(PostHocMethod):
    """Scores 1 - (p_(1) - p_(2)) of softmax(z / temperature); higher = more uncertain."""

    def __init__(self, backbone, temperature: float = 1.0, **kwargs) -> None:
        super().__init__(backbone, **kwargs)
        self.temperature = temperature

    def score(self, out: BackboneOutput) -> Tensor:
        top2 = (out.logits / self.temperature).softmax(-1).topk(2, dim=-1).values
        return 1.0 - (top2[:, 0] - top2[:, 1])
