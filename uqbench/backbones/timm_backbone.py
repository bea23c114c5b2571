"""Any timm model as a backbone (``backbone=timm/<model>``), taps by forward hooks.

The model is built with ``pretrained=False`` (no hub downloads here) for the datamodule's classes
and channels. Taps are the stage outputs timm lists in ``model.feature_info``: the last one is
``penultimate``, the middle one ``mid``, and every stage is also available as ``stage<i>``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from uqbench.backbones.base import Backbone
from uqbench.errors import UnknownNameError


class TimmBackbone(Backbone):
    def __init__(
        self, model_name: str, num_classes: int, input_shape: tuple[int, ...], **kwargs: Any
    ) -> None:
        super().__init__()
        import timm

        self.num_classes, self.input_shape = num_classes, tuple(input_shape)
        self.model = timm.create_model(
            model_name, pretrained=False, num_classes=num_classes, in_chans=input_shape[0], **kwargs
        )
        modules = dict(self.model.named_modules())
        stages = [info["module"] for info in self.model.feature_info]
        self._stage_modules = {f"stage{i}": modules[m] for i, m in enumerate(stages)}
        names = list(self._stage_modules)
        mid = names[(len(names) - 1) // 2]
        self._alias = {mid: "mid", names[-1]: "penultimate"}
        self.tap_names = tuple(self._alias.get(n, n) for n in names)
        self.num_features = self.model.num_features
        self._captured: dict[str, Tensor] = {}
        for name, module in self._stage_modules.items():
            module.register_forward_hook(self._capture(self._alias.get(name, name)))

    def _capture(self, name: str) -> Callable[..., None]:
        def hook(_module: Any, _inputs: Any, output: Tensor) -> None:
            self._captured[name] = output

        return hook

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        self._captured = {}
        final = self.model.forward_features(x)
        taps = {name: self._captured[name] for name in self.tap_names}
        taps["penultimate"] = final  # includes any final norm timm applies after the last stage
        return taps

    def pool(self, feature: Tensor) -> Tensor:
        return self.model.forward_head(feature, pre_logits=True)

    def forward_head(self, pooled: Tensor) -> Tensor:
        return self.model.get_classifier()(pooled)

    def tap_modules(self) -> dict[str, nn.Module]:
        return {self._alias.get(n, n): m for n, m in self._stage_modules.items()}


def timm_factory(model_name: str) -> Callable[..., TimmBackbone]:
    """A backbone factory for one timm model; raises if timm does not know the name."""
    import timm

    if not timm.is_model(model_name):
        close = timm.list_models(f"*{model_name}*")[:5]
        hint = f" Similar: {', '.join(close)}." if close else ""
        raise UnknownNameError(f"timm has no model {model_name!r}.{hint}")

    def factory(num_classes: int, input_shape: tuple[int, ...], **kwargs: Any) -> TimmBackbone:
        return TimmBackbone(model_name, num_classes, input_shape, **kwargs)

    factory.__name__ = f"timm/{model_name}"
    return factory
