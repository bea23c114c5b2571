"""The plugin's own tests: uqbench's contract checks over Margin, on two backbones."""

import pytest
from uqbench_margin import Margin

from uqbench.testing import method_checks


@pytest.mark.parametrize("check", method_checks(Margin, "digits-cnn", temperature=2.0), ids=str)
def test_margin_meets_the_method_contract(check):
    check()
