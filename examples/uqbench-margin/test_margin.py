"""The plugin's own tests: uqbench's method and device-score contract checks over Margin."""

import pytest
from uqbench_margin import Margin

from uqbench.testing import device_score_checks, method_checks


@pytest.mark.parametrize("check", method_checks(Margin, "digits-cnn", temperature=2.0), ids=str)
def test_margin_meets_the_method_contract(check):
    check()


@pytest.mark.parametrize(
    "check", device_score_checks(Margin, "digits-cnn", "small-mcu", temperature=2.0), ids=str
)
def test_margin_meets_the_device_score_contract(check):
    check()
