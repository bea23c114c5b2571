"""Every registered method passes the contract checks of uqbench.testing on every first-party
backbone (digits-cnn in the fast suite, ResNet-8 and DS-CNN in the slow one)."""

import pytest

from uqbench import registry
from uqbench.testing import method_checks

FAST_OPTIONS = {"mc_dropout": {"samples": 3}, "deep_ensemble": {"members": 2}}


def _checks(backbone):
    return [
        check
        for name in registry.names("method")
        for check in method_checks(
            registry.load("method", name), backbone, **FAST_OPTIONS.get(name, {})
        )
    ]


@pytest.mark.parametrize("check", _checks("digits-cnn"), ids=str)
def test_contract_on_digits_cnn(check):
    check()


@pytest.mark.slow
@pytest.mark.parametrize("check", _checks("resnet8") + _checks("ds-cnn"), ids=str)
def test_contract_on_mlperf_tiny_backbones(check):
    check()
