"""The device-score contract over every first-party device score, and the checks failing where
a score breaks it (uqbench.testing.device_score_checks, what plugin authors run)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from uqbench.deploy.scores.logits import MSP as DeviceMSP
from uqbench.methods.msp import MSP

from uqbench import registry
from uqbench.testing import device_score_checks

# Every first-party device score, through the method (and options) that exports it.
EXPORTS = {
    "msp": ("msp", {}),
    "entropy": ("entropy", {}),
    "energy": ("energy", {}),
    "mahalanobis": ("mahalanobis", {}),
    "mahalanobis_mds": ("mahalanobis", {"variant": "mds"}),
    "snapuq": ("snapuq", {}),
    "react": ("react", {}),
    "ash": ("ash", {}),
    "ash_maps": ("ash", {"on": "maps", "mode": "s", "percentile": 65}),
    "mc_dropout_head": ("mc_dropout", {"placement": "head"}),
    "ensemble": ("deep_ensemble", {"members": 2}),
    "early_exit": ("early_exit", {}),
    "evidential": ("evidential", {}),
}
CHECKS = [
    check
    for kind, (method, options) in EXPORTS.items()
    for check in device_score_checks(registry.load("method", method), **options)
]


def test_every_registered_device_score_is_checked():
    assert set(EXPORTS) == set(registry.names("device_score"))


@pytest.mark.parametrize("check", CHECKS, ids=str)
def test_first_party_device_scores_meet_the_contract(check):
    check()


# ---------------------------------------------------------------- the checks can fail
@dataclass(frozen=True, eq=False)
class _OffByOne(DeviceMSP):
    """The C body returns 1 + the host's score."""

    def c_body(self, outputs):
        return super().c_body(outputs).replace("return 1.0f - best;", "return 2.0f - best;")


@dataclass(frozen=True, eq=False)
class _Underdeclared(DeviceMSP):
    """Declares 3 floats of scratch its body never mentions, and a 400-byte constant it never
    reads: the firmware's uq_scratch is what the generator allocates, the constant is absent."""

    def constants(self, outputs):
        import numpy as np

        return {"unused": np.zeros(100, np.float32)}


@dataclass(frozen=True, eq=False)
class _HostDrift(DeviceMSP):
    """A host reference that is not the method's score (1 - max p squared)."""

    def host(self, outputs, layout):
        probs, score = super().host(outputs, layout)
        return probs, score * score


def _method_exporting(score_cls):
    class Exports(MSP):
        def device_export(self):
            return score_cls()

    Exports.__name__ = f"MSPWith{score_cls.__name__}"
    return Exports


@pytest.mark.parametrize(
    ("score_cls", "failing", "message"),
    [
        (_OffByOne, "firmware_equals_host", "firmware's score differs from the host"),
        (_Underdeclared, "declared_scratch_and_constants", "uq_unused"),
        (_HostDrift, "host_equals_method", "differs from the method's score"),
        (_HostDrift, "registered", "is not what uqbench.device_scores registers"),
    ],
)
def test_a_broken_device_score_fails_its_check(score_cls, failing, message):
    checks = {
        str(c).rsplit(":", 1)[-1]: c for c in device_score_checks(_method_exporting(score_cls))
    }
    with pytest.raises(Exception, match=message):
        checks[failing]()


def test_agreement_is_relative_plus_absolute_for_scores_that_cancel():
    """1 - max p of a confident prediction is near 0: there a few float32 steps of 1.0 are a
    large relative error but no disagreement; a real one still fails."""
    import numpy as np

    score = DeviceMSP()
    host = np.array([1.2e-7, 0.3], np.float32)
    close = score.agreement(np.array([2.4e-7, 0.3 * (1 + 5e-6)], np.float32), host)
    assert close["score_within_tolerance"] and close["score_max_relative_difference"] > 0.1
    far = score.agreement(np.array([1.2e-7, 0.3 * (1 + 1e-4)], np.float32), host)
    assert not far["score_within_tolerance"]
    assert close["score_tolerance"] == {"relative": 1e-5, "absolute": 1e-6}
