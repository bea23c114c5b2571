"""A third-party method plugin, installed from its own distribution, is used like a built-in."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "uqbench-margin"


def _pip_install(source: Path, target: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The README's example plugin plus a broken one, pip-installed into a private folder."""
    root = tmp_path_factory.mktemp("plugins")
    shutil.copytree(EXAMPLE, root / "margin")
    broken = root / "broken"
    broken.mkdir()
    (broken / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "uqbench-broken"\nversion = "0.0.1"\n'
        '[project.entry-points."uqbench.methods"]\nbroken = "uqbench_broken:Nothing"\n'
        '[tool.setuptools]\npy-modules = ["uqbench_broken"]\n'
    )
    (broken / "uqbench_broken.py").write_text("import a_module_that_is_not_installed\n")
    target = root / "site"
    _pip_install(root / "margin", target)
    _pip_install(broken, target)
    return target


def _uqbench(site, *args, cache):
    env = os.environ | {"PYTHONPATH": str(site), "UQBENCH_CACHE": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "uqbench", *args], capture_output=True, text=True, env=env
    )


def test_list_shows_the_plugin_with_its_distribution_and_the_broken_one(site, tmp_path):
    done = _uqbench(site, "list", cache=tmp_path)
    lines = done.stdout.splitlines()
    margin = next(line for line in lines if line.strip().startswith("margin"))
    assert "uqbench-margin 0.1.0" in margin and "uqbench_margin:Margin" in margin
    broken = next(line for line in lines if line.strip().startswith("broken"))
    assert "BROKEN" in broken and "a_module_that_is_not_installed" in broken
    assert any(line.strip().startswith("msp") for line in lines)  # the others still show
    assert done.returncode == 1  # a broken plugin makes `list` fail, for scripts


def test_fit_runs_the_plugin_with_its_own_options(site, tmp_path):
    done = _uqbench(
        site,
        "fit",
        "method=margin",
        "method.temperature=2",
        "trainer.max_epochs=2",
        f"out={tmp_path}",
        "name=m",
        cache=tmp_path / "cache",
    )
    assert done.returncode == 0, done.stderr
    assert "method=margin" in done.stdout
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["method_args"]["temperature"] == 2.0
    bad = _uqbench(site, "fit", "method=margin", "method.temp=2", cache=tmp_path / "cache")
    assert bad.returncode == 2 and "method.temperature (float)" in bad.stderr
    broken = _uqbench(site, "fit", "method=broken", cache=tmp_path / "cache")
    assert broken.returncode == 2 and "failed to import" in broken.stderr
