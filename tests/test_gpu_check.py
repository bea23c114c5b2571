"""The prepared GPU check (benchmarks/gpu_check.sh) is well formed: its dry run, on the CPU,
checks every step without training and writes the summary."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
STEPS = ["setup", "gpu", "tests", "fit", "bf16", "bench", "train", "evaluate"]


def test_the_gpu_check_is_valid_bash():
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_the_gpu_checks_dry_run_checks_every_step(tmp_path):
    done = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=SCRIPT.parents[1],
        timeout=480,
    )
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert done.returncode == 0, summary
    for step in STEPS:
        assert f"| {step} | ok |" in summary, summary
    assert "dry run: every step checked for form, nothing trained" in summary
    assert not (tmp_path / "out" / "runs").exists()  # nothing trained
