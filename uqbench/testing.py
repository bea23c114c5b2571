"""Contract checks every method must pass, in the manner of scikit-learn's estimator checks.

A plugin author runs them over a method in a test file::

    import pytest
    from uqbench.testing import method_checks

    @pytest.mark.parametrize("check", method_checks(MyMethod, "digits-cnn"), ids=str)
    def test_contract(check):
        check()

Each check builds the method on a first-party (or any registered) backbone, calibrates it on
:class:`SyntheticData` (small random tensors, no download) with the runner's own stage, and
asserts one rule of the contract (:mod:`uqbench.method`).
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import TensorDataset

from uqbench.datamodule import UQDataModule
from uqbench.dev_data import DevData
from uqbench.errors import UQBenchError
from uqbench.method import UQMethod
from uqbench.run_folder import json_safe


class SyntheticData(UQDataModule):
    """Random inputs for contract checks: learnable labels (the class is which of a few fixed
    patterns was added), a noisy shifted dev copy, one corruption and one OOD set."""

    num_classes = 4
    input_shape: tuple[int, ...] = (1, 28, 28)
    default_backbone = "digits-cnn"
    default_max_epochs = 1
    corruptions = ("noise",)
    severities = (1,)
    ood_names = ("uniform",)

    def __init__(
        self,
        input_shape: tuple[int, ...] = (1, 28, 28),
        num_classes: int = 4,
        size: int = 96,
        batch_size: int = 32,
        split_seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, split_seed=split_seed)
        self.input_shape, self.num_classes, self.size = tuple(input_shape), num_classes, size

    def _make(self, n: int, offset: int) -> TensorDataset:
        g = torch.Generator().manual_seed(self.split_seed * 1000 + offset)
        patterns = torch.randn(
            self.num_classes,
            *self.input_shape,
            generator=torch.Generator().manual_seed(self.split_seed),
        )
        y = torch.randint(self.num_classes, (n,), generator=g)
        x = patterns[y] + 0.5 * torch.randn(n, *self.input_shape, generator=g)
        return TensorDataset(x, y)

    def setup(self, stage: str | None = None) -> None:
        self.train_set = self._make(self.size, 1)
        self.dev_set = self._make(self.size // 2, 2)
        self.test_set = self._make(self.size // 2, 3)

    def _noisy(self, data: TensorDataset, offset: int) -> TensorDataset:
        x, y = data.tensors
        g = torch.Generator().manual_seed(offset)
        return TensorDataset(x + 1.5 * torch.randn(x.shape, generator=g), y)

    def dev_shift_set(self) -> TensorDataset:
        return self._noisy(self.dev_set, 4)

    def cid_set(self, corruption: str, severity: int) -> TensorDataset:
        return self._noisy(self.test_set, 5)

    def ood_set(self, name: str) -> TensorDataset:
        g = torch.Generator().manual_seed(6)
        x = 4 * torch.rand(self.size // 2, *self.input_shape, generator=g) - 2
        return TensorDataset(x, torch.full((len(x),), -1))


INPUT_SHAPES = {"ds-cnn": (1, 49, 10), "resnet8": (3, 32, 32), "digits-cnn": (1, 28, 28)}


def build(
    method_cls: type[UQMethod],
    backbone: str | Callable[..., Any],
    seed: int = 0,
    input_shape: tuple[int, ...] | None = None,
    **options: Any,
) -> tuple[UQMethod, SyntheticData]:
    """A method on a fresh backbone (a registered name, or a factory ``(num_classes,
    input_shape) -> Backbone``) and set-up synthetic data of ``input_shape``."""
    from uqbench import registry

    factory = registry.load("backbone", backbone) if isinstance(backbone, str) else backbone
    shape = input_shape or INPUT_SHAPES.get(str(backbone), (1, 28, 28))
    data = SyntheticData(input_shape=shape)
    data.setup()
    torch.manual_seed(seed)
    net = factory(num_classes=data.num_classes, input_shape=shape)
    return method_cls(backbone=net, **options), data


def calibrated(method: UQMethod, data: SyntheticData) -> UQMethod:
    from uqbench.stages.calibrate import calibrate_method

    calibrate_method(method, DevData(data, method.backbone, method.record_request()))
    return method.eval()


def _inputs(data: SyntheticData, n: int = 24) -> torch.Tensor:
    return torch.cat(
        [data.test_set.tensors[0][: n // 2], data.ood_set("uniform").tensors[0][: n - n // 2]]
    )


@dataclass
class Check:
    """One named contract check; call it to run it."""

    name: str
    run: Callable[[], None]

    def __call__(self) -> None:
        self.run()

    def __str__(self) -> str:
        return self.name


def method_checks(
    method_cls: type[UQMethod],
    backbone: str | Callable[..., Any] = "digits-cnn",
    input_shape: tuple[int, ...] | None = None,
    **options: Any,
) -> list[Check]:
    """Every contract check for ``method_cls`` built with ``options`` on ``backbone`` (a
    registered name or a factory; ``input_shape`` for a factory's inputs)."""

    def fresh(seed: int = 0) -> tuple[UQMethod, SyntheticData]:
        return build(method_cls, backbone, seed, input_shape, **options)

    def outputs() -> None:
        method, data = fresh()
        out = calibrated(method, data)(_inputs(data))
        n, c = len(_inputs(data)), data.num_classes
        assert out.logits.shape == (n, c), f"logits {tuple(out.logits.shape)} != {(n, c)}"
        assert out.probs.shape == (n, c) and out.score.shape == (n,)
        torch.testing.assert_close(
            out.probs.sum(-1).double(), torch.ones(n, dtype=torch.float64), atol=1e-5, rtol=0
        )
        assert torch.isfinite(out.score).all(), "scores must be finite"

    def orientation() -> None:
        # Trained briefly on learnable synthetic data (class = which pattern was added to the
        # noise), the score must rank the errors above the correct predictions on the test
        # split and a noisier copy of it, pooled (the ID ok | ID err task): higher = more
        # uncertain.
        from uqbench.metrics import auroc

        method, data = fresh()
        _train_briefly(method, data)
        calibrated(method, data)
        x_test, y = data.test_set.tensors
        g = torch.Generator().manual_seed(8)
        for scale in (1.5, 3.0, 6.0):  # noisier until there are errors to rank
            x = torch.cat([x_test, x_test + scale * torch.randn(x_test.shape, generator=g)])
            with torch.no_grad():
                out = method(x)
            errors = out.probs.argmax(-1) != torch.cat([y, y])
            if errors.any() and not errors.all():
                break
        value = auroc(out.score, errors)
        assert value > 0.5, f"AUROC of the score for errors on ID + CID is {value:.3f}, not > 0.5"

    def batch_invariance() -> None:
        method, data = fresh()
        calibrated(method, data)
        x = _inputs(data)
        with torch.no_grad():
            whole = method(x).score
            parts = torch.cat([method(x[i : i + 5]).score for i in range(0, len(x), 5)])
        torch.testing.assert_close(parts, whole, rtol=1e-4, atol=1e-5)

    def repeatable_and_round_trip() -> None:
        method, data = fresh()
        calibrated(method, data)
        x = _inputs(data)
        with torch.no_grad():
            first, second = method(x), method(x)
        torch.testing.assert_close(first.score, second.score)
        buffer = io.BytesIO()
        torch.save({"state_dict": method.state_dict()}, buffer)
        buffer.seek(0)
        state = torch.load(buffer, weights_only=True)["state_dict"]
        other, _ = fresh(seed=1)  # other initial weights
        other.load_state_dict(state)
        with torch.no_grad():
            again = other.eval()(x)
        torch.testing.assert_close(again.score, first.score)
        torch.testing.assert_close(again.probs, first.probs)

    def fit_twice() -> None:
        method, data = fresh()
        calibrated(method, data)
        once = copy.deepcopy(method.state_dict())
        calibrated(method, data)
        for key, value in method.state_dict().items():
            torch.testing.assert_close(
                value, once[key], equal_nan=True, msg=f"{key} changed on a second fit"
            )

    def unfitted_refused() -> None:
        method, data = fresh()
        if not method.requires_calibration():
            return
        try:
            method.eval()(_inputs(data))
        except UQBenchError:
            return
        raise AssertionError("scoring before calibration returned numbers instead of an error")

    def serializable() -> None:
        method, data = fresh()
        calibrated(method, data)
        json.dumps(json_safe(method.tuned()), allow_nan=False)
        json.dumps(json_safe(method.cost_facts().to_dict()), allow_nan=False)

    checks = [
        outputs,
        orientation,
        batch_invariance,
        repeatable_and_round_trip,
        fit_twice,
        unfitted_refused,
        serializable,
    ]
    where = backbone if isinstance(backbone, str) else getattr(backbone, "__name__", "backbone")
    return [Check(f"{method_cls.__name__}[{where}]:{c.__name__}", c) for c in checks]


def _train_briefly(method: UQMethod, data: SyntheticData, steps: int = 60) -> None:
    """A few optimizer steps of the method's own objective (or of cross-entropy on the backbone
    when it does not train), enough for the synthetic patterns to be learned."""
    from torch.utils.data import DataLoader

    module: UQMethod = method
    if not method.needs_for({}).trains:
        from uqbench.method import BaseClassifier

        module = BaseClassifier(method.backbone)
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=3e-3)
    module.train()
    loader = DataLoader(
        data.train_set, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    step = 0
    while step < steps:
        for batch in loader:
            with warnings.catch_warnings():  # self.log outside a Trainer: nothing to log to
                warnings.simplefilter("ignore")
                loss = module.training_step(batch, step)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
    module.eval()


HOST_TOLERANCE = 1e-3  # relative: the host reference against the method's float32 score
RANK_TOLERANCE = 0.9  # Spearman, for methods that score from their own forward pass


def device_score_checks(
    method_cls: type[UQMethod],
    backbone: str | Callable[..., Any] = "digits-cnn",
    board: str = "small-mcu",
    input_shape: tuple[int, ...] | None = None,
    **options: Any,
) -> list[Check]:
    """Every device-score check for ``method_cls`` built with ``options`` on ``backbone``, its
    firmware built for ``board`` (a registered name; the ARM toolchain and QEMU are needed):

    - ``registered``: the score's class is the one registered under its ``kind`` in the
      ``uqbench.device_scores`` entry-point group;
    - ``host_equals_method``: the host reference equals the method's own float score on the
      int8 outputs (dequantized, the pooled taps as 1 x 1 maps) within ``HOST_TOLERANCE``
      relative, for methods that score a recorded pass (``PostHocMethod``); for methods that
      score from their own forward pass, the host reference on int8 inputs ranks examples as
      the float method does (Spearman at least ``RANK_TOLERANCE``);
    - ``firmware_equals_host``: the C source built for ``board`` and run under QEMU gives the
      host reference's int8 outputs bit for bit and its scores within the score's
      ``tolerance`` (relative) plus ``abs_tolerance``;
    - ``declared_scratch_and_constants``: ``uq_scratch`` and each ``uq_<constant>`` in the
      firmware have the declared sizes;
    - ``serializable``: ``to_dict()`` survives a JSON round trip and names the constants'
      shapes.
    """
    import functools
    import tempfile
    from pathlib import Path

    import numpy as np

    from uqbench.deploy import pipeline

    @functools.cache
    def prepared() -> tuple[UQMethod, pipeline.DeviceModel, torch.Tensor, np.ndarray]:
        method, data = build(method_cls, backbone, 0, input_shape, **options)
        _train_briefly(method, data)
        calibrated(method, data)
        export, reason = pipeline.device_form(method)
        assert export is not None, f"{method_cls.__name__} has no device form: {reason}"
        model = pipeline.convert(method, export, [data.dev_set.tensors[0]])
        x = _inputs(data)
        return method, model, x, model.outputs(model.quantize(x))

    scratch: list[Any] = []

    @functools.cache
    def firmware() -> tuple[Any, Path]:
        from uqbench import registry
        from uqbench.deploy.firmware import build as build_firmware
        from uqbench.deploy.firmware import emulate, harness

        _, model, x, outputs = prepared()
        sample = model.quantize(x[:4])
        rows = sample.reshape(len(sample), -1)
        files = {**pipeline.sources(model).files, "main.c": harness(rows, model.layout[0].size)}
        target = registry.load("board", board)()
        # Kept while the checks use the ELF; removed when they are gone.
        scratch.append(tempfile.TemporaryDirectory(prefix="uqbench-device-score-"))
        built = build_firmware(files, target, Path(scratch[-1].name))
        assert built.elf is not None, f"the firmware does not fit {board}: {built.oom}"
        return emulate(built.elf, target, len(sample)), built.elf

    def registered() -> None:
        from uqbench import registry

        score = prepared()[1].score
        found = registry.load("device_score", score.kind)
        assert found is type(score), (
            f"{type(score).__name__} is not what uqbench.device_scores registers as "
            f"{score.kind!r} ({found.__name__}): add it to your package's entry points"
        )

    def host_equals_method() -> None:
        method, model, x, outputs = prepared()
        _, host = model.host_scores(outputs)
        if method.needs.scores_from == "record":
            with torch.no_grad():
                float_score = method.output(_device_record(method, model, outputs)).score
            float_score = float_score.double().numpy()
            worst = np.abs(host - float_score) / np.maximum(np.abs(float_score), 1e-6)
            assert worst.max() <= HOST_TOLERANCE, (
                f"the host reference differs from the method's score on the same int8 outputs "
                f"by {worst.max():.2e} relative (at most {HOST_TOLERANCE:g})"
            )
            return
        from scipy.stats import spearmanr

        with torch.no_grad():
            float_score = method(x).score.double().numpy()
        rho = spearmanr(host, float_score).statistic
        assert rho >= RANK_TOLERANCE, (
            f"the host reference on int8 inputs ranks examples unlike the float method "
            f"(Spearman {rho:.3f} < {RANK_TOLERANCE})"
        )

    def firmware_equals_host() -> None:
        _, model, _, outputs = prepared()
        emulation, _ = firmware()
        expected = outputs[: len(emulation.outputs)]
        assert np.array_equal(emulation.outputs, expected), pipeline.first_difference(
            "host int8 reference", "firmware", expected, emulation.outputs
        )
        _, host = model.host_scores(expected)
        agreement = model.score.agreement(emulation.scores, host)
        assert agreement["score_within_tolerance"], (
            f"the firmware's score differs from the host reference by "
            f"{agreement['score_max_absolute_difference']:.2e} "
            f"({agreement['score_max_relative_difference']:.2e} relative; the score's tolerance: "
            f"{model.score.tolerance:g} relative + {model.score.abs_tolerance:g})"
        )

    def declared_scratch_and_constants() -> None:
        _, model, _, _ = prepared()
        pipeline.check_score_symbols(firmware()[1], model.score, model.layout)

    def serializable() -> None:
        _, model, _, _ = prepared()
        doc = model.export.to_dict()
        assert json.loads(json.dumps(doc, allow_nan=False)) == doc
        score_doc = model.score.to_dict()
        shapes = {n: list(np.shape(v)) for n, v in model.score.fitted.items()}
        assert score_doc["kind"] == model.score.kind and score_doc["constants"] == shapes

    checks = [
        registered,
        host_equals_method,
        firmware_equals_host,
        declared_scratch_and_constants,
        serializable,
    ]
    where = backbone if isinstance(backbone, str) else getattr(backbone, "__name__", "backbone")
    return [Check(f"{method_cls.__name__}[{where}]:device:{c.__name__}", c) for c in checks]


def _device_record(method: UQMethod, model: Any, outputs: Any) -> Any:
    """The :class:`BackboneOutput` the device's int8 outputs describe: the dequantized logits,
    each pooled tap as a 1 x 1 map, a whole map back in NCHW; the pooled vector is the
    ``penultimate`` tap's (NaN where the score does not export it, so a method that reads it
    fails the check instead of passing on numbers the device does not have)."""
    from uqbench.backbones.base import BackboneOutput
    from uqbench.deploy.device_score import MAP

    values = {o.name: torch.from_numpy(o.dequantize(outputs)) for o in model.layout}
    taps = {}
    for o in model.layout[1:]:
        if o.name.endswith(MAP):
            h, w, c = o.shape
            taps[o.name.removesuffix(MAP)] = values[o.name].view(-1, h, w, c).permute(0, 3, 1, 2)
        else:
            taps[o.name] = values[o.name][:, :, None, None]
    if "penultimate" in taps:
        pooled = taps["penultimate"].flatten(2).mean(-1)
    else:
        pooled = torch.full((len(outputs), method.backbone.num_features), float("nan"))
    return BackboneOutput(values["logits"], taps, pooled)
